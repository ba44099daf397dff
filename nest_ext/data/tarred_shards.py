"""Reading tar shards as NeMo's tarred datasets do: brace/``_OP_.._CL_`` patterns, whole shards per DDP rank
(``shard_strategy``), whole shards per DataLoader worker, a shuffled shard order and a shuffle buffer.

The pieces are NeMo's where NeMo has them: ``expand_sharded_filepaths`` (patterns, ``scatter``/``replicate``)
and WebDataset's ``tarfile_to_samples`` (NeMo's patched ``nemo.utils.webdataset``), which groups the members
``KEY.mixture.wav``, ``KEY.s1.wav``... of one example into one sample ``{"__key__": KEY, "mixture.wav": bytes,
...}``. What is ours: the randomness is drawn from a ``numpy`` generator the caller seeds per (seed, epoch,
rank, worker), so epochs differ and runs repeat; and :func:`split_for_worker` falls back to splitting samples
when a rank has fewer shards than workers.

Example::

    >>> import io, os, tarfile, tempfile, numpy as np
    >>> d = tempfile.mkdtemp()
    >>> with tarfile.open(os.path.join(d, "audio_0.tar"), "w") as t:
    ...     for name in ("a.mixture.wav", "a.s1.wav", "b.mixture.wav"):
    ...         info = tarfile.TarInfo(name); info.size = 1; t.addfile(info, io.BytesIO(b"x"))
    >>> urls = expand_shards(os.path.join(d, "audio__OP_0..0_CL_.tar"))
    >>> [sorted(k for k in s if not k.startswith("__")) for s in iter_tar_samples(urls, np.random.default_rng(0))]
    [['mixture.wav', 's1.wav'], ['mixture.wav']]
"""
from __future__ import annotations

import json
import os
import re
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from nest_ext.data.json_lines import json_lines

__all__ = [
    "expand_shards",
    "iter_tar_samples",
    "load_tarred_manifest",
    "rank_shards",
    "select_shar_shards",
    "shar_fields",
    "shard_id_of",
    "split_for_worker",
    "worker_info",
]

SHARD_STRATEGIES = ("scatter", "replicate")


def expand_shards(pattern: Union[str, Sequence[str]]) -> List[str]:
    """Every shard a pattern names (NeMo's brace and ``_OP_0..N_CL_`` syntax), in order."""
    from nemo.collections.asr.data.audio_to_text import expand_sharded_filepaths

    return list(expand_sharded_filepaths(pattern, shard_strategy="replicate", world_size=1, global_rank=0))


def rank_shards(urls: Sequence[str], shard_strategy: str, global_rank: int, world_size: int) -> List[str]:
    """This rank's shards, as NeMo's tarred datasets choose them: ``scatter`` gives each rank a disjoint block of
    ``len(urls) // world_size`` shards (the remainder is unused, with NeMo's warning); ``replicate`` all."""
    from nemo.collections.asr.data.audio_to_text import expand_sharded_filepaths

    if shard_strategy not in SHARD_STRATEGIES:
        raise ValueError(f"shard_strategy must be one of {SHARD_STRATEGIES}, got {shard_strategy!r}")
    if shard_strategy == "scatter" and world_size > len(urls):
        raise ValueError(f"{len(urls)} shard(s) cannot be scattered over {world_size} ranks: pack with a smaller "
                         f"shard size (at least one shard per rank) or use shard_strategy 'replicate'")
    return list(expand_sharded_filepaths(list(urls), shard_strategy, world_size, global_rank))


def worker_info() -> Tuple[int, int]:
    """``(worker id, number of workers)`` of the current DataLoader worker; ``(0, 1)`` outside one."""
    info = torch.utils.data.get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


def split_for_worker(urls: Sequence[str], worker: int, num_workers: int) -> Tuple[List[str], Optional[Tuple[int, int]]]:
    """This worker's shards, and None; or, with fewer shards than workers, all shards and ``(worker,
    num_workers)`` telling the reader to keep every ``num_workers``-th sample (no worker idles, none repeats)."""
    if num_workers <= 1:
        return list(urls), None
    if len(urls) >= num_workers:
        return list(urls)[worker::num_workers], None
    return list(urls), (worker, num_workers)


def iter_tar_samples(
    urls: Sequence[str],
    rng: np.random.Generator,
    shuffle_n: int = 0,
    sample_split: Optional[Tuple[int, int]] = None,
    shuffle_shards: bool = True,
) -> Iterator[Dict]:
    """One pass over the samples of ``urls``: shard order shuffled by ``rng``, then a shuffle buffer of
    ``shuffle_n`` samples (0: none). A shard that cannot be read raises (a missing shard is a setup error)."""
    from nemo.utils import webdataset as wds

    order = list(urls)
    if shuffle_shards:
        order = [order[i] for i in rng.permutation(len(order))]
    samples: Iterable[Dict] = wds.tarfile_to_samples()(iter({"url": u} for u in order))
    if sample_split is not None:
        worker, num_workers = sample_split
        samples = (s for i, s in enumerate(samples) if i % num_workers == worker)
    if shuffle_n <= 1:
        yield from samples
        return
    buffer: List[Dict] = []
    for sample in samples:
        if len(buffer) < shuffle_n:
            buffer.append(sample)
            continue
        k = int(rng.integers(len(buffer)))
        yield buffer[k]
        buffer[k] = sample
    while buffer:
        yield buffer.pop(int(rng.integers(len(buffer))))


_SHARD_ID = re.compile(r"_(\d+)\.tar$")


def shard_id_of(url: str, position: int) -> int:
    """The shard number in ``audio_N.tar`` (pack_shards' names), else the shard's position in the pattern."""
    m = _SHARD_ID.search(os.path.basename(url))
    return int(m.group(1)) if m else position


def load_tarred_manifest(path: Union[str, Sequence[str]], key_field: str) -> Tuple[Dict[str, Dict], List[str]]:
    """The entries of tarred manifest(s) by member key (the member name ``key_field`` names, up to its first
    dot), and the problems (``manifest:line: reason``) of lines that cannot be used."""
    paths = [p.strip() for p in path.split(",")] if isinstance(path, str) else [str(p) for p in path]
    entries, problems = {}, []
    for manifest in paths:
        if not os.path.isfile(manifest):
            raise FileNotFoundError(f"tarred manifest {manifest} does not exist")
        for where, entry, error in json_lines(manifest):
            try:
                if error is not None:
                    raise ValueError(error)
                member = entry[key_field]
                if isinstance(member, list):
                    member = member[0]
                key = os.path.basename(member).split(".")[0]
            except (ValueError, KeyError, TypeError, IndexError) as e:
                problems.append(f"{where}: no usable '{key_field}' ({type(e).__name__}: {e})")
                continue
            entry["_where"] = where
            entries[key] = entry
    return entries, problems


def shar_fields(path: str) -> Dict[str, List[str]]:
    """The Shar files of a folder, by field (``cuts``, ``recording``, ``target_recording``...), in shard order:
    from pack_shards' ``shar_index.json`` when ``path`` (or its parent) has one, else lhotse's naming
    ``FIELD.NNNNNN.EXT`` in ``path`` (or its ``shar`` subfolder)."""
    for base in (path, os.path.dirname(os.path.normpath(path))):
        index = os.path.join(base, "shar_index.json")
        if os.path.isfile(index):
            with open(index, encoding="utf-8") as f:
                fields = json.load(f)
            here = os.path.join(base, "shar")
            # the index names absolute paths; a moved folder still holds the same file names
            return {k: [p if os.path.exists(p) else os.path.join(here, os.path.basename(p)) for p in v]
                    for k, v in fields.items()}
    folder = os.path.join(path, "shar") if os.path.isdir(os.path.join(path, "shar")) else path
    fields: Dict[str, List[str]] = {}
    for name in sorted(os.listdir(folder)):
        m = re.fullmatch(r"([A-Za-z_]\w*)\.(\d+)\.[\w.]+", name)
        if m:
            fields.setdefault(m.group(1), []).append(os.path.join(folder, name))
    if not fields.get("cuts"):
        raise FileNotFoundError(f"{path}: no lhotse Shar shards (cuts.NNNNNN.jsonl.gz) found")
    return fields


def select_shar_shards(fields: Dict[str, List[str]], keep: Sequence[int]) -> Dict[str, List[str]]:
    """The fields of the shards numbered ``keep`` (positions in the ``cuts`` list)."""
    return {k: [v[i] for i in keep] for k, v in fields.items()}
