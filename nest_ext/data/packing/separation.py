"""Separation examples for packing: a mixture, its sources (and a noise file) that travel together in a shard.

Input: a separation manifest as ``prepare_separation_data`` writes it (JSON lines, NeMo's audio-to-audio keys)::

    {"input_filepath": "tr/mix/a.wav", "target_filepath": ["tr/s1/a.wav", "tr/s2/a.wav"],
     "noise_filepath": "tr/noise/a.wav", "duration": 5.87, "speaker_ids": ["011", "20a"]}

``noise_filepath`` is optional (all entries have it or none). Relative paths are relative to the manifest's
folder; ``offset``/``duration`` cut the same segment out of every file; other keys (``speaker_ids``...) travel
to the output manifest.

Each example becomes one :class:`~nest_ext.data.packing.item.ShardItem` with payloads ``mixture``, ``s1`` ..
``sN`` (and ``noise``), all decoded (the integrity check), resampled alike when asked, and checked to be mono
and equally long; ``meta`` holds the member names under the manifest's own keys, so the ``nemo`` writer's
manifest reads like the input with tar members for files::

    {"input_filepath": "a.mixture.wav", "target_filepath": ["a.s1.wav", "a.s2.wav"], "duration": 5.87,
     "speaker_ids": ["011", "20a"], "shard_id": 0}

Example::

    >>> import json, os, tempfile, numpy as np, soundfile as sf
    >>> d = tempfile.mkdtemp()
    >>> for n in ("m", "s1", "s2"):
    ...     sf.write(os.path.join(d, n + ".wav"), np.zeros(800, np.float32), 8000, subtype="PCM_16")
    >>> with open(os.path.join(d, "tr.json"), "w") as f:
    ...     _ = f.write(json.dumps({"input_filepath": "m.wav", "target_filepath": ["s1.wav", "s2.wav"]}) + "\\n")
    >>> utts, bad = read_separation_manifest(os.path.join(d, "tr.json"))
    >>> utts[0].member = utts[0].utt_id
    >>> item = load_separation_item((utts[0], None, None))
    >>> list(item.audio), item.meta["target_filepath"]
    (['mixture', 's1', 's2'], ['m.s1.wav', 'm.s2.wav'])
"""
from __future__ import annotations

import dataclasses
import os
from typing import List, Optional, Tuple, Union

from nest_ext.data.packing.audio import failure_reason, load_utterance
from nest_ext.data.packing.inputs import BadItem, Utterance, duration_problem, manifest_entries, resolve_relative
from nest_ext.data.packing.item import ShardItem

INPUT_KEY, TARGET_KEY, NOISE_KEY = "input_filepath", "target_filepath", "noise_filepath"


@dataclasses.dataclass
class SeparationUtterance(Utterance):
    """A separation example: ``source`` is the mixture, ``targets`` the source files in speaker order,
    ``noise`` the noise file or None. (A subclass, so an ASR plan's hash is unchanged by these fields.)"""

    targets: List[str] = dataclasses.field(default_factory=list)
    noise: Optional[str] = None

    def files(self) -> List[Tuple[str, str]]:
        """``(payload name, path)`` of every file, mixture first."""
        files = [("mixture", self.source)] + [(f"s{k}", t) for k, t in enumerate(self.targets, start=1)]
        return files + ([("noise", self.noise)] if self.noise else [])


def read_separation_manifest(path: str) -> Tuple[List[SeparationUtterance], List[BadItem]]:
    """Parse a separation manifest into :class:`SeparationUtterance` entries (input order) and the lines left
    out: malformed JSON, no mixture or targets, or no ``noise_filepath`` where other entries have one."""
    utts, bad, rows = [], [], []
    base = os.path.dirname(os.path.abspath(path))
    def take(item):
        mixture, targets = item.pop(INPUT_KEY), item.pop(TARGET_KEY)
        targets = [targets] if isinstance(targets, str) else list(targets)
        if not isinstance(mixture, str) or not targets or not all(isinstance(t, str) for t in targets):
            raise TypeError(f"{INPUT_KEY} must be a path and {TARGET_KEY} a non-empty list of paths")
        return mixture, targets, item.pop(NOISE_KEY, None)

    for origin, item, (mixture, targets, noise), offset, duration in manifest_entries(
            path, bad, take, f"{INPUT_KEY}, {TARGET_KEY}"):
        rows.append((origin, mixture, targets, noise, offset, duration, item))
    with_noise = any(noise for _, _, _, noise, _, _, _ in rows)
    for origin, mixture, targets, noise, offset, duration, extra in rows:
        utt_id = os.path.splitext(os.path.basename(mixture))[0]
        if with_noise and not noise:
            bad.append(BadItem(utt_id, mixture, origin, f"malformed: no {NOISE_KEY} (other entries have one)"))
            continue
        utts.append(SeparationUtterance(
            utt_id=utt_id, source=resolve_relative(mixture, base), origin=origin, offset=offset, duration=duration,
            extra=extra, targets=[resolve_relative(t, base) for t in targets],
            noise=resolve_relative(noise, base) if noise else None,
        ))
    return utts, bad


def load_separation_item(args: Tuple) -> Union[ShardItem, BadItem]:
    """``(example, sample_rate, pipe_timeout[, min_duration, max_duration])`` -> its :class:`ShardItem`, or a
    :class:`BadItem` naming the file (and which payload it is) that keeps it out."""
    utt, sample_rate, pipe_timeout, *limits = args
    payloads = {}
    for name, path in utt.files():
        part = Utterance(utt_id=utt.utt_id, source=path, origin=utt.origin, offset=utt.offset, duration=utt.duration)
        try:
            enc = load_utterance(part, sample_rate, pipe_timeout)
        except (OSError, ValueError) as e:
            return BadItem(utt.utt_id, path, utt.origin, f"{failure_reason(e)} ({name})")
        if enc.num_channels != 1:
            return BadItem(utt.utt_id, path, utt.origin, f"unsupported: {enc.num_channels} channels ({name}); "
                                                         "separation needs mono files")
        payloads[name] = enc
    mixture = payloads["mixture"]
    for name, enc in payloads.items():
        if (enc.num_samples, enc.sample_rate) != (mixture.num_samples, mixture.sample_rate):
            return BadItem(utt.utt_id, dict(utt.files())[name], utt.origin,
                           f"mismatch: {name} has {enc.num_samples} samples at {enc.sample_rate} Hz, the mixture "
                           f"{mixture.num_samples} at {mixture.sample_rate} Hz")
    problem = duration_problem(mixture.num_samples / mixture.sample_rate, *limits) if limits else None
    if problem:
        return BadItem(utt.utt_id, utt.source, utt.origin, problem)
    item = ShardItem(key=utt.member, audio=payloads, input_id=utt.utt_id)
    names = [f"s{k}" for k in range(1, len(utt.targets) + 1)]
    item.meta = {INPUT_KEY: item.member_name("mixture"), TARGET_KEY: [item.member_name(n) for n in names]}
    if utt.noise:
        item.meta[NOISE_KEY] = item.member_name("noise")
    item.meta.update(utt.extra)
    return item
