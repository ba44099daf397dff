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
* ``speaker_ids`` (optional) is needed by dynamic mixing; when absent it is derived from the
  mixture's file name (wsj0-mix and LibriMix naming, :func:`speaker_ids_from_filename`).
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
    :func:`nest_ext.data.dynamic_mixing.sample_levels_db`). DataLoader keys (``batch_size``,
    ``shuffle``, ``num_workers``, ``pin_memory``) are for the caller.

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

import json
import logging
import math
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from nest_ext.data.audio_io import BadAudioError, read_audio_info, read_audio_segment
from nest_ext.data.bad_audio import BadAudioReport, get_on_bad_audio
from nest_ext.data.dynamic_mixing import (
    DynamicMixer,
    SourceUtterance,
    SpeakerPool,
    speaker_ids_from_filename,
    speed_perturb,
)

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

DEFAULT_INPUT_KEY = "input_filepath"
DEFAULT_TARGET_KEY = "target_filepath"
DEFAULT_SPEED_FACTORS = (0.95, 1.0, 1.05)


@dataclass
class SeparationExample:
    """One manifest line: mixture, its sources, where it came from."""

    input_filepath: str
    target_filepaths: List[str]
    duration: Optional[float]
    speaker_ids: Optional[List[str]]
    manifest: str
    line: int

    @property
    def where(self) -> str:
        return f"{self.manifest}:{self.line}"


def _resolve(path: str, manifest: str) -> str:
    if os.path.isabs(path):
        return path
    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(manifest)), path))


def _manifest_list(manifest_filepath: Union[str, Sequence[str]]) -> List[str]:
    if isinstance(manifest_filepath, str):
        return [p.strip() for p in manifest_filepath.split(",") if p.strip()]
    return [str(p) for p in manifest_filepath]


def load_separation_manifest(
    manifest_filepath: Union[str, Sequence[str]],
    num_spks: Optional[int] = None,
    input_key: str = DEFAULT_INPUT_KEY,
    target_key: str = DEFAULT_TARGET_KEY,
    min_duration: Optional[float] = None,
    max_duration: Optional[float] = None,
    check_files: bool = True,
    on_bad_audio: str = "skip",
    report: Optional[BadAudioReport] = None,
) -> Tuple[List[SeparationExample], List[str]]:
    """Parse manifests into examples; returns ``(examples, problems)``.

    Entries that are malformed, have another number of targets than ``num_spks`` or name missing
    files become problems (``"manifest:line: reason"``) and are left out, or raise ``ValueError``
    when ``on_bad_audio == "error"``. With a ``report``, each problem also goes to it (by file and
    manifest line; it raises ``BadAudioError``, a ``ValueError``, under its own ``'error'`` policy).
    Entries outside ``[min_duration, max_duration]`` are dropped silently (that is filtering, not a problem).
    """
    examples: List[SeparationExample] = []
    problems: List[str] = []

    def problem(where: str, reason: str, files: Optional[str] = None):
        # files: the entry's bad audio files, when it names them; otherwise the manifest line is the problem
        if report is not None:
            report.add(files or manifest, reason, where, "manifest")
        elif on_bad_audio == "error":
            raise ValueError(f"{where}: {reason}" + (f" {files}" if files else ""))
        problems.append(f"{where}: {reason}" + (f" {files}" if files else ""))

    for manifest in _manifest_list(manifest_filepath):
        if not os.path.isfile(manifest):
            raise FileNotFoundError(f"manifest {manifest} does not exist")
        with open(manifest, "r", encoding="utf-8") as f:
            for line_no, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                where = f"{manifest}:{line_no}"
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError as e:
                    problem(where, f"not valid JSON ({e})")
                    continue
                if input_key not in entry or target_key not in entry:
                    problem(where, f"needs keys '{input_key}' and '{target_key}'")
                    continue
                targets = entry[target_key]
                targets = [targets] if isinstance(targets, str) else list(targets)
                if num_spks is not None and len(targets) != num_spks:
                    problem(where, f"{len(targets)} target files, the config says num_spks={num_spks}")
                    continue
                duration = entry.get("duration")
                if duration is not None:
                    if min_duration is not None and duration < min_duration:
                        continue
                    if max_duration is not None and duration > max_duration:
                        continue
                mix = _resolve(entry[input_key], manifest)
                targets = [_resolve(t, manifest) for t in targets]
                if check_files:
                    missing = [p for p in [mix] + targets if not os.path.isfile(p)]
                    if missing:
                        problem(where, "missing file(s)", ", ".join(missing))
                        continue
                speakers = entry.get("speaker_ids")
                if speakers is not None and len(speakers) != len(targets):
                    problem(where, f"{len(speakers)} speaker_ids for {len(targets)} targets")
                    continue
                examples.append(
                    SeparationExample(mix, targets, duration, list(speakers) if speakers else None, manifest, line_no)
                )
    return examples, problems


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
    ):
        # Bad files (in the manifest, or found when loaded) are logged with file and manifest line and
        # counted here; it applies the on_bad_audio policy (and checks its value).
        self.bad_audio = BadAudioReport(on_bad_audio, name=", ".join(_manifest_list(manifest_filepath)), logger=logger)
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
        self.mixer: Optional[DynamicMixer] = None
        if self.dynamic_mixing:
            self.mixer = DynamicMixer(
                self._build_pool(),
                num_spks=self.num_spks,
                sample_rate=self.sample_rate,
                segment_frames=self.segment_frames,
                speed_factors=self.speed_factors,
                level_params=dynamic_mixing_levels,
            )

    # a module-level function (picklable for spawn-started DataLoader workers)
    collate_fn = staticmethod(collate_separation_batch)

    @property
    def on_bad_audio(self) -> str:
        """``'skip'`` or ``'error'``: the policy of :attr:`bad_audio` (settable)."""
        return self.bad_audio.on_bad_audio

    @on_bad_audio.setter
    def on_bad_audio(self, value: str) -> None:
        self.bad_audio.on_bad_audio = get_on_bad_audio({"on_bad_audio": value})

    def _build_pool(self) -> SpeakerPool:
        utts, unknown = [], 0
        for ex in self.examples:
            speakers = ex.speaker_ids or speaker_ids_from_filename(ex.input_filepath, self.num_spks)
            if speakers is None:
                unknown += 1
                continue
            utts.extend(SourceUtterance(path, spk) for path, spk in zip(ex.target_filepaths, speakers))
        if unknown:
            logger.warning(
                "dynamic mixing: %d of %d manifest entries have no speaker_ids and no wsj0/LibriMix file name; "
                "their sources are not used",
                unknown,
                len(self.examples),
            )
        if not utts:
            raise ValueError(
                "dynamic mixing needs speaker IDs: add 'speaker_ids' to the manifest entries "
                "(tools/prepare_separation_data.py writes them)"
            )
        return SpeakerPool(utts)

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
        total = lengths[0]
        if total == 0:
            raise BadAudioError(ex.input_filepath, "empty audio")
        speed = float(rng.choice(self.speed_factors)) if self.speed_factors else 1.0
        out_len = int(math.floor(total / speed))
        if self.segment_frames is not None:
            out_len = min(out_len, self.segment_frames)
        need = min(total, int(math.ceil(out_len * speed)) + 1) if speed != 1.0 else out_len
        start = int(rng.integers(0, total - need + 1))
        signals = []
        for p in paths:
            audio = speed_perturb(read_audio_segment(p, self.sample_rate, start, need), speed)[:out_len]
            if audio.shape[0] < out_len:
                audio = np.pad(audio, (0, out_len - audio.shape[0]))
            signals.append(audio)
        return signals[0], np.stack(signals[1:])

    def _load(self, index: int, attempt: int) -> Tuple[np.ndarray, np.ndarray]:
        rng = self._rng(index, attempt)
        if self.mixer is not None:
            mixture, sources, _ = self.mixer.mix(rng)
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
                    self.mixer.pool.exclude(e.path)
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
    """Call ``set_epoch`` on a separation dataset, directly or inside a DataLoader; returns whether it did."""
    ds = getattr(dataloader_or_dataset, "dataset", dataloader_or_dataset)
    if isinstance(ds, SeparationDataset):
        ds.set_epoch(epoch)
        return True
    return False


def _to_dict(config: Any) -> Dict[str, Any]:
    if isinstance(config, Mapping) and not hasattr(config, "_metadata"):
        return dict(config)
    from omegaconf import OmegaConf

    return OmegaConf.to_container(config, resolve=True)


def get_separation_dataset_from_config(config: Any) -> SeparationDataset:
    """Build a :class:`SeparationDataset` from a ``train_ds``/``validation_ds``/``test_ds`` config (dict or DictConfig).

    The collate function is ``dataset.collate_fn`` (= :func:`collate_separation_batch`).
    """
    cfg = _to_dict(config)
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
    )
