"""Separation training on NeMo's lhotse path (``use_lhotse: true``): lhotse Shar or CutSet manifests.

Cuts follow NeMo's lhotse audio-to-audio convention (``nemo.collections.audio.data.audio_to_audio_lhotse``, also
what ``pack_shards(task="separation", format="lhotse-shar")`` writes): ``recording`` is the mixture,
the custom recording ``target_recording`` holds the sources as channels, ``custom["speaker_ids"]`` their
speakers. NeMo's ``get_lhotse_dataloader_from_config`` reads and samples the cuts (``shar_path``, ``cuts_path``,
``batch_size``/``batch_duration``, ``shuffle_buffer_size``, ``shard_seed``...); :class:`LhotseSeparationDataset`
turns each sampled batch of cuts into the separation batch every path gives (``input_signal [B, T]``,
``target_signal [B, S, T]``, lengths), with the same ``segment_seconds`` crops, speed perturbation and dynamic
mixing as the manifest and tarred paths.

``shar_path`` may be pack_shards' output folder (the one with ``shar_index.json``): :func:`resolve_shar_path`
turns it into NeMo's per-field form and, with ``tarred_shard_strategy: scatter`` (the default, as for tarred
data), gives each DDP rank a disjoint block of shards; NeMo's Shar stream then repeats them endlessly in a new
order each pass, so train by ``trainer.max_steps``. A ``cuts_path`` manifest is split over ranks by NeMo's
sampler.

Example::

    >>> ds = LhotseSeparationDataset(num_spks=2, sample_rate=8000, segment_seconds=0.5)
    >>> ds.segment_frames
    4000
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from nest_ext.data.audio_io import BadAudioError
from nest_ext.data.bad_audio import BadAudioReport
from nest_ext.data.dynamic_mixing import apply_crop, plan_crop
from nest_ext.data.mixture_sources import build_mixer, draw_pool_mixture, example_speakers, mixing_options_from_config
from nest_ext.data.separation_dataset import DEFAULT_SPEED_FACTORS, collate_separation_batch
from nest_ext.data.speaker_ids import compile_speaker_regex, resolve_speakers
from nest_ext.data.tarred_shards import rank_shards, select_shar_shards, shar_fields, worker_info

__all__ = ["LhotseSeparationDataset", "resolve_shar_path"]

logger = logging.getLogger(__name__)

TARGET_FIELD = "target_recording"


def resolve_shar_path(shar_path, shard_strategy: str = "scatter", global_rank: int = 0, world_size: int = 1):
    """NeMo's ``shar_path`` for a folder of our Shar shards: ``{field: [this rank's files]}``. Anything that is not
    such a folder (lists, weights, a field dict) is returned unchanged for NeMo to read.

    >>> resolve_shar_path(["a", 1.0])
    ['a', 1.0]
    """
    if not isinstance(shar_path, str) or not os.path.isdir(shar_path):
        return shar_path
    fields = shar_fields(shar_path)
    keep = rank_shards(list(range(len(fields["cuts"]))), shard_strategy, global_rank, world_size)
    return select_shar_shards(fields, keep)


class LhotseSeparationDataset(torch.utils.data.Dataset):
    """Cuts -> separation batch (see the module docstring); given to NeMo's lhotse dataloader as its dataset.

    Args mirror :class:`~nest_ext.data.separation_dataset.SeparationDataset`'s config keys; ``**mixing`` takes the
    dynamic-mixing keys (``source_pool``, ``speaker_id_regex``, ``dynamic_mixing_speakers``, ...). A cut whose
    audio fails to load, is not mono, has another rate or another number of sources is reported (by cut id and
    source) and left out of its batch; ``on_bad_audio: error`` raises instead.
    """

    def __init__(self, num_spks: int, sample_rate: int, segment_seconds: Optional[float] = None,
                 dynamic_mixing: bool = False, speed_perturb: bool = False,
                 speed_factors: Sequence[float] = DEFAULT_SPEED_FACTORS, seed: int = 0, on_bad_audio: str = "skip",
                 global_rank: int = 0, world_size: int = 1, **mixing):
        self.num_spks, self.sample_rate, self.seed = int(num_spks), int(sample_rate), int(seed)
        self.segment_frames = None if segment_seconds is None else int(round(segment_seconds * self.sample_rate))
        self.speed_factors = tuple(float(s) for s in speed_factors) if speed_perturb else None
        self.dynamic_mixing = bool(dynamic_mixing)
        self.global_rank = global_rank
        self.mixing = mixing_options_from_config(mixing, self.num_spks, self.sample_rate, self.segment_frames,
                                                 self.speed_factors, global_rank, world_size)
        self._regex = compile_speaker_regex(self.mixing.speaker_id_regex)
        self.bad_audio = BadAudioReport(on_bad_audio, name="lhotse cuts", logger=logger)
        self._mixer = None  # per process (a stream, a window)
        self._calls = 0

    def _rng(self, cuts) -> np.random.Generator:
        # NeMo's Shar stream repeats cut ids every pass: a per-process call counter makes each batch draw anew
        self._calls += 1
        worker, _ = worker_info()
        return np.random.default_rng([self.seed, self.global_rank, worker, self._calls, len(cuts)])

    def _load(self, cut, rng: np.random.Generator, crop: bool) -> Tuple[np.ndarray, np.ndarray]:
        """Mixture [T] and sources [S, T] of one cut, cropped (``crop``) as every separation path crops."""
        if not cut.has_custom(TARGET_FIELD):
            raise BadAudioError(cut.id, f"cut has no '{TARGET_FIELD}' (the sources)")
        target = getattr(cut, TARGET_FIELD)
        if cut.num_channels != 1:
            raise BadAudioError(cut.id, f"{cut.num_channels} mixture channels, expected mono")
        if target.sampling_rate != self.sample_rate or cut.sampling_rate != self.sample_rate:
            raise BadAudioError(cut.id, f"{cut.sampling_rate}/{target.sampling_rate} Hz (mixture/sources), "
                                        f"expected {self.sample_rate} Hz")
        if target.num_channels != self.num_spks:
            raise BadAudioError(cut.id, f"{target.num_channels} sources, the config says num_spks={self.num_spks}")
        speed, start, need, out_len = 1.0, 0, cut.num_samples, cut.num_samples
        if crop:
            speed, start, need, out_len = plan_crop(cut.num_samples, self.segment_frames, self.speed_factors, rng)
            cut = cut.truncate(offset=start / self.sample_rate, duration=need / self.sample_rate, preserve_id=True)
        try:
            mixture = cut.load_audio()[0]
            sources = cut.load_custom(TARGET_FIELD)
        except Exception as e:
            raise BadAudioError(cut.id, f"cannot load ({type(e).__name__}: {e})") from None
        signals = [apply_crop(np.asarray(x, np.float32), speed, out_len) for x in [mixture, *sources]]
        return signals[0], np.stack(signals[1:])

    def _report(self, cut, err: BadAudioError) -> None:
        src = getattr(getattr(cut, "recording", None), "sources", None)
        where = src[0].source if src and isinstance(src[0].source, str) else None
        self.bad_audio.add(err.path, err.reason, where, "load")  # raises under on_bad_audio='error'

    def __getitem__(self, cuts) -> Dict[str, torch.Tensor]:
        rng = self._rng(cuts)
        items: List[Dict[str, Any]] = []
        if self.dynamic_mixing and self._mixer is None:
            self._mixer = build_mixer(self.mixing, report=self.bad_audio)
        from_pool = self._mixer is not None and self.mixing.source_pool is not None
        for cut in cuts:
            if from_pool:  # the pool makes the mixture; the sampled cut only counts
                mixture, sources, _ = draw_pool_mixture(self._mixer, rng, self.bad_audio)
            else:
                try:
                    mixture, sources = self._load(cut, rng, crop=self._mixer is None)
                except BadAudioError as e:
                    self._report(cut, e)
                    continue
                if self._mixer is not None:
                    mixture, sources = self._remix(cut, sources, mixture, rng)
            items.append({"input_signal": torch.from_numpy(np.ascontiguousarray(mixture, dtype=np.float32)),
                          "target_signal": torch.from_numpy(np.ascontiguousarray(sources, dtype=np.float32))})
        if not items:
            raise RuntimeError(f"every cut of a batch failed to load ({self.bad_audio.summary()})")
        return collate_separation_batch(items)

    def _remix(self, cut, sources: np.ndarray, mixture: np.ndarray, rng) -> Tuple[np.ndarray, np.ndarray]:
        """Dynamic mixing from the stream of cuts: this cut's sources join the window, a new mixture is drawn
        from it (the cut's own mixture, cropped, while the window has fewer than ``num_spks`` speakers)."""
        ids, _ = example_speakers((cut.custom or {}).get("speaker_ids"), cut.id, self.num_spks, self._regex)
        names = [f"{cut.id}.s{k + 1}" for k in range(len(sources))]
        resolved, _ = resolve_speakers(names, ids, self.mixing.dynamic_mixing_speakers)
        by_name = dict(zip(names, sources))
        for name, speaker in resolved:
            self._mixer.push(by_name[name], speaker, name, rng)
        if self._mixer.ready:
            mixture, mixed, _ = self._mixer.mix(rng)
            return mixture, mixed
        speed, start, need, out_len = plan_crop(len(mixture), self.segment_frames, self.speed_factors, rng)
        signals = [apply_crop(x[start:start + need], speed, out_len) for x in [mixture, *sources]]
        return signals[0], np.stack(signals[1:])
