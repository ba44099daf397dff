"""Dynamic mixing for speech separation training: new mixtures drawn on the fly from single-speaker sources.

The recipe follows SpeechBrain's WSJ0-2mix/3mix dynamic mixing (recipes/WSJ0Mix/separation), read
and re-written here, with its numbers:

1. ``num_spks`` *distinct* speakers are drawn without replacement, each with probability proportional
   to its number of utterances; one utterance of each.
2. All sources are cut to a common length ``min(shortest source, segment)``, each at its own random
   offset (only those frames are read from disk).
3. Level: each source is normalised to unit mean absolute amplitude, then scaled to a level in dB.
   The first source's level is drawn from N(-27.43, 2.57) dB, each further source's from
   first + N(-2.51, 2.66) dB; all are clipped to [-45, 0] dB. (SpeechBrain draws Gaussian, not
   uniform, levels: these are the statistics of the original wsj0-2mix levels.)
4. Mixture = sum of the sources; mixture and sources are then scaled together so that the largest
   peak among them is 0.9, which keeps the mixture from clipping and keeps mixture = sum(sources).

Optional speed perturbation (SpeechBrain's SpeedPerturb uses 95/100/105 %): each source gets its own
factor from ``speed_factors``, applied by resampling (:func:`nest_ext.data.audio_io.resample`, soxr) before
the cut.

Randomness comes only from the ``numpy.random.Generator`` passed to :meth:`DynamicMixer.mix`, so the
dataset decides reproducibility (it seeds one generator per (seed, epoch, index)).

Example:
    >>> import numpy as np, soundfile as sf, tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> utts = []
    >>> for spk in ("aaa", "bbb", "ccc"):
    ...     for k in range(2):
    ...         p = os.path.join(d, f"{spk}{k}.wav")
    ...         sf.write(p, np.random.default_rng(k).standard_normal(8000).astype("float32") * 0.1, 8000)
    ...         utts.append(SourceUtterance(p, spk))
    >>> mixer = DynamicMixer(SpeakerPool(utts), num_spks=2, sample_rate=8000, segment_frames=4000)
    >>> mixture, sources, info = mixer.mix(np.random.default_rng(0))
    >>> mixture.shape, sources.shape, len(set(info["speakers"])) == 2, bool(np.allclose(mixture, sources.sum(0), atol=1e-6))
    ((4000,), (2, 4000), True, True)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from nest_ext.data.audio_io import BadAudioError, read_audio_info, read_audio_segment, resample
from nest_ext.data.speaker_ids import speaker_ids_from_filename  # noqa: F401  (its home before speaker_ids.py)

__all__ = [
    "DynamicMixer",
    "SourceUtterance",
    "apply_crop",
    "plan_crop",
    "SpeakerPool",
    "rescale_to_level_db",
    "sample_levels_db",
    "speaker_ids_from_filename",
    "speed_perturb",
]


def sample_levels_db(
    rng: np.random.Generator,
    num_spks: int,
    first_mean: float = -27.43,
    first_std: float = 2.57,
    relative_mean: float = -2.51,
    relative_std: float = 2.66,
    low: float = -45.0,
    high: float = 0.0,
) -> np.ndarray:
    """Per-source levels in dB ``[num_spks]``: first ~ N(first_mean, first_std), others first + N(rel...), clipped."""
    first = float(np.clip(rng.normal(first_mean, first_std), low, high))
    levels = [first] + [float(np.clip(first + rng.normal(relative_mean, relative_std), low, high)) for _ in range(num_spks - 1)]
    return np.asarray(levels, dtype=np.float64)


def rescale_to_level_db(audio: np.ndarray, level_db: float, eps: float = 1e-14) -> np.ndarray:
    """Scale ``audio [T]`` so that its mean absolute amplitude is ``10 ** (level_db / 20)``."""
    return audio * (10.0 ** (level_db / 20.0) / (np.mean(np.abs(audio)) + eps))


def speed_perturb(audio: np.ndarray, factor: float) -> np.ndarray:
    """Play ``audio [T]`` ``factor`` times faster (pitch changes too): ``[ceil(T / factor)]``, by resampling
    from rate ``factor`` to rate 1 (as a rational p/q with q <= 100, so e.g. 1.05 is exactly 21/20)."""
    if factor == 1.0:
        return audio
    ratio = Fraction(factor).limit_denominator(100)
    return resample(audio, ratio.numerator, ratio.denominator)


def plan_crop(total: int, segment_frames: Optional[int], speed_factors: Optional[Sequence[float]],
              rng: np.random.Generator) -> Tuple[float, int, int, int]:
    """Where to cut an example of ``total`` frames: ``(speed, start, frames to read, output length)``; the output
    is at most ``segment_frames`` long (all of it when None) after a speed change drawn from ``speed_factors``.

    >>> plan_crop(8000, 4000, None, np.random.default_rng(0))[2:]
    (4000, 4000)
    """
    speed = float(rng.choice(speed_factors)) if speed_factors else 1.0
    out_len = int(math.floor(total / speed))
    if segment_frames is not None:
        out_len = min(out_len, segment_frames)
    need = min(total, int(math.ceil(out_len * speed)) + 1) if speed != 1.0 else out_len
    start = int(rng.integers(0, total - need + 1))
    return speed, start, need, out_len


def apply_crop(audio: np.ndarray, speed: float, out_len: int) -> np.ndarray:
    """The read frames ``audio`` sped up by ``speed`` and cut or zero-padded to ``out_len`` (rounding: a sample)."""
    audio = speed_perturb(audio, speed)[:out_len]
    if audio.shape[0] < out_len:
        audio = np.pad(audio, (0, out_len - audio.shape[0]))
    return audio


@dataclass
class SourceUtterance:
    """One single-speaker source and its speaker: a file (``path``), or audio held in memory (``audio`` [T],
    e.g. decoded from a shard; ``path`` is then just its unique name). ``num_frames`` is filled in lazily."""

    path: str
    speaker: str
    num_frames: Optional[int] = None
    audio: Optional[np.ndarray] = field(default=None, repr=False, compare=False)


@dataclass
class SpeakerPool:
    """Source utterances grouped by speaker; speakers weighted by their number of utterances.

    Duplicate paths are kept once. Sources known to be bad can be excluded with :meth:`exclude`; a pool fed
    from a stream grows with :meth:`add` and shrinks with :meth:`remove`.
    """

    utterances: Sequence[SourceUtterance]
    by_speaker: Dict[str, List[SourceUtterance]] = field(init=False)

    def __post_init__(self):
        self._paths, self.by_speaker = set(), {}
        for utt in self.utterances:
            self._insert(utt)
        self._refresh()

    def _insert(self, utt: SourceUtterance) -> bool:
        if utt.path in self._paths:
            return False
        self._paths.add(utt.path)
        self.by_speaker.setdefault(utt.speaker, []).append(utt)
        return True

    def _refresh(self):
        # sorted: the draw must not depend on manifest order hashing or dict history
        self.speakers = sorted(s for s, u in self.by_speaker.items() if u)
        counts = np.asarray([len(self.by_speaker[s]) for s in self.speakers], dtype=np.float64)
        self.weights = counts / counts.sum() if len(counts) else counts

    def add(self, utt: SourceUtterance) -> None:
        """Add one source (ignored when its path is already in the pool)."""
        if self._insert(utt):
            self._refresh()

    def remove(self, utt: SourceUtterance) -> None:
        """Take one source (drawn earlier) out of the pool."""
        utts = self.by_speaker.get(utt.speaker, [])
        for i, u in enumerate(utts):
            if u.path == utt.path:
                del utts[i]
                self._paths.discard(utt.path)
                if not utts:
                    del self.by_speaker[utt.speaker]
                self._refresh()
                return

    def exclude(self, path: str) -> None:
        """Drop a source (e.g. unreadable) from the pool."""
        for spk, utts in self.by_speaker.items():
            self.by_speaker[spk] = [u for u in utts if u.path != path]
        self._paths.discard(path)
        self._refresh()

    @property
    def num_utterances(self) -> int:
        return sum(len(u) for u in self.by_speaker.values())


class DynamicMixer:
    """Draws a fresh mixture of ``num_spks`` distinct speakers (see the module docstring for the recipe).

    Args:
        pool: the source utterances with speakers.
        num_spks: sources per mixture.
        sample_rate: every source must have this rate (else :class:`BadAudioError`).
        segment_frames: cut length; ``None`` = the shortest chosen source.
        speed_factors: candidate speed factors per source (e.g. ``(0.95, 1.0, 1.05)``); ``None`` = off.
        level_params: overrides for :func:`sample_levels_db` keyword arguments.
        peak: the largest absolute sample of mixture and sources after renormalisation.
        reader: ``(path, sample_rate, start, frames) -> [T]``, soundfile by default (in-memory sources are
            sliced instead).
        check_speakers: fail at once when the pool has fewer than ``num_spks`` speakers (off for a pool that a
            stream fills later).

    ``mix(rng)`` returns ``mixture [T]`` float32, ``sources [num_spks, T]`` float32 and an info dict
    (``paths``, ``speakers``, ``levels_db``, ``speeds``, ``offsets``, and the drawn ``utterances``).
    """

    def __init__(
        self,
        pool: SpeakerPool,
        num_spks: int,
        sample_rate: int,
        segment_frames: Optional[int] = None,
        speed_factors: Optional[Sequence[float]] = None,
        level_params: Optional[dict] = None,
        peak: float = 0.9,
        reader: Callable[..., np.ndarray] = read_audio_segment,
        check_speakers: bool = True,
    ):
        if check_speakers and len(pool.speakers) < num_spks:
            raise ValueError(
                f"dynamic mixing needs at least {num_spks} distinct speakers, the source pool has "
                f"{len(pool.speakers)} ({pool.num_utterances} utterances)"
            )
        self.pool = pool
        self.num_spks = num_spks
        self.sample_rate = sample_rate
        self.segment_frames = segment_frames
        self.speed_factors = tuple(speed_factors) if speed_factors else None
        self.level_params = dict(level_params or {})
        self.peak = peak
        self.reader = reader

    def _num_frames(self, utt: SourceUtterance) -> int:
        if utt.num_frames is None and utt.audio is not None:
            utt.num_frames = int(utt.audio.shape[0])
        if utt.num_frames is None:
            frames, rate, _ = read_audio_info(utt.path)
            if rate != self.sample_rate:
                raise BadAudioError(utt.path, f"sample rate {rate} Hz, expected {self.sample_rate} Hz")
            utt.num_frames = frames
        return utt.num_frames

    def exclude(self, path: str) -> None:
        """Never draw this source again (e.g. it turned out unreadable)."""
        self.pool.exclude(path)

    def mix(self, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray, dict]:
        spk_idx = rng.choice(len(self.pool.speakers), size=self.num_spks, replace=False, p=self.pool.weights)
        speakers = [self.pool.speakers[i] for i in spk_idx]
        utts = [self.pool.by_speaker[s][rng.integers(len(self.pool.by_speaker[s]))] for s in speakers]
        speeds = [float(rng.choice(self.speed_factors)) if self.speed_factors else 1.0 for _ in utts]
        # output length each source can give after its speed change
        avail = [int(math.floor(self._num_frames(u) / s)) for u, s in zip(utts, speeds)]
        length = min(avail)
        if self.segment_frames is not None:
            length = min(length, self.segment_frames)
        if length <= 0:
            raise BadAudioError(utts[int(np.argmin(avail))].path, "empty audio")

        sources, offsets = [], []
        for utt, speed in zip(utts, speeds):
            total = self._num_frames(utt)
            need = min(total, int(math.ceil(length * speed)) + 1) if speed != 1.0 else length
            start = int(rng.integers(0, total - need + 1))
            if utt.audio is not None:
                audio = np.asarray(utt.audio[start : start + need], dtype=np.float32)
            else:
                audio = self.reader(utt.path, self.sample_rate, start, need)
            audio = speed_perturb(audio, speed)[:length]
            if audio.shape[0] < length:  # resampling rounding: at most a sample or two
                audio = np.pad(audio, (0, length - audio.shape[0]))
            sources.append(audio.astype(np.float64))
            offsets.append(start)

        levels = sample_levels_db(rng, self.num_spks, **self.level_params)
        stacked = np.stack([rescale_to_level_db(a, lvl) for a, lvl in zip(sources, levels)])
        mixture = stacked.sum(0)
        max_amp = max(np.abs(mixture).max(), np.abs(stacked).max())
        scale = self.peak / max_amp if max_amp > 0 else 1.0
        info = {
            "paths": [u.path for u in utts],
            "speakers": speakers,
            "levels_db": levels.tolist(),
            "speeds": speeds,
            "offsets": offsets,
        }
        info["utterances"] = utts
        return (mixture * scale).astype(np.float32), (stacked * scale).astype(np.float32), info
