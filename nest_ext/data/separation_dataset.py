"""Speech separation dataset on NeMo audio-to-audio manifests, with random crops and dynamic mixing.

Manifest format (JSON lines; the key names are NeMo's audio-to-audio defaults, the ones of
``nemo.collections.audio.data.audio_to_audio_lhotse.convert_manifest_nemo_to_lhotse``; other names
can be chosen with ``input_key`` / ``target_key`` as in NeMo's ``AudioToTargetDataset``)::

    {"input_filepath": "tr/mix/011a010b_0.6_20ao010t_-0.6.wav",
     "target_filepath": ["tr/s1/011a010b_0.6_20ao010t_-0.6.wav", "tr/s2/011a010b_0.6_20ao010t_-0.6.wav"],
     "duration": 5.87,
     "speaker_ids": ["011", "20a"]}

* ``input_filepath``: the mixture (mono). ``target_filepath``: one file per speaker, in order.
  Relative paths are relative to the manifest's folder (as in NeMo).
* ``duration`` (seconds) is used for ``min_duration``/``max_duration`` filtering.
* ``speaker_ids`` (optional) is used by dynamic mixing; when absent it is derived from the
  mixture's file name (wsj0-mix and LibriMix naming, :func:`speaker_ids_from_filename`, or the
  ``speaker_id_regex`` key), and failing that each source file counts as its own speaker
  (``dynamic_mixing_speakers: auto``, warned; ``ids`` leaves such sources out).
  ``tools/prepare_separation_data.py`` writes this format.

Items and batches:
    ``dataset[i]`` is a dict ``{"input_signal": [T] float32, "target_signal": [num_spks, T] float32,
    "index": int}``. :func:`collate_separation_batch` (also ``dataset.collate_fn``) zero-pads to the
    longest item and returns a dict ``{"input_signal": [B, T], "input_length": [B] int64,
    "target_signal": [B, num_spks, T], "target_length": [B] int64}``, which is the dict form that
    NeMo's ``AudioToAudioModel._parse_batch`` reads.

Config (``model.train_ds`` etc.) read by :func:`get_separation_dataset_from_config`:
    ``manifest_filepath`` (path, comma-separated paths or list), ``sample_rate``, ``num_spks``,
    ``segment_seconds`` (random crop length, null = whole utterance), ``dynamic_mixing`` (false),
    ``speed_perturb`` (false; factors ``speed_factors``, default [0.95, 1.0, 1.05]), ``min_duration``,
    ``max_duration``, ``on_bad_audio`` (``skip`` | ``error``, default ``skip``), ``seed`` (0),
    ``input_key``, ``target_key``, ``dynamic_mixing_levels`` (overrides of
    :func:`nest_ext.data.dynamic_mixing.sample_levels_db`), ``source_pool`` (mix from another corpus of
    single-speaker utterances instead of the manifest's sources, :mod:`nest_ext.data.source_pool`),
    ``source_pool_speaker_key``, ``speaker_id_regex``, ``dynamic_mixing_speakers`` (``auto`` | ``ids``),
    ``dynamic_mixing_buffer`` (sharded pools). DataLoader keys (``batch_size``, ``shuffle``,
    ``num_workers``, ``pin_memory``) are for the caller. Tarred and lhotse data:
    :mod:`nest_ext.data.separation_data`.

Randomness: every item draws from its own generator seeded with ``(seed, epoch, index)``; DDP ranks
read different indices, so they see different crops/mixtures, and a run with the same seed
reproduces. **The epoch must be told**: call ``dataset.set_epoch(epoch)`` (or
:func:`set_separation_epoch` on the DataLoader) from ``on_train_epoch_start``; the epoch lives in a
shared-memory tensor, so DataLoader worker processes (persistent or not) see it. Without it every
epoch repeats epoch 0's crops and mixtures.

Bad audio (unreadable, wrong rate, multi-channel, lengths of mixture and sources differ, missing):
with ``on_bad_audio: skip`` it is logged once with the path and manifest line, counted in
``dataset.bad_audio`` (a :class:`~nest_ext.data.bad_audio.BadAudioReport`) and another item is served
in its place (missing files are dropped when the manifest is loaded); with ``error`` it raises
:class:`~nest_ext.data.audio_io.BadAudioError`.

Example:
    >>> import numpy as np, soundfile as sf, tempfile, os, json
    >>> d = tempfile.mkdtemp()
    >>> rows = []
    >>> for i, n in enumerate((8000, 12000)):
    ...     srcs = [np.random.default_rng(i * 2 + k).standard_normal(n).astype("float32") * 0.1 for k in range(2)]
    ...     paths = [os.path.join(d, f"s{k}_{i}.wav") for k in range(2)]
    ...     for p, s in zip(paths, srcs): sf.write(p, s, 8000)
    ...     sf.write(os.path.join(d, f"mix_{i}.wav"), srcs[0] + srcs[1], 8000)
    ...     rows.append({"input_filepath": f"mix_{i}.wav", "target_filepath": [os.path.basename(p) for p in paths], "duration": n / 8000})
    >>> with open(os.path.join(d, "m.json"), "w") as f: _ = f.write("\\n".join(json.dumps(r) for r in rows))
    >>> ds = get_separation_dataset_from_config({"manifest_filepath": os.path.join(d, "m.json"), "sample_rate": 8000, "num_spks": 2})
    >>> batch = ds.collate_fn([ds[0], ds[1]])
    >>> batch["input_signal"].shape, batch["target_signal"].shape, batch["input_length"].tolist()
    (torch.Size([2, 12000]), torch.Size([2, 2, 12000]), [8000, 12000])
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from nest_ext.data.audio_io import BadAudioError, read_audio_info, read_audio_segment
from nest_ext.data.bad_audio import BadAudioReport, get_on_bad_audio
from nest_ext.data.dynamic_mixing import apply_crop, plan_crop
from nest_ext.data.mixture_sources import build_mixer, draw_mixture, mixing_options_from_config
from nest_ext.data.separation_manifest import (
    DEFAULT_INPUT_KEY,
    DEFAULT_TARGET_KEY,
    SeparationExample,
    load_separation_manifest,
    manifest_list,
)
from nest_ext.data.speaker_ids import speaker_ids_from_filename

__all__ = [
    "SeparationDataset",
    "SeparationExample",
    "collate_separation_batch",
    "get_separation_dataset_from_config",
    "load_separation_manifest",
    "set_separation_epoch",
    "speaker_ids_from_filename",
]

logger = logging.getLogger(__name__)

DEFAULT_SPEED_FACTORS = (0.95, 1.0, 1.05)


def collate_separation_batch(batch: Sequence[Mapping[str, Any]]) -> Dict[str, torch.Tensor]:
    """Zero-pad items to the longest: ``input_signal [B, T]``, ``input_length [B]``,
    ``target_signal [B, S, T]``, ``target_length [B]`` (lengths int64, equal for input and target).
    """
    if not batch:
        raise ValueError("empty batch")
    spks = {int(b["target_signal"].shape[0]) for b in batch}
    if len(spks) != 1:
        raise ValueError(f"items with different numbers of sources in one batch: {sorted(spks)}")
    lengths = torch.tensor([int(b["input_signal"].shape[-1]) for b in batch], dtype=torch.int64)
    t_max = int(lengths.max())
    num_spks = spks.pop()
    inputs = torch.zeros(len(batch), t_max, dtype=torch.float32)
    targets = torch.zeros(len(batch), num_spks, t_max, dtype=torch.float32)
    for i, b in enumerate(batch):
        n = int(lengths[i])
        if b["target_signal"].shape[-1] != n:
            raise ValueError(f"item {i}: mixture has {n} samples, targets {b['target_signal'].shape[-1]}")
        inputs[i, :n] = b["input_signal"]
        targets[i, :, :n] = b["target_signal"]
    return {"input_signal": inputs, "input_length": lengths, "target_signal": targets, "target_length": lengths.clone()}


class SeparationDataset(torch.utils.data.Dataset):
    """Mixtures and their sources from manifests, or dynamic mixtures of the manifests' sources.

    See the module docstring for the manifest format, batch layout and randomness. Args mirror the
    config keys of :func:`get_separation_dataset_from_config`.
    """

    def __init__(
        self,
        manifest_filepath: Union[str, Sequence[str]],
        sample_rate: int,
        num_spks: int = 2,
        segment_seconds: Optional[float] = None,
        dynamic_mixing: bool = False,
        speed_perturb: bool = False,
        speed_factors: Sequence[float] = DEFAULT_SPEED_FACTORS,
        min_duration: Optional[float] = None,
        max_duration: Optional[float] = None,
        on_bad_audio: str = "skip",
        seed: int = 0,
        input_key: str = DEFAULT_INPUT_KEY,
        target_key: str = DEFAULT_TARGET_KEY,
        dynamic_mixing_levels: Optional[dict] = None,
        max_retries: int = 20,
        source_pool: Optional[str] = None,
        source_pool_speaker_key: Optional[str] = None,
        speaker_id_regex: Optional[str] = None,
        dynamic_mixing_speakers: str = "auto",
        dynamic_mixing_buffer: Optional[int] = None,
        global_rank: int = 0,
        world_size: int = 1,
    ):
        # Bad files (in the manifest, or found when loaded) are logged with file and manifest line and
        # counted here; it applies the on_bad_audio policy (and checks its value).
        self.bad_audio = BadAudioReport(on_bad_audio, name=", ".join(manifest_list(manifest_filepath)), logger=logger)
        self.sample_rate = int(sample_rate)
        self.num_spks = int(num_spks)
        self.segment_frames = None if segment_seconds is None else int(round(segment_seconds * self.sample_rate))
        if self.segment_frames is not None and self.segment_frames <= 0:
            raise ValueError(f"segment_seconds must be positive, got {segment_seconds}")
        self.dynamic_mixing = bool(dynamic_mixing)
        self.speed_factors = tuple(float(s) for s in speed_factors) if speed_perturb else None
        self.seed = int(seed)
        self.max_retries = max_retries
        self.examples, problems = load_separation_manifest(
            manifest_filepath,
            num_spks=self.num_spks,
            input_key=input_key,
            target_key=target_key,
            min_duration=min_duration,
            max_duration=max_duration,
            report=self.bad_audio,
        )
        self.manifest_problems = problems
        if not self.examples:
            raise ValueError(f"no usable entries in {manifest_filepath} ({self.bad_audio.summary()})")
        # shared memory: worker processes read the epoch the main process sets
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()
        self._reported: set = set()  # per process: items (dynamic mixing: source files) already reported
        self.mixer = None  # a DynamicMixer (files) or StreamingMixer (a sharded source pool)
        if self.dynamic_mixing:
            options = mixing_options_from_config(
                {"dynamic_mixing_levels": dynamic_mixing_levels, "source_pool": source_pool,
                 "source_pool_speaker_key": source_pool_speaker_key, "speaker_id_regex": speaker_id_regex,
                 "dynamic_mixing_speakers": dynamic_mixing_speakers, "dynamic_mixing_buffer": dynamic_mixing_buffer},
                self.num_spks, self.sample_rate, self.segment_frames, self.speed_factors, global_rank, world_size)
            own = [(ex.target_filepaths, ex.speaker_ids, ex.input_filepath) for ex in self.examples]
            self.mixer = build_mixer(options, own_sources=None if source_pool else own, report=self.bad_audio)

    # a module-level function (picklable for spawn-started DataLoader workers)
    collate_fn = staticmethod(collate_separation_batch)

    @property
    def on_bad_audio(self) -> str:
        """``'skip'`` or ``'error'``: the policy of :attr:`bad_audio` (settable)."""
        return self.bad_audio.on_bad_audio

    @on_bad_audio.setter
    def on_bad_audio(self, value: str) -> None:
        self.bad_audio.on_bad_audio = get_on_bad_audio({"on_bad_audio": value})

    # ---- epoch / randomness -------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose crops/mixtures the items are drawn from (visible to workers)."""
        self._epoch.fill_(int(epoch))

    @property
    def epoch(self) -> int:
        return int(self._epoch.item())

    def _rng(self, index: int, attempt: int = 0) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index, attempt])

    def __len__(self) -> int:
        return len(self.examples)

    # ---- loading ------------------------------------------------------------------------------
    def _load_static(self, ex: SeparationExample, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
        paths = [ex.input_filepath] + ex.target_filepaths
        lengths = []
        for p in paths:
            frames, rate, channels = read_audio_info(p)
            if rate != self.sample_rate:
                raise BadAudioError(p, f"sample rate {rate} Hz, expected {self.sample_rate} Hz")
            if channels != 1:
                raise BadAudioError(p, f"{channels} channels, expected mono")
            lengths.append(frames)
        if len(set(lengths)) != 1:
            detail = ", ".join(f"{os.path.basename(p)}={n}" for p, n in zip(paths, lengths))
            raise BadAudioError(ex.input_filepath, f"mixture and sources differ in length ({detail})")
        if lengths[0] == 0:
            raise BadAudioError(ex.input_filepath, "empty audio")
        speed, start, need, out_len = plan_crop(lengths[0], self.segment_frames, self.speed_factors, rng)
        signals = [apply_crop(read_audio_segment(p, self.sample_rate, start, need), speed, out_len) for p in paths]
        return signals[0], np.stack(signals[1:])

    def _load(self, index: int, attempt: int) -> Tuple[np.ndarray, np.ndarray]:
        rng = self._rng(index, attempt)
        if self.mixer is not None:
            mixture, sources, _ = draw_mixture(self.mixer, rng)
            return mixture, sources
        return self._load_static(self.examples[index], rng)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        current = index
        for attempt in range(self.max_retries + 1):
            try:
                mixture, sources = self._load(current, attempt)
                return {
                    "input_signal": torch.from_numpy(np.ascontiguousarray(mixture, dtype=np.float32)),
                    "target_signal": torch.from_numpy(np.ascontiguousarray(sources, dtype=np.float32)),
                    "index": current,
                }
            except BadAudioError as e:
                # dynamic mixing: the bad file is a source of the pool; it is dropped and a new mixture drawn.
                # Otherwise the item is replaced by the next one not known to be bad.
                key = e.path if self.mixer is not None else current
                if key not in self._reported or self.on_bad_audio == "error":
                    where = self._where_of_path(e.path) if self.mixer is not None else self.examples[current].where
                    stage = "load (dynamic mixing source)" if self.mixer is not None else "load"
                    self.bad_audio.add(e.path, e.reason, where, stage)  # raises under on_bad_audio='error'
                    self._reported.add(key)
                if self.mixer is not None:
                    self.mixer.exclude(e.path)
                else:
                    current = self._replacement_index(current)
        raise RuntimeError(
            f"separation dataset: {self.max_retries + 1} bad items in a row around index {index} "
            f"({self.bad_audio.summary()})"
        )

    def _replacement_index(self, index: int) -> int:
        n = len(self.examples)
        for step in range(1, n + 1):
            cand = (index + step) % n
            if cand not in self._reported:
                return cand
        raise RuntimeError("separation dataset: every item is bad")

    def _where_of_path(self, path: str) -> str:
        for ex in self.examples:
            if path == ex.input_filepath or path in ex.target_filepaths:
                return ex.where
        return "?"


def set_separation_epoch(dataloader_or_dataset: Any, epoch: int) -> bool:
    """Call ``set_epoch`` on a separation dataset (manifest or tarred), directly or inside a DataLoader; returns
    whether it did (lhotse's stream has no epochs)."""
    ds = getattr(dataloader_or_dataset, "dataset", dataloader_or_dataset)
    if callable(getattr(ds, "set_epoch", None)) and hasattr(ds, "num_spks"):
        ds.set_epoch(epoch)
        return True
    return False


def config_dict(config: Any) -> Dict[str, Any]:
    if isinstance(config, Mapping) and not hasattr(config, "_metadata"):
        return dict(config)
    from omegaconf import OmegaConf

    return OmegaConf.to_container(config, resolve=True)


def get_separation_dataset_from_config(config: Any, global_rank: int = 0, world_size: int = 1) -> SeparationDataset:
    """Build a :class:`SeparationDataset` from a ``train_ds``/``validation_ds``/``test_ds`` config (dict or DictConfig).
    ``global_rank``/``world_size`` choose this rank's shards of a sharded ``source_pool``.

    The collate function is ``dataset.collate_fn`` (= :func:`collate_separation_batch`).
    """
    cfg = config_dict(config)
    for key in ("manifest_filepath", "sample_rate"):
        if cfg.get(key) is None:
            raise ValueError(f"separation dataset config needs '{key}'")
    return SeparationDataset(
        manifest_filepath=cfg["manifest_filepath"],
        sample_rate=cfg["sample_rate"],
        num_spks=cfg.get("num_spks", 2),
        segment_seconds=cfg.get("segment_seconds"),
        dynamic_mixing=bool(cfg.get("dynamic_mixing", False)),
        speed_perturb=bool(cfg.get("speed_perturb", False)),
        speed_factors=cfg.get("speed_factors") or DEFAULT_SPEED_FACTORS,
        min_duration=cfg.get("min_duration"),
        max_duration=cfg.get("max_duration"),
        on_bad_audio=get_on_bad_audio(cfg),
        seed=cfg.get("seed", 0) or 0,
        input_key=cfg.get("input_key") or DEFAULT_INPUT_KEY,
        target_key=cfg.get("target_key") or DEFAULT_TARGET_KEY,
        dynamic_mixing_levels=cfg.get("dynamic_mixing_levels"),
        source_pool=cfg.get("source_pool"),
        source_pool_speaker_key=cfg.get("source_pool_speaker_key"),
        speaker_id_regex=cfg.get("speaker_id_regex"),
        dynamic_mixing_speakers=cfg.get("dynamic_mixing_speakers") or "auto",
        dynamic_mixing_buffer=cfg.get("dynamic_mixing_buffer"),
        global_rank=global_rank,
        world_size=world_size,
    )
