"""Speech restoration dataset: (degraded, clean) pairs from NeMo audio-to-audio manifests, or clean speech
degraded on the fly.

Two modes (``model.train_ds.degrade_on_the_fly``):

* **pairs** (default): NeMo audio-to-audio manifest lines ``{"input_filepath": degraded.wav, "target_filepath":
  clean.wav, "duration": ...}`` (relative paths against the manifest's folder), both files mono at the model's
  rate and of equal length, as the preparation tool writes them. A random crop of ``segment_seconds`` takes
  the same span of both.
* **on the fly**: a manifest of clean speech only (``clean_key``, default ``audio_filepath``, as in ASR
  manifests; any sample rate, resampled); each item is a random crop degraded by a
  :class:`~nest_ext.data.degradations.DegradationChain` built from ``degradations`` (a list of steps, a YAML
  path, or null for the default chain).

Items, batches, crops, the epoch (``set_epoch``), seeds and bad-audio handling (``on_bad_audio``: skip with a
warning naming file and manifest line, or error) are those of
:class:`~nest_ext.data.separation_dataset.SeparationDataset` with one target: batches are dicts
``input_signal [B, T]`` (degraded), ``input_length [B]``, ``target_signal [B, 1, T]`` (clean), ``target_length``,
which NeMo's ``AudioToAudioModel._parse_batch`` reads. With a fixed ``seed`` and epoch, item ``i`` is the same
in every run, process and worker.

Example:
    >>> import numpy as np, soundfile as sf, tempfile, os, json
    >>> from nest_ext.cli.synth import speech_like
    >>> d = tempfile.mkdtemp()
    >>> sf.write(os.path.join(d, "a.wav"), speech_like(1.0, 22050, seed=0), 22050)    # another rate: resampled
    >>> with open(os.path.join(d, "clean.json"), "w") as f: _ = f.write(json.dumps({"audio_filepath": "a.wav", "duration": 1.0}))
    >>> ds = get_restoration_dataset_from_config({"manifest_filepath": os.path.join(d, "clean.json"),
    ...     "sample_rate": 16000, "segment_seconds": 0.5, "degrade_on_the_fly": True,
    ...     "degradations": [{"type": "clipping", "prob": 1.0}]})
    >>> batch = ds.collate_fn([ds[0]])
    >>> tuple(batch["input_signal"].shape), tuple(batch["target_signal"].shape)
    ((1, 8000), (1, 1, 8000))
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional, Sequence, Union

import numpy as np

from nest_ext.data.degradations import DegradationChain, _read_audio
from nest_ext.data.audio_io import read_audio_info
from nest_ext.data.separation_dataset import DEFAULT_INPUT_KEY, DEFAULT_TARGET_KEY, SeparationDataset, config_dict

__all__ = ["RestorationDataset", "get_restoration_dataset_from_config"]

DEFAULT_CLEAN_KEY = "audio_filepath"
_CONFIG_KEYS = (
    "manifest_filepath", "sample_rate", "segment_seconds", "degrade_on_the_fly", "degradations", "clean_key",
    "input_key", "target_key", "min_duration", "max_duration", "on_bad_audio", "seed",
)


class RestorationDataset(SeparationDataset):
    """(degraded, clean) pairs; see the module docstring. Args mirror the config keys of
    :func:`get_restoration_dataset_from_config`."""

    def __init__(
        self,
        manifest_filepath: Union[str, Sequence[str]],
        sample_rate: int,
        segment_seconds: Optional[float] = None,
        degrade_on_the_fly: bool = False,
        degradations: Any = None,
        clean_key: str = DEFAULT_CLEAN_KEY,
        input_key: str = DEFAULT_INPUT_KEY,
        target_key: str = DEFAULT_TARGET_KEY,
        **kwargs,
    ):
        self.degrade_on_the_fly = bool(degrade_on_the_fly)
        if self.degrade_on_the_fly:
            input_key = target_key = clean_key  # one file per line: the clean speech
        super().__init__(
            manifest_filepath, sample_rate, num_spks=1, segment_seconds=segment_seconds, dynamic_mixing=False,
            speed_perturb=False, input_key=input_key, target_key=target_key, **kwargs,
        )
        self.chain = DegradationChain.from_spec(degradations) if self.degrade_on_the_fly else None

    def _load(self, index: int, attempt: int):
        if self.chain is None:
            return super()._load(index, attempt)
        rng = self._rng(index, attempt)
        clean = self._clean_crop(self.examples[index].target_filepaths[0], rng)
        degraded, _ = self.chain.apply(clean, self.sample_rate, rng)
        return degraded, clean[None]

    def _clean_crop(self, path: str, rng: np.random.Generator) -> np.ndarray:
        """A random ``segment_seconds`` crop (the whole file when shorter or unset) at the dataset's rate."""
        frames, rate, _ = read_audio_info(path)
        if self.segment_frames is None:
            return _read_audio(path, self.sample_rate)
        need = int(math.ceil(self.segment_frames * rate / self.sample_rate))
        start = int(rng.integers(0, frames - need + 1)) if frames > need else 0
        return _read_audio(path, self.sample_rate, start, min(need, frames))[: self.segment_frames]


def get_restoration_dataset_from_config(config: Any) -> RestorationDataset:
    """Build a :class:`RestorationDataset` from a ``train_ds``/``validation_ds``/``test_ds`` config (dict or DictConfig).

    Keys: ``_CONFIG_KEYS`` (null means the default); DataLoader keys (``batch_size``, ``shuffle``,
    ``num_workers``, ...) are for the caller.
    """
    cfg = {key: value for key, value in config_dict(config).items() if key in _CONFIG_KEYS and value is not None}
    for key in ("manifest_filepath", "sample_rate"):
        if key not in cfg:
            raise ValueError(f"restoration dataset config needs '{key}'")
    return RestorationDataset(**cfg)
