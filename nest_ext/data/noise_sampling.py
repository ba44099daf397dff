"""Noise sampling for NEST: NeMo's ``load_noise_audio`` / ``sample_noise`` with its emptiness defect fixed.

NeMo 3.0.0 (``nemo.collections.asr.data.ssl_dataset``) re-draws a noise segment while the *signed sum*
of its samples is <= 0, up to ``max_trial`` = 100 times, and adds white noise only when the final sum is
exactly 0. Zero-mean noise is thus read ~2 times per item and noise with a negative DC offset 100 times;
an all-zero file is read 100 times before white noise is added. Here:

- a segment is empty only when it is silent (mean energy below ``SILENCE_ENERGY``);
- each item reads one segment, once; DC-offset noise is used as it is;
- a silent segment gets NeMo's white noise (``WhiteNoisePerturbation``) straight away, without re-reads;
- ``max_trial`` retries only reads that *fail* (an unreadable file), with a warning naming the file;
- only the needed frames are read (``soundfile`` seek + frames), also when the manifest has no
  ``duration``; per-file headers (frames, rate, channels) are cached, and a file that failed all retries
  is remembered so later picks fail fast.

Random draws follow NeMo's order (``np.random.randint`` for the file, ``np.random.uniform`` for the offset,
``WhiteNoisePerturbation``'s draws), so with noise that NeMo reads once our items equal NeMo's; for an
all-silent segment the ``max_trial - 1`` offsets NeMo would have drawn are drawn (not read), so the random
stream, and with it every later item, still matches NeMo's. See docs/parity.md (section data).

Example::

    >>> import numpy as np, soundfile as sf, tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), 'noise.wav')
    >>> sf.write(p, (0.1 * np.random.randn(32000) - 0.01).astype('float32'), 16000)  # DC offset -0.01
    >>> noise, noise_len = load_noise_audio({'audio_filepath': p, 'duration': 2.0}, 16000, max_audio_len=8000)
    >>> noise.shape, int(noise_len)     # noise: [max_audio_len]
    (torch.Size([8000]), 8000)
"""
from __future__ import annotations

import logging
import math
import threading
from typing import Any, Dict, List, Optional, Union

import numpy as np
import soundfile as sf
import torch

from nest_ext.data.audio_io import AudioInfo, BadAudioError, read_audio_info

logger = logging.getLogger(__name__)

__all__ = [
    "SILENCE_ENERGY",
    "cached_audio_info",
    "clear_audio_info_cache",
    "is_silent",
    "load_noise_audio",
    "mark_unreadable",
    "prime_audio_info",
    "sample_noise",
]

# Mean energy (mean of squares) below which a segment counts as silent: -200 dBFS. One 16-bit LSB in a
# 10 s segment is still ~-170 dB, so only digital silence (or denormal dust) is below it.
SILENCE_ENERGY = 1e-20

# Extra source frames read past the needed span when resampling, so the resampler's edge does not touch
# the samples we keep (only used when the manifest gives no duration and the rates differ).
_RESAMPLE_MARGIN_S = 0.05

_INFO_CACHE: Dict[str, Union[AudioInfo, str]] = {}
_CACHE_LOCK = threading.Lock()


def cached_audio_info(path: str) -> AudioInfo:
    """:func:`~nest_ext.data.audio_io.read_audio_info` of ``path``, cached per process (noise files are read
    again and again); raises ``BadAudioError`` if it is, or was found, unreadable."""
    cached = _INFO_CACHE.get(path)
    if cached is None:
        # Not cached on failure: a missing file may appear later (a network mount that comes back).
        cached = read_audio_info(path)
        with _CACHE_LOCK:
            _INFO_CACHE[path] = cached
    if isinstance(cached, str):
        raise BadAudioError(path, f"known unreadable ({cached})")
    return cached


def mark_unreadable(path: str, reason: str):
    """Remember that ``path`` cannot be read, so later picks fail without retrying."""
    with _CACHE_LOCK:
        _INFO_CACHE[path] = reason


def prime_audio_info(path: str, info: Union[AudioInfo, str]):
    """Store a header found elsewhere (the start-up check), so workers need not read it again."""
    with _CACHE_LOCK:
        _INFO_CACHE[path] = info


def clear_audio_info_cache():
    """Forget all cached headers (tests; or after files on disk changed)."""
    with _CACHE_LOCK:
        _INFO_CACHE.clear()


def is_silent(samples: np.ndarray, threshold: float = SILENCE_ENERGY) -> bool:
    """True when the mean energy of ``samples`` is below ``threshold`` (an empty array is silent)."""
    samples = np.asarray(samples)
    if samples.size == 0:
        return True
    peak = float(np.max(np.abs(samples)))
    # mean(x^2) lies in [peak^2 / N, peak^2]: decide from the peak when possible (no BLAS call: np.dot
    # spends milliseconds waking BLAS threads on a busy machine)
    if peak * peak < threshold:
        return True
    if peak * peak >= threshold * samples.size:
        return False
    return float(np.mean(np.square(samples, dtype=np.float64))) < threshold


def _read_segment(path: str, sample_rate: int, offset: Optional[float], duration: Optional[float], max_len=None):
    """Read ``duration`` s from ``offset`` s of ``path`` into an AudioSegment at ``sample_rate``.

    Frame arithmetic is NeMo's ``AudioSegment.from_file`` (``int(offset * sr)``, ``int(duration * sr)``)
    so the samples are the same. With ``duration`` None, only the frames for ``max_len`` output samples
    are read (NeMo decodes the whole file and then keeps its first ``max_len`` samples).
    """
    from nemo.collections.asr.parts.preprocessing.segment import AudioSegment

    info = cached_audio_info(path)
    sr = info.samplerate
    start = int(offset * sr) if offset is not None and offset > 0 else 0
    if duration is not None and duration > 0:
        frames = int(duration * sr)
    elif max_len is not None:
        frames = int(math.ceil(max_len * sr / sample_rate))
        if sr != sample_rate:
            frames += int(_RESAMPLE_MARGIN_S * sr)
    else:
        frames = -1
    if 0 < info.frames <= start:
        # The manifest's duration/offset runs past the file (NeMo's seek fails here); keep the last span
        # that exists rather than drop the file.
        logger.warning(
            f"Noise file {path}: offset {offset:.3f} s is past its end ({info.frames / sr:.3f} s); "
            f"the manifest's duration is wrong. Using the end of the file."
        )
        start = max(0, info.frames - (frames if frames > 0 else info.frames))
    with sf.SoundFile(path, "r") as f:
        if start > 0:
            f.seek(start)
        samples = f.read(frames, dtype="float32")
    # Multi-channel noise is averaged to mono (NeMo keeps [T, C], which its collate cannot stack).
    channel_selector = "average" if samples.ndim == 2 else None
    return AudioSegment(samples, sr, target_sr=sample_rate, channel_selector=channel_selector)


def _read_with_retries(path, sample_rate, offset, duration, max_len, max_trial):
    """``_read_segment`` retried up to ``max_trial`` times on failure (same offset: no random draws, so the
    random stream stays NeMo's); warns naming the file; marks it unreadable when all attempts fail."""
    attempts = max(1, int(max_trial))
    last = None
    for attempt in range(1, attempts + 1):
        try:
            return _read_segment(path, sample_rate, offset, duration, max_len)
        except BadAudioError as e:
            if e.reason.startswith("known unreadable"):
                raise  # it failed all its retries before: fail fast
            last = e
        except Exception as e:  # libsndfile / OS errors while reading data
            last = e
        if attempt == 1 and attempts > 1:
            logger.warning(f"Could not read noise file {path} ({last}); retrying up to {attempts - 1} times.")
    mark_unreadable(path, str(last))
    raise BadAudioError(path, f"unreadable after {attempts} attempt(s): {last}")


def load_noise_audio(
    sample: Dict[str, Any],
    sample_rate: int,
    max_audio_len: Optional[int] = None,
    pad_to_max: bool = True,
    min_white_noise_db: int = -90,
    max_white_noise_db: int = -46,
    max_trial: int = 100,
):
    """Load one noise segment for a noise-manifest entry; white noise if the segment is silent.

    Same signature and outputs as NeMo's ``load_noise_audio``; see the module docstring for what differs.

    Args:
        sample: a noise-manifest entry (``audio_filepath``, optional ``duration`` and ``offset`` in s).
        sample_rate: target sample rate.
        max_audio_len: number of samples wanted; a random segment of that length is taken when the entry
            is longer.
        pad_to_max: zero-pad (or cut) the output to ``max_audio_len``.
        min_white_noise_db, max_white_noise_db: level range of the white noise for silent segments.
        max_trial: attempts to read a file whose reads fail (a warning names the file).

    Returns:
        noise: float tensor [max_audio_len] (or [T] without ``max_audio_len``/``pad_to_max``)
        noise_len: long scalar tensor, number of valid samples.

    Raises:
        BadAudioError: the file could not be read in ``max_trial`` attempts.
    """
    from nemo.collections.asr.parts.preprocessing.perturb import WhiteNoisePerturbation

    path = sample["audio_filepath"]
    max_dur = None if max_audio_len is None else max_audio_len / sample_rate
    duration = sample.get("duration", None)
    offset = sample.get("offset", 0.0)
    drawn = None
    if max_dur is not None and duration is not None and duration > max_dur:
        # Same draw as NeMo. NeMo then ignores the entry's offset; we add it (0 for whole-file entries).
        drawn = np.random.uniform(0, duration - max_dur)
        offset = (offset or 0.0) + drawn
        segment = _read_with_retries(path, sample_rate, offset, max_dur, max_audio_len, max_trial)
    else:
        max_len = max_audio_len if pad_to_max else None
        segment = _read_with_retries(path, sample_rate, offset, duration, max_len, max_trial)

    if is_silent(segment.samples):
        if drawn is not None and max_trial > 1:
            # NeMo would re-draw (and re-read) max_trial - 1 more offsets of this silent noise before adding
            # white noise. Draw them without reading, so later items keep NeMo's random stream.
            np.random.uniform(0, duration - max_dur, size=max_trial - 1)
        logger.warning(
            f"Noise segment of {path} at offset={offset}, duration={max_dur} is silent; adding white noise."
        )
        WhiteNoisePerturbation(min_level=min_white_noise_db, max_level=max_white_noise_db).perturb(segment)

    noise = torch.as_tensor(np.ascontiguousarray(segment.samples), dtype=torch.float)
    noise_len = torch.tensor(noise.size(0)).long()
    if max_audio_len is not None and pad_to_max:
        if noise.size(0) < max_audio_len:
            noise = torch.nn.functional.pad(noise, (0, max_audio_len - noise.size(0)))
        else:
            noise = noise[:max_audio_len]
            noise_len = torch.tensor(max_audio_len).long()
    return noise, noise_len


def sample_noise(noise_data: List[Dict], sample_rate: int, max_audio_len: int | None = None, max_trial: int = 20):
    """Pick a random noise-manifest entry and load a segment of it (NeMo's ``sample_noise`` signature).

    An entry that cannot be read is reported by path and another is picked, up to ``max_trial`` picks;
    then zero noise is returned with a warning (as NeMo does). With no noise data, zero noise.

    Returns:
        noise: float tensor [max_audio_len]; noise_len: long scalar tensor.

    Example::

        >>> n, l = sample_noise([], 16000, 4000)
        >>> n.shape, int(l)
        (torch.Size([4000]), 4000)
    """
    zeros_len = 0 if max_audio_len is None else int(max_audio_len)
    if len(noise_data) == 0:
        return torch.zeros(zeros_len).float(), torch.tensor(zeros_len).long()
    for cnt in range(1, max_trial + 1):
        noise_sample = noise_data[np.random.randint(len(noise_data))]
        try:
            return load_noise_audio(noise_sample, sample_rate, max_audio_len)
        except Exception as e:
            logger.warning(
                f"Could not load noise file {noise_sample.get('audio_filepath')} ({e}); "
                f"picking another noise file ({cnt}/{max_trial})."
            )
    logger.warning(f"Failed to load noise audio after {max_trial} attempts, returning zero noise.")
    return torch.zeros(zeros_len).float(), torch.tensor(zeros_len).long()
