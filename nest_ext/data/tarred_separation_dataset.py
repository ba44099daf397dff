"""Separation training from NeMo-style tar shards (``pack_shards(task="separation")``), as NEST reads its shards.

Config (``model.train_ds``)::

    is_tarred: true
    manifest_filepath: DIR/tarred_audio_manifest.json
    tarred_audio_filepaths: DIR/audio__OP_0..N-1_CL_.tar     # NeMo's brace / _OP_.._CL_ patterns
    shuffle_n: 256                   # shuffle buffer in examples (each holds mixture + sources)
    tarred_shard_strategy: scatter   # NeMo's key: disjoint shards per DDP rank (replicate: all shards everywhere)

plus the keys of :class:`~nest_ext.data.separation_dataset.SeparationDataset` (``segment_seconds`` crops,
``speed_perturb``, ``dynamic_mixing`` with or without a ``source_pool``, ``min_duration``/``max_duration``,
``on_bad_audio``, ``seed``).

How it reads (:mod:`nest_ext.data.tarred_shards`): this rank's shards (``scatter``, NeMo's
``expand_sharded_filepaths``), split over DataLoader workers, in an order drawn per (seed, epoch, rank, worker),
through a shuffle buffer; each example's members ``KEY.mixture.*``, ``KEY.s1.*``... arrive together.

**Every rank yields the same number of examples per epoch** (``len(dataset)``): the smallest number any rank's
shards hold, after filtering. A rank whose shards hold more stops there (the rest come first in other epochs,
the order being new each epoch); one that meets bad members reads on (and wraps around). Unequal counts would
leave one DDP rank waiting for the others' gradients forever.

Dynamic mixing: without ``source_pool`` each example's sources enter a window of ``dynamic_mixing_buffer``
recent sources that mixtures are drawn from (:class:`~nest_ext.data.streaming_mixer.StreamingMixer`); with a
pool, mixtures come from the pool and the shards only set the epoch length.

Example::

    >>> import json, os, tempfile, numpy as np, soundfile as sf
    >>> from nest_ext.data.packing import pack_shards
    >>> d = tempfile.mkdtemp()
    >>> rows = []
    >>> for i in range(4):
    ...     srcs = [np.random.default_rng(2 * i + k).standard_normal(4000).astype("float32") * 0.1 for k in range(2)]
    ...     for name, x in (("s1", srcs[0]), ("s2", srcs[1]), ("mix", srcs[0] + srcs[1])):
    ...         sf.write(os.path.join(d, f"{name}_{i}.wav"), x, 8000)
    ...     rows.append(json.dumps({"input_filepath": f"mix_{i}.wav", "target_filepath": [f"s1_{i}.wav", f"s2_{i}.wav"]}))
    >>> _ = open(os.path.join(d, "tr.json"), "w").write("\\n".join(rows))
    >>> _ = pack_shards(out_dir=os.path.join(d, "shards"), manifest=os.path.join(d, "tr.json"), task="separation",
    ...                 shard_size=2, progress=False)
    >>> ds = TarredSeparationDataset(os.path.join(d, "shards", "tarred_audio_manifest.json"),
    ...                              os.path.join(d, "shards", "audio__OP_0..1_CL_.tar"), sample_rate=8000,
    ...                              segment_seconds=0.25)
    >>> items = list(ds)
    >>> len(ds), [tuple(x["target_signal"].shape) for x in items]
    (4, [(2, 2000), (2, 2000), (2, 2000), (2, 2000)])
"""
from __future__ import annotations

import io
import logging
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

import numpy as np
import soundfile as sf
import torch

from nest_ext.data.audio_io import BadAudioError
from nest_ext.data.bad_audio import BadAudioReport
from nest_ext.data.dynamic_mixing import apply_crop, plan_crop
from nest_ext.data.mixture_sources import build_mixer, draw_pool_mixture, example_speakers, mixing_options_from_config
from nest_ext.data.separation_dataset import DEFAULT_SPEED_FACTORS, collate_separation_batch
from nest_ext.data.speaker_ids import compile_speaker_regex, resolve_speakers
from nest_ext.data.streaming_mixer import StreamingMixer
from nest_ext.data.tarred_shards import (
    expand_shards, iter_tar_samples, load_tarred_manifest, rank_shards, shard_id_of, split_for_worker, worker_info,
)

__all__ = ["DEFAULT_SHUFFLE_N", "TarredSeparationDataset", "decode_member"]

logger = logging.getLogger(__name__)

# Examples in the shuffle buffer. NEST's configs use 2048 single utterances; a separation example is a mixture
# and its sources (about 3x the bytes), so a smaller buffer keeps a worker near 60 MB at 5 s / 8 kHz.
DEFAULT_SHUFFLE_N = 256


def decode_member(data: Optional[bytes], name: str, sample_rate: int, where: Optional[str] = None) -> np.ndarray:
    """A tar member's mono audio, float32 ``[T]``; :class:`BadAudioError` naming the member otherwise."""
    if not data:
        raise BadAudioError(f"tar member {name}", "missing from its shard", where)
    try:
        audio, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as e:
        raise BadAudioError(f"tar member {name}", f"cannot decode ({type(e).__name__}: {e})", where) from None
    if rate != sample_rate:
        raise BadAudioError(f"tar member {name}", f"sample rate {rate} Hz, expected {sample_rate} Hz", where)
    if audio.shape[1] != 1:
        raise BadAudioError(f"tar member {name}", f"{audio.shape[1]} channels, expected mono", where)
    if audio.shape[0] == 0 or not np.all(np.isfinite(audio)):
        raise BadAudioError(f"tar member {name}", "empty, or NaN/Inf samples", where)
    return audio[:, 0]


class TarredSeparationDataset(torch.utils.data.IterableDataset):
    """Separation examples streamed from tar shards (see the module docstring). Items and batches as
    :class:`~nest_ext.data.separation_dataset.SeparationDataset`; ``collate_fn`` is the same."""

    collate_fn = staticmethod(collate_separation_batch)

    def __init__(self, manifest_filepath: Union[str, Sequence[str]], tarred_audio_filepaths: Union[str, Sequence[str]],
                 sample_rate: int, num_spks: int = 2, segment_seconds: Optional[float] = None,
                 dynamic_mixing: bool = False, speed_perturb: bool = False,
                 speed_factors: Sequence[float] = DEFAULT_SPEED_FACTORS, min_duration: Optional[float] = None,
                 max_duration: Optional[float] = None, on_bad_audio: str = "skip", seed: int = 0, shuffle: bool = True,
                 shuffle_n: int = DEFAULT_SHUFFLE_N, shard_strategy: str = "scatter", global_rank: int = 0,
                 world_size: int = 1, **mixing):
        self.bad_audio = BadAudioReport(on_bad_audio, name=str(manifest_filepath), logger=logger)
        self.sample_rate, self.num_spks, self.seed = int(sample_rate), int(num_spks), int(seed)
        self.segment_frames = None if segment_seconds is None else int(round(segment_seconds * self.sample_rate))
        self.speed_factors = tuple(float(s) for s in speed_factors) if speed_perturb else None
        self.shuffle, self.shuffle_n = bool(shuffle), int(shuffle_n) if shuffle else 0
        self.global_rank = global_rank
        self.entries = self._load_entries(manifest_filepath, min_duration, max_duration)
        all_urls = expand_shards(tarred_audio_filepaths)
        self.urls = rank_shards(all_urls, shard_strategy, global_rank, world_size)
        self.length = self._epoch_length(all_urls, shard_strategy, world_size)
        self.dynamic_mixing = bool(dynamic_mixing)
        self.mixing = mixing_options_from_config(mixing, self.num_spks, self.sample_rate, self.segment_frames,
                                                 self.speed_factors, global_rank, world_size)
        self.mixing.shard_strategy = shard_strategy
        self._regex = compile_speaker_regex(self.mixing.speaker_id_regex)
        self._mixer = None  # built in each worker process at first use (a stream is per process)
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()

    # ---- setup ------------------------------------------------------------------------------------------------
    def _load_entries(self, manifest, min_duration, max_duration) -> Dict[str, Dict]:
        entries, problems = load_tarred_manifest(manifest, "input_filepath")
        for p in problems:
            where, reason = p.split(": ", 1)
            self.bad_audio.add(str(manifest), reason, where, "start")
        kept = {}
        for key, e in entries.items():
            targets = e.get("target_filepath")
            if not isinstance(targets, list) or len(targets) != self.num_spks:
                self.bad_audio.add(e["input_filepath"], f"{len(targets or [])} target members, the config says "
                                   f"num_spks={self.num_spks}", e["_where"], "start")
                continue
            d = e.get("duration")
            if d is not None and ((min_duration is not None and d < min_duration) or
                                  (max_duration is not None and d > max_duration)):
                continue
            kept[key] = e
        if not kept:
            raise ValueError(f"no usable entries in {manifest} ({self.bad_audio.summary()})")
        return kept

    def _epoch_length(self, all_urls: List[str], shard_strategy: str, world_size: int) -> int:
        """Examples per epoch on every rank: the fewest any rank's shards hold (see the module docstring)."""
        per_shard: Dict[int, int] = {}
        for e in self.entries.values():
            per_shard[e.get("shard_id", -1)] = per_shard.get(e.get("shard_id", -1), 0) + 1
        if -1 in per_shard:  # a manifest without shard ids: assume the entries are spread evenly
            return max(1, len(self.entries) // (world_size if shard_strategy == "scatter" else 1))
        ids = {u: shard_id_of(u, i) for i, u in enumerate(all_urls)}
        counts = [sum(per_shard.get(ids[u], 0) for u in rank_shards(all_urls, shard_strategy, r, world_size))
                  for r in range(world_size)]
        if len(set(counts)) > 1 and self.global_rank == 0:
            logger.info("tarred separation data: ranks' shards hold %s examples; each rank uses %d per epoch",
                        counts, min(counts))
        if min(counts) == 0:
            raise ValueError(f"a DDP rank's shards hold no usable example (per rank: {counts})")
        return min(counts)

    # ---- epoch ------------------------------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """New shard order, crops and mixtures for ``epoch`` (shared memory: workers see it)."""
        self._epoch.fill_(int(epoch))

    @property
    def epoch(self) -> int:
        return int(self._epoch.item())

    def __len__(self) -> int:
        return self.length

    # ---- reading ----------------------------------------------------------------------------------------------
    def _signals(self, sample: Dict, entry: Dict) -> List[np.ndarray]:
        members = [entry["input_filepath"]] + list(entry["target_filepath"])
        signals = [decode_member(sample.get(m.split(".", 1)[1]), m, self.sample_rate, entry["_where"]) for m in members]
        if len({len(s) for s in signals}) != 1:
            raise BadAudioError(f"tar member {members[0]}", "mixture and sources differ in length "
                                f"({', '.join(str(len(s)) for s in signals)})", entry["_where"])
        return signals

    def _examples(self, rng: np.random.Generator, urls, split) -> Iterator[tuple]:
        """``(entry, [mixture, s1, ...])`` endlessly: pass after pass over the shards, each in a new order."""
        while True:
            found = False
            for sample in iter_tar_samples(urls, rng, self.shuffle_n, split, shuffle_shards=self.shuffle):
                entry = self.entries.get(sample["__key__"])
                if entry is None:
                    continue  # filtered (duration, speakers) or not in the manifest
                try:
                    signals = self._signals(sample, entry)
                except BadAudioError as e:
                    self.bad_audio.add(e.path, e.reason, e.where, "load")  # raises under on_bad_audio='error'
                    continue
                found = True
                yield entry, signals
            if not found:
                raise RuntimeError(f"no usable example in this worker's shards {urls} ({self.bad_audio.summary()})")

    def _push_sources(self, mixer: StreamingMixer, entry: Dict, signals: List[np.ndarray], rng) -> None:
        ids, _ = example_speakers(entry.get("speaker_ids"), entry.get("utt_id") or entry["input_filepath"],
                                  self.num_spks, self._regex)
        names = list(entry["target_filepath"])
        resolved, _ = resolve_speakers(names, ids, self.mixing.dynamic_mixing_speakers)
        audio = dict(zip(names, signals[1:]))
        for name, speaker in resolved:
            mixer.push(audio[name], speaker, name, rng)

    def _item(self, mixture: np.ndarray, sources: np.ndarray, index: int) -> Dict[str, Any]:
        return {"input_signal": torch.from_numpy(np.ascontiguousarray(mixture, dtype=np.float32)),
                "target_signal": torch.from_numpy(np.ascontiguousarray(sources, dtype=np.float32)), "index": index}

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        worker, num_workers = worker_info()
        rng = np.random.default_rng([self.seed, self.epoch, self.global_rank, worker])
        quota = self.length // num_workers + (1 if worker < self.length % num_workers else 0)
        urls, split = split_for_worker(self.urls, worker, num_workers)
        if self.dynamic_mixing and self._mixer is None:
            self._mixer = build_mixer(self.mixing, report=self.bad_audio)
        mixer = self._mixer
        if mixer is not None and (self.mixing.source_pool is not None):
            for i in range(quota):  # mixtures from the pool; the shards only set the epoch length
                mixture, sources, _ = draw_pool_mixture(mixer, rng, self.bad_audio)
                yield self._item(mixture, sources, i)
            return
        produced = 0
        for entry, signals in self._examples(rng, urls, split):
            if produced >= quota:
                return
            if mixer is not None:
                self._push_sources(mixer, entry, signals, rng)
                if mixer.num_buffered < mixer.buffer_size and mixer.num_buffered < 2 * len(self.entries) * self.num_spks:
                    continue  # fill the window before the first mixture (or hold the whole data twice)
                if not mixer.ready:
                    continue
                mixture, sources, _ = mixer.mix(rng)
            else:
                total = len(signals[0])
                speed, start, need, out_len = plan_crop(total, self.segment_frames, self.speed_factors, rng)
                cropped = [apply_crop(s[start:start + need], speed, out_len) for s in signals]
                mixture, sources = cropped[0], np.stack(cropped[1:])
            yield self._item(mixture, sources, produced)
            produced += 1
