"""Audio file I/O for nest_ext: headers, segment reads, whole-file loads and the one resampler.

Every reader raises the one :class:`BadAudioError` (path, reason, where it was listed) when a file cannot be
used, so one ``except BadAudioError`` catches the failures of all of them. Reading is soundfile's
(libsndfile); resampling is soxr at "HQ" quality, which is what ``librosa.resample`` uses by default, so
:func:`resample` gives librosa's numbers without importing librosa (its import takes seconds).

NeMo's datasets keep NeMo's own reader (``AudioSegment``) where our items must equal NeMo's.

Shapes: ``T`` samples; ``C`` channels; float32 samples in [-1, 1] as soundfile decodes them.

- :func:`read_audio_info` -> :class:`AudioInfo` ``(frames, samplerate, channels)``, from the header only;
- :func:`read_audio_segment` -> ``[frames]`` of a mono file at an expected rate (only those frames are read);
- :func:`load_audio` -> ``[T]``, mono, one chosen channel or a mixdown, whole or a segment, resampled to the asked rate;
- :func:`resample` ``[T]`` or ``[T, C]`` -> ``[ceil(T * target_sr / orig_sr)]`` (``[.., C]``).

Example::

    >>> import numpy as np, soundfile as sf, tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> p = os.path.join(d, 'a.wav')
    >>> sf.write(p, np.zeros((1600, 2), dtype='float32'), 16000)
    >>> read_audio_info(p)
    AudioInfo(frames=1600, samplerate=16000, channels=2)
    >>> load_audio(p, 8000, channel=1).shape            # channel 1, 16 kHz -> 8 kHz
    (800,)
    >>> sf.write(p, np.zeros(1600, dtype='float32'), 16000)
    >>> read_audio_segment(p, 16000, start=100, frames=400).shape
    (400,)
    >>> for read in (lambda: read_audio_segment(p, 8000), lambda: load_audio(os.path.join(d, 'gone.wav'), 8000)):
    ...     try:
    ...         read()
    ...     except BadAudioError as e:      # one error type for every reader
    ...         print(os.path.basename(e.path), '|', e.reason)
    a.wav | sample rate 16000 Hz, expected 8000 Hz
    gone.wav | missing file
"""
from __future__ import annotations

import math
import os
from collections import namedtuple
from fractions import Fraction
from typing import Optional

import numpy as np
import soundfile as sf

__all__ = [
    "AudioInfo",
    "BadAudioError",
    "load_audio",
    "read_audio_info",
    "read_audio_segment",
    "resample",
]

# soxr's "HQ" is librosa's default (res_type="soxr_hq"): band-limited, fast, 20-bit precision.
RESAMPLE_QUALITY = "HQ"

AudioInfo = namedtuple("AudioInfo", "frames samplerate channels")


class BadAudioError(RuntimeError, ValueError):
    """An audio file that cannot be used; the message names the file, the reason and where it was listed.

    Both a ``RuntimeError`` (what the NEST datasets raised) and a ``ValueError`` (what the separation
    loader raised), so code written against either keeps catching it.

    Attributes:
        path: the file (or a description, e.g. a tar member).
        reason: why it cannot be used, e.g. ``'missing file'``.
        where: where it was listed (``manifest:line``), or None.
    """

    def __init__(self, path, reason: str, where: Optional[str] = None):
        self.path = path
        self.reason = reason
        self.where = where
        loc = f" (listed at {where})" if where else ""
        super().__init__(f"bad audio {path}{loc}: {reason}")

    def __reduce__(self):  # picklable with all three fields (errors cross DataLoader worker processes)
        return type(self), (self.path, self.reason, self.where)


def _unreadable(path, err: Exception, what: str) -> BadAudioError:
    """The error for a failed open/read: missing and 0-byte files are named as such, others by the library's
    message (libsndfile reports corrupt headers and unknown formats alike)."""
    if isinstance(path, (str, os.PathLike)):
        try:
            size = os.path.getsize(path)
        except OSError:
            return BadAudioError(path, "missing file")
        if size == 0:
            return BadAudioError(path, "empty file (0 bytes)")
    return BadAudioError(path, f"{what} ({type(err).__name__}: {err})")


def read_audio_info(path: str) -> AudioInfo:
    """Header of an audio file (frames, sample rate, channels) without decoding it.

    Raises:
        BadAudioError: the file is missing, has zero bytes, or its header cannot be read.
        TypeError: ``path`` is not a path (file-like objects, e.g. tar members, are the caller's to read).
    """
    if not isinstance(path, str):
        raise TypeError(f"read_audio_info expects a path, got {type(path)}")
    try:
        info = sf.info(path)
    except Exception as e:  # soundfile raises LibsndfileError/RuntimeError/FileNotFoundError
        raise _unreadable(path, e, "unreadable audio header") from None
    return AudioInfo(int(info.frames), int(info.samplerate), int(info.channels))


def read_audio_segment(path: str, sample_rate: int, start: int = 0, frames: int = -1) -> np.ndarray:
    """Read ``frames`` samples (all when -1) from sample ``start`` of a mono file: float32 ``[frames]``.

    Only the requested frames are read.

    Raises:
        BadAudioError: the file is unreadable, has another sample rate than ``sample_rate`` or more than one
            channel, gives fewer frames than asked (truncated), or holds NaN/Inf samples.
    """
    try:
        with sf.SoundFile(path) as f:
            if f.samplerate != sample_rate:
                raise BadAudioError(path, f"sample rate {f.samplerate} Hz, expected {sample_rate} Hz")
            if f.channels != 1:
                raise BadAudioError(path, f"{f.channels} channels, expected mono")
            if start:
                f.seek(start)
            audio = f.read(frames=frames, dtype="float32", always_2d=False)
    except BadAudioError:
        raise
    except Exception as e:
        raise _unreadable(path, e, "cannot read") from None
    if frames >= 0 and audio.shape[0] != frames:
        raise BadAudioError(path, f"asked for {frames} frames from {start}, file gave {audio.shape[0]} (truncated?)")
    if not np.all(np.isfinite(audio)):
        raise BadAudioError(path, "contains NaN or Inf samples")
    return audio


def load_audio(
    path: str,
    sample_rate: int,
    channel: Optional[int] = None,
    start: int = 0,
    frames: int = -1,
    mixdown: bool = False,
) -> np.ndarray:
    """Read a file (or ``frames`` frames from frame ``start``, counted at the file's own rate; only those are
    read) as float32 ``[T]`` at ``sample_rate`` (resampled with :func:`resample` if needed).

    Multi-channel files are refused unless ``channel`` picks one, or ``mixdown`` averages the channels: a silent
    downmix is rarely what a user wants for separation (a separation of a downmix differs from a separation of
    either microphone), but is the usual reading of clean training speech.

    Raises:
        BadAudioError: the file is missing or unreadable, has no samples, or holds NaN/Inf samples.
        ValueError: a multi-channel file without ``channel`` or ``mixdown``, or a ``channel`` the file does not
            have (the file is fine; the call has to choose).
    """
    if channel is not None and not isinstance(channel, (int, np.integer)):
        raise ValueError(f"channel must be a channel index, got {channel!r}")
    try:
        with sf.SoundFile(path) as f:
            rate = f.samplerate
            if start:
                f.seek(start)
            audio = f.read(frames=frames, dtype="float32", always_2d=True)  # [T, C]
    except Exception as e:
        raise _unreadable(path, e, "cannot read") from None
    channels = audio.shape[1]
    if mixdown and channel is None:
        audio = audio.mean(axis=1)
    else:
        if channel is None:
            if channels != 1:
                raise ValueError(
                    f"{path} has {channels} channels; a single-channel signal is expected. Pick one channel "
                    f"(channel=N in Python, --channel N on the command line), N in 0..{channels - 1}."
                )
            channel = 0
        if not 0 <= channel < channels:
            raise ValueError(f"{path} has {channels} channel(s); channel {channel} does not exist")
        audio = np.ascontiguousarray(audio[:, channel])
    if audio.size == 0:
        raise BadAudioError(path, "contains no samples")
    if not np.all(np.isfinite(audio)):
        raise BadAudioError(path, "contains NaN or Inf samples")
    return resample(audio, rate, sample_rate)


def resample(audio: np.ndarray, orig_sr: float, target_sr: float) -> np.ndarray:
    """Resample ``[T]`` or ``[T, C]`` from ``orig_sr`` to ``target_sr`` with soxr "HQ": float32.

    The output has ``ceil(T * target_sr / orig_sr)`` samples (soxr's own length, cut or zero-padded by one
    sample at most), the length convention of ``librosa.resample`` and ``scipy.signal.resample_poly``; the
    samples equal ``librosa.resample(audio, orig_sr=..., target_sr=...)``. Rates may be any positive
    numbers (a speed change is a resampling from ``factor`` to 1).

    Example::

        >>> resample(np.ones(16001, dtype=np.float32), 16000, 8000).shape
        (8001,)
    """
    audio = np.asarray(audio, dtype=np.float32)
    if orig_sr <= 0 or target_sr <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_sr} -> {target_sr}")
    if orig_sr == target_sr:
        return audio
    length = math.ceil(Fraction(audio.shape[0]) * Fraction(target_sr) / Fraction(orig_sr))  # exact, no float rounding
    if audio.shape[0] == 0:
        return np.zeros((length,) + audio.shape[1:], dtype=np.float32)
    import soxr  # librosa's resampler, installed with it; imported here so that reading alone needs only soundfile

    out = soxr.resample(audio, orig_sr, target_sr, quality=RESAMPLE_QUALITY)
    if out.shape[0] > length:
        out = out[:length]
    elif out.shape[0] < length:
        out = np.pad(out, [(0, length - out.shape[0])] + [(0, 0)] * (out.ndim - 1))
    return np.ascontiguousarray(out, dtype=np.float32)
