"""Read, fully decode (the integrity check), cut, resample and re-encode one utterance's audio.

A whole WAV/FLAC/OGG/MP3 file that needs no change is stored byte-for-byte; a cut segment (manifest
``offset``/``duration``), resampled audio (``nest_ext.data.audio_io.resample``, the project's one resampler) or
pipe output is re-encoded as WAV with the source's sample type (PCM_16 where WAV cannot hold it).

Example::

    >>> import os, tempfile, numpy as np, soundfile as sf
    >>> from nest_ext.data.packing.inputs import Utterance
    >>> path = os.path.join(tempfile.mkdtemp(), "a.wav")
    >>> sf.write(path, np.zeros(1600, np.float32), 16000, subtype="PCM_16")
    >>> enc = load_utterance(Utterance(utt_id="a", source=path, origin="x"), sample_rate=8000)
    >>> enc.ext, enc.sample_rate, enc.num_samples
    ('wav', 8000, 800)
    >>> load_item((Utterance(utt_id="b", source=path + ".gone", origin="wav.scp:2"), None, None)).reason
    'missing: no such file'
"""
from __future__ import annotations

import io
import os
import re
import subprocess
from typing import Optional, Tuple, Union

import numpy as np
import soundfile as sf

from nest_ext.data.audio_io import resample
from nest_ext.data.packing.inputs import BadItem, Utterance, duration_problem
from nest_ext.data.packing.item import EncodedAudio, ShardItem

# Formats stored byte-for-byte when no resampling/cutting is asked; the member extension must be one
# NeMo's tarred loader maps to its 'audio' field (VALID_FILE_FORMATS in asr/data/audio_to_text.py).
_COPY_FORMATS = {"WAV": "wav", "WAVEX": "wav", "FLAC": "flac", "OGG": "ogg", "MP3": "mp3"}
_ARK_OFFSET = re.compile(r"\.ark:\d+$")


def read_source(utt: Utterance, pipe_timeout: Optional[float]) -> bytes:
    """The bytes of ``utt``'s file, or the stdout of its pipe command; ``ValueError``/``FileNotFoundError``
    with a short reason (``"missing: ..."``, ``"pipe: ..."``) when there are none."""
    if utt.is_pipe:
        try:
            proc = subprocess.run(utt.source, shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  timeout=pipe_timeout)
        except subprocess.TimeoutExpired:
            raise ValueError(f"pipe: command timed out after {pipe_timeout} s")
        if proc.returncode != 0:
            err = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
            raise ValueError(f"pipe: command exited with {proc.returncode}: {err[0][:200]}")
        if not proc.stdout:
            raise ValueError("pipe: command wrote nothing to stdout")
        return proc.stdout
    if _ARK_OFFSET.search(utt.source) and not os.path.exists(utt.source):
        raise ValueError("unsupported: Kaldi archive offsets (file.ark:N) are not read; extract to files first")
    if not os.path.exists(utt.source):
        raise FileNotFoundError("missing: no such file")
    with open(utt.source, "rb") as f:
        return f.read()


def load_utterance(utt: Utterance, sample_rate: Optional[int] = None, pipe_timeout: Optional[float] = 300.0) -> EncodedAudio:
    """Read, fully decode (that is the integrity check), optionally cut and resample one utterance.

    Whole files that need no change are stored byte-for-byte; anything cut, resampled or read from a
    pipe is re-encoded as WAV with the source's sample type (PCM_16 where WAV cannot hold it).
    Raises ``FileNotFoundError``/``ValueError`` with a short reason on bad audio.
    """
    raw = read_source(utt, pipe_timeout)
    try:
        with sf.SoundFile(io.BytesIO(raw)) as f:
            fmt, subtype, sr, channels, frames = f.format, f.subtype, f.samplerate, f.channels, f.frames
            start = int(round(utt.offset * sr))
            n = int(round(utt.duration * sr)) if utt.duration is not None else -1
            # A manifest duration within 10 ms of the file's length means "the whole file" (manifests
            # round durations); anything shorter, or an offset, is a segment to cut out.
            whole = start == 0 and (n < 0 or n >= frames - sr // 100)
            if whole:
                n = -1
            elif start:
                f.seek(min(start, frames))
            dtype = "int16" if subtype == "PCM_16" else "float32"
            audio = f.read(frames=n, dtype=dtype, always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise ValueError(f"unreadable: {getattr(e, 'error_string', e)}")
    if audio.shape[0] == 0:
        raise ValueError("empty: no audio samples")
    if whole and audio.shape[0] != frames:
        raise ValueError(f"truncated: header says {frames} frames, decoded {audio.shape[0]}")
    if not np.all(np.isfinite(audio)):
        raise ValueError("unreadable: audio contains NaN/Inf")
    needs_resample = sample_rate is not None and sample_rate != sr
    if not needs_resample and whole and not utt.is_pipe and fmt in _COPY_FORMATS:
        return EncodedAudio(raw, _COPY_FORMATS[fmt], audio.shape[0], sr, channels)
    if needs_resample:
        audio = resample(audio.astype(np.float32) / (32768.0 if dtype == "int16" else 1.0), sr, sample_rate)
        sr = sample_rate
    out_subtype = subtype if sf.check_format("WAV", subtype) else "PCM_16"
    if audio.dtype != np.int16 and out_subtype.startswith("PCM"):
        # libsndfile wraps around rather than clips out-of-range floats; resampling can overshoot 1.0.
        audio = np.clip(audio, -1.0, 1.0)
    buf = io.BytesIO()
    sf.write(buf, audio, sr, format="WAV", subtype=out_subtype)
    return EncodedAudio(zero_write_time(buf.getvalue()), "wav", audio.shape[0], sr, channels)


def zero_write_time(wav: bytes) -> bytes:
    """libsndfile stamps the time of writing into a float WAV's ``PEAK`` chunk; set it to 0, so the same audio
    gives the same bytes in every run (shards of a split job are written at different times)."""
    pos = 12  # after "RIFF", size, "WAVE"
    while pos + 8 <= len(wav):
        chunk, size = wav[pos : pos + 4], int.from_bytes(wav[pos + 4 : pos + 8], "little")
        if chunk == b"PEAK" and size >= 8:  # version (4 bytes), timestamp (4 bytes), peaks
            return wav[: pos + 12] + bytes(4) + wav[pos + 16 :]
        if chunk == b"data":
            break
        pos += 8 + size + (size & 1)
    return wav


def failure_reason(e: Exception) -> str:
    """The BadItem reason for an exception of :func:`load_utterance` (``"missing: ..."``, ``"unreadable: ..."``)."""
    reason = str(e) if ":" in str(e) else f"unreadable: {e}"
    if isinstance(e, FileNotFoundError) and not str(e).startswith("missing"):
        reason = f"missing: {e}"
    return reason


def load_item(args: Tuple) -> Union[ShardItem, BadItem]:
    """``(utterance, sample_rate, pipe_timeout[, min_duration, max_duration])`` -> the :class:`ShardItem` to
    store, or the :class:`BadItem` saying why it is left out (unreadable, or its decoded length outside the
    duration limits). Runs in worker processes, hence one picklable argument."""
    utt, sample_rate, pipe_timeout, *limits = args
    try:
        enc = load_utterance(utt, sample_rate, pipe_timeout)
    except (OSError, ValueError) as e:
        return BadItem(utt.utt_id, utt.source + (" |" if utt.is_pipe else ""), utt.origin, failure_reason(e))
    problem = duration_problem(enc.num_samples / enc.sample_rate, *limits) if limits else None
    if problem:
        return BadItem(utt.utt_id, utt.source + (" |" if utt.is_pipe else ""), utt.origin, problem)
    return ShardItem(key=utt.member, audio={"audio": enc}, meta={"text": utt.text, **utt.extra},
                     input_id=utt.utt_id)
