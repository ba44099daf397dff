"""Pack a Kaldi data dir (``wav.scp`` + ``text``) or a NeMo manifest into tar shards, crash-safely.

Two output layouts:

* ``nemo`` -- NeMo's tarred-audio convention: ``audio_0.tar ... audio_{N-1}.tar``, one member per
  utterance (``<id>.wav``/``.flac``), ``sharded_manifests/manifest_{i}.json`` (one per shard, the
  layout NeMo's ``shard_manifests=true`` expects), ``tarred_audio_manifest.json`` (entries with
  ``audio_filepath`` = member name, ``duration``, ``text``, ``shard_id``) and ``data.list`` (absolute
  tar paths, one a line, as MooER's loader reads). Train with::

      model.train_ds.is_tarred=true \\
      model.train_ds.tarred_audio_filepaths=DIR/audio__OP_0..N-1_CL_.tar \\
      model.train_ds.manifest_filepath=DIR/tarred_audio_manifest.json

* ``lhotse-shar`` -- lhotse's Shar layout written by lhotse's own ``SharWriter``:
  ``shar/cuts.{i:06d}.jsonl.gz`` + ``shar/recording.{i:06d}.tar``, read with
  ``CutSet.from_shar(in_dir=DIR/shar)`` or with ``fields=json.load(open(DIR/shar_index.json))``. The
  ``shar`` folder holds nothing else, because lhotse takes every file in ``in_dir`` for a field.

Planning: utterances keep their input order; utterance ``k`` of the valid input list goes to shard
``k // shard_size``. The plan depends only on the input text files, so every process of a
``shard_idx/shard_count`` split, and any ``num_workers``, agree on it. Audio that turns out to be
missing or unreadable is left out of its shard (reported by utterance id and path), so a shard can
hold fewer than ``shard_size`` members, never members of another shard. NeMo's tarred loader splits
whole shards over ranks and dataloader workers, so pick ``shard_size`` to give a shard count that is a
multiple of ``world_size x num_workers``.

Audio: every file is decoded in full (the integrity check). A whole WAV/FLAC/OGG/MP3 file that needs
no change is stored byte-for-byte; a cut segment (manifest ``offset``/``duration``), resampled audio
(``sample_rate``, soxr "HQ" -- the resampler librosa uses, installed with NeMo) or pipe output is
re-encoded as WAV with the source's sample type. Member names are the utterance ids with characters
outside ``[\\w-+=,@~]`` (dots above all: WebDataset keys end at the first dot) replaced by ``_``, made
unique with ``_1``, ``_2``...; a changed id is kept in the manifest as ``utt_id``.

Text: Kaldi ``text`` lines are ``UTTID transcript``; an utterance without a line is left out (reported).
``text_norm`` collapses whitespace and lower-cases (NeMo's usual English transcripts are lower case).

Workers: for ``nemo`` (and ``lhotse-shar`` with one worker) ``num_workers`` processes decode/resample
and this process writes, in input order; for ``lhotse-shar`` with several workers each worker writes
whole shards, because lhotse's ``SharWriter`` encodes in the writing process.

Crash safety: every file is written under a hidden temporary name in its final directory and
``os.replace``-d into place. Per shard the order is: drop the old marker, publish the tar, publish the
shard manifest, publish the marker ``.pack_state/shard_{i:06d}.json`` last. A shard counts as complete
only when its marker exists, names the same plan (a hash over the shard's entries and the options that
change bytes) and the sizes of the published files match -- so a kill at any moment leaves at worst a
temporary file (removed by the next run) or a shard without marker (redone). The merged manifest and
``data.list`` are written, also atomically, only once every shard is complete, by whichever process
completes the last one.

Determinism: tar members carry mtime 0, uid/gid 0, empty user/group names and mode 0644, members
appear in input order, worker results are consumed in input order, and gzip headers carry mtime 0,
so the same input gives byte-identical shards for any ``num_workers`` or process split.

Example (tiny, runnable)::

    >>> import os, tempfile, numpy as np, soundfile as sf
    >>> d = tempfile.mkdtemp()
    >>> sf.write(os.path.join(d, "a.wav"), np.zeros(1600, np.float32), 16000)
    >>> with open(os.path.join(d, "wav.scp"), "w") as f:
    ...     _ = f.write(f"utt1 {d}/a.wav\\n")
    >>> s = pack_shards(wav_scp=os.path.join(d, "wav.scp"), out_dir=os.path.join(d, "out"), progress=False)
    >>> s.num_written, sorted(os.listdir(os.path.join(d, "out")))[:2]
    (1, ['.pack_state', 'audio_0.tar'])
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import glob
import gzip
import hashlib
import io
import json
import logging
import math
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from collections import deque
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import soundfile as sf

from nest_ext.parts.atomic_io import fsync_dir

logger = logging.getLogger("nest_ext.pack_shards")

FORMATS = ("nemo", "lhotse-shar")
STATE_DIR = ".pack_state"
NEMO_MANIFEST = "tarred_audio_manifest.json"
DATA_LIST = "data.list"
SUMMARY = "pack_summary.json"
SHAR_INDEX = "shar_index.json"
# Formats stored byte-for-byte when no resampling/cutting is asked; the member extension must be one
# NeMo's tarred loader maps to its 'audio' field (VALID_FILE_FORMATS in asr/data/audio_to_text.py).
_COPY_FORMATS = {"WAV": "wav", "WAVEX": "wav", "FLAC": "flac", "OGG": "ogg", "MP3": "mp3"}
_ARK_OFFSET = re.compile(r"\.ark:\d+$")
# WebDataset splits a member name at its first dot and NeMo maps members by basename, so ids used as
# member names may not contain dots, slashes or whitespace.
_UNSAFE = re.compile(r"[^\w\-+=,@~]", re.UNICODE)


class PackingError(RuntimeError):
    """Bad input or a failed run, with a message naming the file / line / utterance."""


@dataclasses.dataclass
class Utterance:
    """One planned utterance; ``member`` is its unique name (without extension) inside the shards."""

    utt_id: str
    source: str  # file path, or the shell command of a Kaldi pipe entry (without the trailing '|')
    origin: str  # "wav.scp:12" -- where it came from, for messages
    is_pipe: bool = False
    text: str = ""
    offset: float = 0.0
    duration: Optional[float] = None
    extra: Dict = dataclasses.field(default_factory=dict)
    member: str = ""


@dataclasses.dataclass
class BadItem:
    """An input entry left out, with the reason."""

    utt_id: str
    path: str
    origin: str
    reason: str


@dataclasses.dataclass
class PackSummary:
    """What a run did. ``bad`` lists every left-out entry (planning problems and unreadable audio)."""

    out_dir: str
    format: str
    num_input: int = 0
    num_planned: int = 0
    num_shards: int = 0
    num_written: int = 0
    duration_s: float = 0.0
    shards_done: List[int] = dataclasses.field(default_factory=list)
    shards_skipped: List[int] = dataclasses.field(default_factory=list)
    complete: bool = False
    bad: List[BadItem] = dataclasses.field(default_factory=list)
    elapsed_s: float = 0.0
    bytes_written: int = 0

    @property
    def num_bad(self) -> int:
        return len(self.bad)

    def describe(self) -> str:
        reasons: Dict[str, int] = {}
        for b in self.bad:
            key = b.reason.split(":")[0]
            reasons[key] = reasons.get(key, 0) + 1
        rate = self.num_written / self.elapsed_s if self.elapsed_s > 0 else float("nan")
        lines = [
            f"packed {self.num_written} utterances ({self.duration_s / 3600:.3f} h) into {self.out_dir} "
            f"[{self.format}]; shards written {len(self.shards_done)}, kept {len(self.shards_skipped)}, "
            f"total {self.num_shards}; {self.elapsed_s:.1f} s, {rate:.1f} utt/s",
            f"left out: {self.num_bad}" + (f" ({', '.join(f'{k}: {v}' for k, v in sorted(reasons.items()))})" if reasons else ""),
            "complete: manifests written" if self.complete else "not complete: shards of other processes still missing",
        ]
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------- reading


def normalize_text(text: str) -> str:
    """Collapse whitespace runs to one space, strip, lower-case (NeMo's usual English transcripts).

    >>> normalize_text("  HELLO\\tWorld \\n")
    'hello world'
    """
    return " ".join(text.split()).lower()


def _lines(path: str) -> Iterator[Tuple[int, Optional[str]]]:
    """(line number, text) of a UTF-8 file; text is None for a line that is not valid UTF-8, so one bad
    line is reported by number instead of failing the whole file."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError:
                yield lineno, None


def read_wav_scp(path: str, allow_pipes: bool = False) -> Tuple[List[Utterance], List[BadItem]]:
    """Parse a Kaldi ``wav.scp``: ``UTTID path`` or ``UTTID cmd ... |`` (pipe) per line.

    Pipe entries raise :class:`PackingError` unless ``allow_pipes``: a data file does not run commands
    by default. Malformed lines and repeated ids are returned as :class:`BadItem`.
    """
    utts, bad, seen = [], [], set()
    pipes = []
    for lineno, line in _lines(path):
        origin = f"{path}:{lineno}"
        if line is None:
            bad.append(BadItem("", "", origin, "malformed: line is not UTF-8"))
            continue
        line = line.strip()
        if not line:
            continue
        parts = line.split(maxsplit=1)
        if len(parts) < 2:
            bad.append(BadItem(parts[0], "", origin, "malformed: no audio path"))
            continue
        utt_id, value = parts[0], parts[1].strip()
        if utt_id in seen:
            bad.append(BadItem(utt_id, value, origin, "duplicate: utterance id repeated"))
            continue
        seen.add(utt_id)
        is_pipe = value.endswith("|")
        if is_pipe:
            value = value[:-1].strip()
            pipes.append((origin, utt_id, value))
        utts.append(Utterance(utt_id=utt_id, source=value, origin=origin, is_pipe=is_pipe))
    if pipes and not allow_pipes:
        origin, utt_id, cmd = pipes[0]
        raise PackingError(
            f"{path}: {len(pipes)} entries are Kaldi pipe commands (first: {origin} utterance {utt_id!r}: "
            f"{cmd!r} |). Commands in a data file are not run unless --allow-pipes is given."
        )
    return utts, bad


def read_kaldi_text(path: str) -> Dict[str, str]:
    """Parse a Kaldi ``text`` file (``UTTID transcript``); an id with no words maps to ''."""
    texts = {}
    for lineno, line in _lines(path):
        if line is None:
            logger.warning("%s:%d: transcript line is not UTF-8; its utterance will have no transcript", path, lineno)
            continue
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        texts[parts[0]] = parts[1] if len(parts) > 1 else ""
    return texts


def read_nemo_manifest(path: str) -> Tuple[List[Utterance], List[BadItem]]:
    """Parse a NeMo JSON-lines manifest. Relative ``audio_filepath`` values that do not exist from the
    working directory are taken relative to the manifest's folder (as NeMo does). ``offset`` and
    ``duration`` select a segment, which is cut out. Other keys are carried to the output manifest."""
    utts, bad = [], []
    base = os.path.dirname(os.path.abspath(path))
    for lineno, line in _lines(path):
        origin = f"{path}:{lineno}"
        if line is None:
            bad.append(BadItem("", "", origin, "malformed: line is not UTF-8"))
            continue
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            audio = item.pop("audio_filepath", None) or item.pop("audio_filename")
            if not isinstance(audio, str) or not audio:
                raise TypeError(f"audio_filepath is {audio!r}")
            offset = float(item.pop("offset", 0.0) or 0.0)
            duration = item.pop("duration", None)
            duration = None if duration is None else float(duration)
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as e:
            bad.append(BadItem("", "", origin, f"malformed: not a JSON object with audio_filepath and "
                                               f"numeric offset/duration ({e})"))
            continue
        if not os.path.isabs(audio) and not os.path.exists(audio):
            candidate = os.path.join(base, audio)
            if os.path.exists(candidate):
                audio = candidate
        text = item.pop("text", "")
        utt_id = os.path.splitext(os.path.basename(audio))[0]
        utts.append(
            Utterance(
                utt_id=utt_id, source=audio, origin=origin, text=text if isinstance(text, str) else str(text),
                offset=offset, duration=duration, extra=item,
            )
        )
    return utts, bad


def assign_member_names(utts: Sequence[Utterance]) -> None:
    """Give each utterance a unique, loader-safe member name, deterministic in input order."""
    used = set()
    for u in utts:
        base = _UNSAFE.sub("_", u.utt_id) or "utt"
        name, k = base, 1
        while name in used:
            name = f"{base}_{k}"
            k += 1
        used.add(name)
        u.member = name


def plan_shards(utts: Sequence[Utterance], shard_size: int) -> List[List[Utterance]]:
    """Split in input order into consecutive groups of ``shard_size`` (the last may be shorter)."""
    if shard_size < 1:
        raise PackingError(f"shard_size must be >= 1 (got {shard_size})")
    return [list(utts[i : i + shard_size]) for i in range(0, len(utts), shard_size)]


# ----------------------------------------------------------------------------------------- audio


@dataclasses.dataclass
class EncodedAudio:
    data: bytes
    ext: str
    num_samples: int
    sample_rate: int
    num_channels: int


def _duration(num_samples: int, sample_rate: int) -> float:
    """Seconds such that NeMo's ``int(duration * sr)`` gives back exactly ``num_samples``."""
    d = num_samples / sample_rate
    while int(d * sample_rate) < num_samples:
        d = math.nextafter(d, math.inf)
    return d


def _read_source(utt: Utterance, pipe_timeout: Optional[float]) -> bytes:
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
    raw = _read_source(utt, pipe_timeout)
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
        import soxr  # librosa's default resampler; installed with NeMo

        audio = soxr.resample(audio.astype(np.float32) / (32768.0 if dtype == "int16" else 1.0), sr, sample_rate, quality="HQ")
        sr = sample_rate
    out_subtype = subtype if sf.check_format("WAV", subtype) else "PCM_16"
    if audio.dtype != np.int16 and out_subtype.startswith("PCM"):
        # libsndfile wraps around rather than clips out-of-range floats; resampling can overshoot 1.0.
        audio = np.clip(audio, -1.0, 1.0)
    buf = io.BytesIO()
    sf.write(buf, audio, sr, format="WAV", subtype=out_subtype)
    return EncodedAudio(buf.getvalue(), "wav", audio.shape[0], sr, channels)


def _load_worker(args):
    utt, sample_rate, pipe_timeout = args
    try:
        return load_utterance(utt, sample_rate, pipe_timeout)
    except (OSError, ValueError) as e:
        reason = str(e) if ":" in str(e) else f"unreadable: {e}"
        if isinstance(e, FileNotFoundError) and not str(e).startswith("missing"):
            reason = f"missing: {e}"
        return BadItem(utt.utt_id, utt.source + (" |" if utt.is_pipe else ""), utt.origin, reason)


def _ordered_map(fn, items: Iterable, num_workers: int, chunk: int = 8) -> Iterator:
    """``map(fn, items)`` in input order over a process pool: ``chunk`` items per task (fewer
    round trips), a bounded number of tasks in flight (bounded memory)."""
    if num_workers <= 1:
        for it in items:
            yield fn(it)
        return
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    window = 4 * num_workers

    def chunks():
        buf = []
        for x in items:
            buf.append(x)
            if len(buf) == chunk:
                yield buf
                buf = []
        if buf:
            yield buf

    with concurrent.futures.ProcessPoolExecutor(num_workers, mp_context=multiprocessing.get_context(method)) as ex:
        pending = deque()
        it = chunks()
        for c in it:
            pending.append(ex.submit(_map_chunk, fn, c))
            if len(pending) >= window:
                break
        while pending:
            fut = pending.popleft()
            try:
                res = fut.result()
            except concurrent.futures.process.BrokenProcessPool as e:
                raise PackingError(
                    "a packing worker process died (killed, or crashed inside an audio decoder); completed "
                    "shards are kept -- rerun with --skip-existing, with --num-workers 1 to see which file"
                ) from e
            for c in it:
                pending.append(ex.submit(_map_chunk, fn, c))
                break
            yield from res


def _map_chunk(fn, chunk):
    return [fn(x) for x in chunk]


# ----------------------------------------------------------------------------------------- writing


_HOST = re.sub(r"[^\w\-]", "_", os.uname().nodename if hasattr(os, "uname") else "host")


def _tmp_name(final_path: str) -> str:
    """Hidden temporary name beside ``final_path``; host and pid tell whose it is."""
    d, b = os.path.split(final_path)
    return os.path.join(d, f".{b}.tmp.{_HOST}.{os.getpid()}")


def _owner_gone(tmp: str, max_age_s: float = 3600.0) -> bool:
    """True when the process that made ``tmp`` is dead (same host) or the file is old (other host)."""
    host, _, pid = tmp.rsplit(".tmp.", 1)[-1].rpartition(".")
    if host == _HOST and pid.isdigit():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    try:
        return time.time() - os.path.getmtime(tmp) > max_age_s
    except OSError:
        return False


def _fsync_replace(tmp: str, final: str) -> None:
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)
    fsync_dir(os.path.dirname(final))


def _atomic_write_bytes(path: str, data: bytes) -> None:
    tmp = _tmp_name(path)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(path))


def _remove_temps(path: str, only_orphans: bool = False) -> None:
    """Delete temporaries of ``path`` left by killed runs (with ``only_orphans``: only those whose
    writer is gone, for files another process of a split may be writing right now)."""
    d, b = os.path.split(path)
    for p in glob.glob(os.path.join(glob.escape(d), f".{glob.escape(b)}.tmp.*")):
        if only_orphans and not _owner_gone(p):
            continue
        if os.path.isdir(p):
            shutil.rmtree(p, ignore_errors=True)
        else:
            try:
                os.remove(p)
            except FileNotFoundError:
                pass


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.size, ti.mtime, ti.mode = size, 0, 0o644
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    return ti


def _manifest_line(entry: Dict) -> str:
    return json.dumps(entry, ensure_ascii=False) + "\n"


class _NemoShardWriter:
    """Writes ``audio_{i}.tar`` and ``sharded_manifests/manifest_{i}.json`` under temporary names."""

    def __init__(self, out_dir: str, shard_id: int):
        self.out_dir, self.shard_id = out_dir, shard_id
        self.finals = [os.path.join(out_dir, f"audio_{shard_id}.tar"),
                       os.path.join(out_dir, "sharded_manifests", f"manifest_{shard_id}.json")]
        self.tmps = [_tmp_name(p) for p in self.finals]
        self.tar = tarfile.open(self.tmps[0], "w", format=tarfile.PAX_FORMAT)
        self.lines: List[str] = []

    def add(self, utt: Utterance, enc: EncodedAudio, text: str) -> None:
        name = f"{utt.member}.{enc.ext}"
        self.tar.addfile(_tarinfo(name, len(enc.data)), io.BytesIO(enc.data))
        entry = {"audio_filepath": name, "duration": _duration(enc.num_samples, enc.sample_rate), "text": text,
                 "shard_id": self.shard_id}
        if utt.member != utt.utt_id:
            entry["utt_id"] = utt.utt_id  # the id had to be made loader-safe or unique
        for k, v in utt.extra.items():
            entry.setdefault(k, v)
        self.lines.append(_manifest_line(entry))

    def commit(self) -> Dict[str, int]:
        """Publish tar then manifest; returns {relative path: size} for the marker."""
        self.tar.close()
        with open(self.tmps[1], "w", encoding="utf-8") as f:
            f.writelines(self.lines)
        for tmp, final in zip(self.tmps, self.finals):
            _fsync_replace(tmp, final)
        return {os.path.relpath(p, self.out_dir): os.path.getsize(p) for p in self.finals}

    def abort(self) -> None:
        self.tar.close()
        for t in self.tmps:
            if os.path.exists(t):
                os.remove(t)


def _deterministic_gzip(path: str) -> None:
    """Re-compress with a zero header mtime so identical content gives identical bytes."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(gzip.compress(data, mtime=0))


class _SharShardWriter:
    """Writes one Shar shard (``cuts.{i:06d}.jsonl.gz``, ``recording.{i:06d}.tar``) with lhotse's
    ``SharWriter`` into a temporary folder, then moves the files into ``out_dir``."""

    def __init__(self, out_dir: str, shard_id: int, audio_format: str):
        from lhotse.shar import SharWriter

        self.out_dir, self.shard_id = out_dir, shard_id
        self.tmp_dir = _tmp_name(os.path.join(out_dir, f"shar.{shard_id:06d}"))
        os.makedirs(self.tmp_dir)
        # shard_size above any real shard: lhotse writes exactly one file per field, numbered shard_id.
        self.writer = SharWriter(self.tmp_dir, fields={"recording": audio_format}, shard_size=2**62,
                                 shard_offset=shard_id, warn_unused_fields=False)
        self.writer.__enter__()

    def add(self, utt: Utterance, enc: EncodedAudio, text: str) -> None:
        from lhotse import Recording, SupervisionSegment

        rec = Recording.from_bytes(enc.data, recording_id=utt.member)
        cut = rec.to_cut()
        if text:
            cut.supervisions = [SupervisionSegment(id=utt.member, recording_id=rec.id, start=0.0,
                                                   duration=rec.duration, channel=cut.channel, text=text)]
        self.writer.write(cut)

    def commit(self) -> Dict[str, int]:
        self.writer.close()
        files = {}
        for name in sorted(os.listdir(self.tmp_dir)):
            src = os.path.join(self.tmp_dir, name)
            if name.endswith(".gz"):
                _deterministic_gzip(src)
            files[name] = src
        for name, src in files.items():
            _fsync_replace(src, os.path.join(self.out_dir, "shar", name))
        shutil.rmtree(self.tmp_dir, ignore_errors=True)
        return {f"shar/{n}": os.path.getsize(os.path.join(self.out_dir, "shar", n)) for n in files}

    def abort(self) -> None:
        try:
            self.writer.close()
        finally:
            shutil.rmtree(self.tmp_dir, ignore_errors=True)


def _shard_outputs(fmt: str, out_dir: str, i: int) -> List[str]:
    """Final paths shard ``i`` may publish (used to clear temporaries of a killed run)."""
    if fmt == "nemo":
        return [os.path.join(out_dir, f"audio_{i}.tar"), os.path.join(out_dir, "sharded_manifests", f"manifest_{i}.json")]
    return [os.path.join(out_dir, "shar", f"cuts.{i:06d}.jsonl.gz"),
            os.path.join(out_dir, "shar", f"recording.{i:06d}.tar"), os.path.join(out_dir, f"shar.{i:06d}")]


def _marker_path(out_dir: str, i: int) -> str:
    return os.path.join(out_dir, STATE_DIR, f"shard_{i:06d}.json")


def _plan_hash(fmt: str, shard_id: int, shard: Sequence[Utterance], options: Dict) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"format": fmt, "shard_id": shard_id, "options": options}, sort_keys=True).encode())
    for u in shard:
        h.update(json.dumps(dataclasses.asdict(u), sort_keys=True, ensure_ascii=False).encode("utf-8"))
    return h.hexdigest()


def _read_complete_marker(out_dir: str, i: int, plan: str) -> Optional[Dict]:
    """The marker of shard ``i`` if it vouches for this plan and its files are all there, else None."""
    try:
        with open(_marker_path(out_dir, i), encoding="utf-8") as f:
            marker = json.load(f)
    except (OSError, ValueError):
        return None
    if marker.get("plan") != plan:
        return None
    for rel, size in marker.get("files", {}).items():
        p = os.path.join(out_dir, rel)
        if not os.path.isfile(p) or os.path.getsize(p) != size:
            return None
    return marker


# ----------------------------------------------------------------------------------------- driver


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="utt", dynamic_ncols=True, smoothing=0.1,
                disable=not (enabled and sys.stderr.isatty()), desc="packing")


def pack_shards(
    out_dir: str,
    wav_scp: Optional[str] = None,
    text: Optional[str] = None,
    manifest: Optional[str] = None,
    shard_size: int = 100000,
    num_workers: int = 1,
    shard_idx: int = 0,
    shard_count: int = 1,
    skip_existing: bool = False,
    text_norm: bool = False,
    sample_rate: Optional[int] = None,
    format: str = "nemo",
    strict: bool = False,
    allow_pipes: bool = False,
    pipe_timeout: Optional[float] = 300.0,
    shar_audio_format: str = "flac",
    progress: bool = True,
) -> PackSummary:
    """Pack ``wav_scp`` (+ optional Kaldi ``text``) or a NeMo ``manifest`` into shards in ``out_dir``.

    This process writes shards ``i`` with ``i % shard_count == shard_idx``; ``num_workers`` processes
    decode/resample in parallel while this one writes in input order. With ``skip_existing``, shards
    whose marker matches this plan are kept. Bad audio is logged by utterance id and path and left
    out; with ``strict`` the first problem raises :class:`PackingError` instead. Returns a
    :class:`PackSummary`; ``summary.complete`` is True once all shards exist and the merged manifest
    (nemo) or ``shar_index.json`` (lhotse-shar) has been written.
    """
    t0 = time.perf_counter()
    if format not in FORMATS:
        raise PackingError(f"format must be one of {FORMATS} (got {format!r})")
    if (wav_scp is None) == (manifest is None):
        raise PackingError("give exactly one input: wav_scp (Kaldi) or manifest (NeMo JSON lines)")
    if text is not None and wav_scp is None:
        raise PackingError("text goes with wav_scp; a NeMo manifest carries its own 'text'")
    if not (shard_count >= 1 and 0 <= shard_idx < shard_count):
        raise PackingError(f"need 0 <= shard_idx < shard_count (got {shard_idx}, {shard_count})")
    if sample_rate is not None and sample_rate <= 0:
        raise PackingError(f"sample_rate must be positive (got {sample_rate})")
    for p in (wav_scp, text, manifest):
        if p is not None and not os.path.isfile(p):
            raise PackingError(f"input file not found: {p}")

    if wav_scp is not None:
        utts, bad = read_wav_scp(wav_scp, allow_pipes=allow_pipes)
        if text is not None:
            texts = read_kaldi_text(text)
            kept = []
            for u in utts:
                if u.utt_id in texts:
                    u.text = texts[u.utt_id]
                    kept.append(u)
                else:
                    bad.append(BadItem(u.utt_id, u.source, u.origin, f"no transcript: id not in {text}"))
            n_orphans = len(set(texts) - {u.utt_id for u in utts})
            if n_orphans:
                logger.warning("%s: %d transcripts have no audio entry in %s", text, n_orphans, wav_scp)
            utts = kept
    else:
        utts, bad = read_nemo_manifest(manifest)
    num_input = len(utts) + len(bad)
    if text_norm:
        for u in utts:
            u.text = normalize_text(u.text)
    for b in bad:
        logger.warning("left out %s (%s) at %s: %s", b.utt_id, b.path, b.origin, b.reason)
    if bad and strict:
        b = bad[0]
        raise PackingError(f"--strict: {b.origin}: utterance {b.utt_id!r} ({b.path}): {b.reason}")
    if not utts:
        raise PackingError(f"no usable entry in {wav_scp or manifest}")
    assign_member_names(utts)
    shards = plan_shards(utts, shard_size)
    options = {"sample_rate": sample_rate, "text_norm": text_norm, "shar_audio_format": shar_audio_format
               if format == "lhotse-shar" else None}
    plans = [_plan_hash(format, i, s, options) for i, s in enumerate(shards)]

    out_dir = os.path.abspath(out_dir)
    os.makedirs(os.path.join(out_dir, STATE_DIR), exist_ok=True)
    os.makedirs(os.path.join(out_dir, "sharded_manifests" if format == "nemo" else "shar"), exist_ok=True)
    summary = PackSummary(out_dir=out_dir, format=format, num_input=num_input, num_planned=len(utts),
                          num_shards=len(shards), bad=list(bad))
    mine = [i for i in range(len(shards)) if i % shard_count == shard_idx]
    todo = []
    for i in mine:
        for p in _shard_outputs(format, out_dir, i) + [_marker_path(out_dir, i)]:
            _remove_temps(p)  # leftovers of a killed run; only this process's shards
        if skip_existing and _read_complete_marker(out_dir, i, plans[i]) is not None:
            summary.shards_skipped.append(i)
        else:
            todo.append(i)
    for name in (NEMO_MANIFEST, DATA_LIST, SHAR_INDEX, SUMMARY):
        _remove_temps(os.path.join(out_dir, name), only_orphans=True)
    if not skip_existing:
        # Outputs of an earlier run must not be read as this run's until it completes.
        for name in (NEMO_MANIFEST, DATA_LIST, SHAR_INDEX, SUMMARY):
            p = os.path.join(out_dir, name)
            if os.path.exists(p):
                os.remove(p)

    total = sum(len(shards[i]) for i in todo)
    bar = _progress(total, progress)

    def on_item(nbytes):
        bar.update(1)
        summary.bytes_written += nbytes
        if bar.n % 200 == 0 and not bar.disable:
            bar.set_postfix_str(f"{summary.bytes_written / 2**20 / max(bar.format_dict['elapsed'], 1e-9):.1f} MB/s")

    try:
        if format == "lhotse-shar" and num_workers > 1 and len(todo) > 1:
            # lhotse's SharWriter encodes in the process that writes, so here a worker writes whole shards.
            _write_shards_in_parallel(out_dir, format, todo, shards, plans, sample_rate, pipe_timeout, strict,
                                      shar_audio_format, num_workers, bar, summary)
        else:
            # Workers decode in input order; this process writes, so any worker count gives the same bytes.
            work = ((u, sample_rate, pipe_timeout) for i in todo for u in shards[i])
            results = _ordered_map(_load_worker, work, num_workers)
            try:
                for i in todo:
                    _write_shard(out_dir, format, i, shards[i], results, plans[i], strict, shar_audio_format, on_item)
                    summary.shards_done.append(i)
            finally:
                results.close()
    finally:
        bar.close()

    _finalize(out_dir, format, shards, plans, summary)
    summary.elapsed_s = time.perf_counter() - t0
    logger.info("%s", summary.describe())
    return summary


def _write_shard(out_dir, fmt, i, utts, results, plan, strict, shar_audio_format, on_item=None) -> None:
    """Write shard ``i`` from ``results`` (one per utterance, in order), publish it, then its marker."""
    marker = _marker_path(out_dir, i)
    if os.path.exists(marker):
        os.remove(marker)  # from here on shard i is incomplete until its new marker appears
    writer = _NemoShardWriter(out_dir, i) if fmt == "nemo" else _SharShardWriter(out_dir, i, shar_audio_format)
    shard_bad, written, dur = [], 0, 0.0
    try:
        for u in utts:
            res = next(results)
            if isinstance(res, BadItem):
                if on_item is not None:
                    on_item(0)
                logger.warning("left out %s (%s) at %s: %s", res.utt_id, res.path, res.origin, res.reason)
                if strict:
                    raise PackingError(f"--strict: {res.origin}: utterance {res.utt_id!r} ({res.path}): {res.reason}")
                shard_bad.append(res)
                continue
            writer.add(u, res, u.text)
            written += 1
            dur += res.num_samples / res.sample_rate
            if on_item is not None:
                on_item(len(res.data))
        files = writer.commit()
    except BaseException:
        writer.abort()
        raise
    _atomic_write_bytes(marker, json.dumps(
        {"plan": plan, "files": files, "written": written, "duration": dur,
         "bad": [dataclasses.asdict(b) for b in shard_bad]}, indent=1, sort_keys=True).encode())


def _shard_job(args):
    out_dir, fmt, i, utts, plan, sample_rate, pipe_timeout, strict, shar_audio_format = args
    results = (_load_worker((u, sample_rate, pipe_timeout)) for u in utts)
    _write_shard(out_dir, fmt, i, utts, results, plan, strict, shar_audio_format)
    with open(_marker_path(out_dir, i), encoding="utf-8") as f:
        return i, len(utts), json.load(f)


def _write_shards_in_parallel(out_dir, fmt, todo, shards, plans, sample_rate, pipe_timeout, strict,
                              shar_audio_format, num_workers, bar, summary) -> None:
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with concurrent.futures.ProcessPoolExecutor(num_workers, mp_context=multiprocessing.get_context(method)) as ex:
        futures = [ex.submit(_shard_job, (out_dir, fmt, i, shards[i], plans[i], sample_rate, pipe_timeout, strict,
                                          shar_audio_format)) for i in todo]
        try:
            for fut in concurrent.futures.as_completed(futures):
                i, n, marker = fut.result()
                bar.update(n)
                summary.shards_done.append(i)
                summary.bytes_written += sum(marker["files"].values())
        except concurrent.futures.process.BrokenProcessPool as e:
            raise PackingError("a packing worker process died; completed shards are kept -- rerun with "
                               "--skip-existing, with --num-workers 1 to see which file") from e
        finally:
            for fut in futures:
                fut.cancel()
    summary.shards_done.sort()


def _finalize(out_dir: str, fmt: str, shards, plans, summary: PackSummary) -> None:
    """Count this job's results; if every shard is complete, write the merged outputs atomically."""
    markers = []
    for i in range(len(shards)):
        m = _read_complete_marker(out_dir, i, plans[i])
        markers.append(m)
    mine = set(summary.shards_done) | set(summary.shards_skipped)
    for i in sorted(mine):
        m = markers[i]
        if m is None:
            continue
        summary.num_written += m["written"]
        summary.duration_s += m["duration"]
        summary.bad.extend(BadItem(**b) for b in m["bad"])
    if any(m is None for m in markers):
        return
    stale = sorted(f for f in os.listdir(os.path.join(out_dir, STATE_DIR))
                   if re.fullmatch(r"shard_\d+\.json", f) and int(f[6:-5]) >= len(shards))
    if stale:
        logger.warning("%s holds shards of an earlier run with more shards (%s...); they are not in the new "
                       "manifests -- remove them or use a fresh --out-dir", out_dir, stale[0])
    if fmt == "nemo":
        parts = []
        for i in range(len(shards)):
            with open(os.path.join(out_dir, "sharded_manifests", f"manifest_{i}.json"), "rb") as f:
                parts.append(f.read())
        tars = [os.path.join(out_dir, f"audio_{i}.tar") for i in range(len(shards))]
        _atomic_write_bytes(os.path.join(out_dir, DATA_LIST), "".join(t + "\n" for t in tars).encode())
        final_name = NEMO_MANIFEST
        final_bytes = b"".join(parts)
    else:
        fields: Dict[str, List[str]] = {"cuts": [], "recording": []}
        for i in range(len(shards)):
            for rel in sorted(markers[i]["files"]):
                key = "cuts" if os.path.basename(rel).startswith("cuts.") else "recording"
                fields[key].append(os.path.join(out_dir, rel))
        final_name = SHAR_INDEX
        final_bytes = json.dumps(fields, indent=1).encode()
    all_bad = [b for m in markers for b in m["bad"]]
    report = {"num_shards": len(shards), "written": sum(m["written"] for m in markers),
              "duration_s": sum(m["duration"] for m in markers), "left_out_at_load": all_bad}
    _atomic_write_bytes(os.path.join(out_dir, SUMMARY), json.dumps(report, indent=1, ensure_ascii=False).encode())
    _atomic_write_bytes(os.path.join(out_dir, final_name), final_bytes)
    summary.complete = True
