"""Shard planning: member names, which utterance goes to which shard, and the hash that identifies a shard's plan.

Member names are given in input order; then the utterances are shuffled with a seeded generator
(:func:`shuffle_utterances`; a sorted ``wav.scp`` would otherwise give shards of one speaker each, and NeMo's
tarred loader shuffles only within a small buffer) -- or keep input order with ``shuffle=False``. Utterance
``k`` of that list goes to shard ``k // shard_size``. The plan depends only on the input text files and the
seed, so every process of a ``shard_idx/shard_count`` split, and any ``num_workers``, agree on it. Audio that turns out to be missing or unreadable is left out of its shard, so a
shard can hold fewer than ``shard_size`` members, never members of another shard.

Example::

    >>> from nest_ext.data.packing.inputs import Utterance
    >>> utts = [Utterance(utt_id=i, source="x", origin="scp") for i in ("a.1", "a/1", "b")]
    >>> assign_member_names(utts)
    >>> [u.member for u in utts], [[u.member for u in s] for s in plan_shards(utts, 2)]
    (['a_1', 'a_1_1', 'b'], [['a_1', 'a_1_1'], ['b']])
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import re
from typing import Dict, List, Sequence

from nest_ext.data.packing.inputs import PackingError, Utterance

# WebDataset splits a member name at its first dot and NeMo maps members by basename, so ids used as
# member names may not contain dots, slashes or whitespace.
_UNSAFE = re.compile(r"[^\w\-+=,@~]", re.UNICODE)


def assign_member_names(utts: Sequence[Utterance]) -> None:
    """Give each utterance a unique, loader-safe member name, deterministic in input order: characters
    outside ``[\\w-+=,@~]`` become ``_``, repeats get ``_1``, ``_2``..."""
    used = set()
    for u in utts:
        base = _UNSAFE.sub("_", u.utt_id) or "utt"
        name, k = base, 1
        while name in used:
            name = f"{base}_{k}"
            k += 1
        used.add(name)
        u.member = name


def shuffle_utterances(utts: Sequence[Utterance], seed: int) -> List[Utterance]:
    """The utterances in an order drawn from ``seed`` alone (the same on every machine and process).

    >>> from nest_ext.data.packing.inputs import Utterance
    >>> [u.utt_id for u in shuffle_utterances([Utterance(utt_id=str(i), source="x", origin="") for i in range(5)], 0)]
    ['2', '1', '0', '4', '3']
    """
    out = list(utts)
    random.Random(seed).shuffle(out)
    return out


def plan_shards(utts: Sequence[Utterance], shard_size: int) -> List[List[Utterance]]:
    """Split in input order into consecutive groups of ``shard_size`` (the last may be shorter)."""
    if shard_size < 1:
        raise PackingError(f"shard_size must be >= 1 (got {shard_size})")
    return [list(utts[i : i + shard_size]) for i in range(0, len(utts), shard_size)]


def plan_hash(fmt: str, shard_id: int, shard: Sequence[Utterance], options: Dict) -> str:
    """What shard ``shard_id`` is made of: its format, its entries and the options that change its bytes.
    A finished shard's marker carries it; ``--skip-existing`` keeps a shard only if it is the same."""
    h = hashlib.sha256()
    h.update(json.dumps({"format": fmt, "shard_id": shard_id, "options": options}, sort_keys=True).encode())
    for u in shard:
        h.update(json.dumps(dataclasses.asdict(u), sort_keys=True, ensure_ascii=False).encode("utf-8"))
    return h.hexdigest()
