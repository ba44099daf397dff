"""Bad audio in manifests: fast header checks, and one report of bad files by path and manifest line.

Training runs last days; a missing, corrupt, empty or too-short file must be found early (a header read
with ``soundfile.info``, no decoding) or, failing that, when it is loaded, and be reported by path and
manifest line, counted and skipped -- or raise at once when the user asked for ``on_bad_audio: error``.
Reading itself, and the one ``BadAudioError``, are in :mod:`nest_ext.data.audio_io`.

Example::

    >>> import numpy as np, soundfile as sf, tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> sf.write(os.path.join(d, 'a.wav'), np.zeros(1600, dtype='float32'), 16000)
    >>> check_audio_file(os.path.join(d, 'missing.wav'))
    'missing file'
    >>> check_audio_file(os.path.join(d, 'a.wav'), min_duration=1.0)
    'too short: 0.100 s of audio after offset 0.000 s, min_duration is 1.000 s'
"""
from __future__ import annotations

import bisect
import logging
import os
import threading
from array import array
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, Iterable, List, Optional, Sequence, Union

from nest_ext.data.audio_io import AudioInfo, BadAudioError, read_audio_info

__all__ = [
    "BadAudioReport",
    "ManifestLines",
    "ON_BAD_AUDIO_CHOICES",
    "check_audio_file",
    "check_audio_info",
    "check_audio_files",
    "get_on_bad_audio",
]

ON_BAD_AUDIO_CHOICES = ("skip", "error")

# Audio shorter than min_duration by less than this is not "too short": manifest durations are rounded.
TOO_SHORT_TOLERANCE_S = 0.05

# Header checks: one thread per FILES_PER_THREAD files, at most MAX_CHECK_THREADS (and 4 per CPU); fewer
# than FILES_PER_THREAD files are checked in the calling thread.
FILES_PER_THREAD = 64
MAX_CHECK_THREADS = 16

logger = logging.getLogger(__name__)

# BadAudioReport keeps the first MAX_REPORT_ENTRIES entries for inspection; it counts all of them.
MAX_REPORT_ENTRIES = 1000


def _checked_policy(value) -> str:
    if value not in ON_BAD_AUDIO_CHOICES:
        raise ValueError(f"on_bad_audio must be one of {ON_BAD_AUDIO_CHOICES}, got {value!r}")
    return value


class _PicklesWithoutLock:
    """For classes that guard their state with ``self._lock`` (a ``threading.Lock``, which cannot be pickled):
    DataLoader workers started with 'spawn' pickle the dataset and everything it holds, so the lock is
    left out when pickling and a new one is made when unpickling."""

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_lock", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()


def get_on_bad_audio(config) -> str:
    """Read ``on_bad_audio`` from a dataset config (default ``skip``) and validate it.

    The key is read with ``config.get`` and is absent from the YAML on purpose: the configs stay
    key-for-key equal to NeMo's.
    """
    value = config.get("on_bad_audio", "skip") if config is not None else "skip"
    return _checked_policy("skip" if value is None else str(value).lower())


def check_audio_info(
    info: AudioInfo, offset: Optional[float] = 0.0, min_duration: Optional[float] = None
) -> Optional[str]:
    """Why a file with this header cannot give an item: empty, offset past its end, or shorter than
    ``min_duration`` (by more than ``TOO_SHORT_TOLERANCE_S``). None when it can."""
    if info.frames <= 0:
        return "no audio frames (empty audio)"
    if info.samplerate <= 0:
        return f"invalid sample rate {info.samplerate}"
    offset = float(offset or 0.0)
    available = info.frames / info.samplerate - offset
    if available <= 0:
        return f"offset {offset:.3f} s is past the end of the audio ({info.frames / info.samplerate:.3f} s)"
    if min_duration is not None and available + TOO_SHORT_TOLERANCE_S < float(min_duration):
        return (
            f"too short: {available:.3f} s of audio after offset {offset:.3f} s, "
            f"min_duration is {float(min_duration):.3f} s"
        )
    return None


def check_audio_file(
    path: Union[str, Sequence[str]], offset: Optional[float] = 0.0, min_duration: Optional[float] = None
) -> Optional[str]:
    """Reason why ``path`` is unusable (missing, corrupt, empty, too short), or None when it is fine.

    ``path`` may be a list of single-channel files (NeMo's multi-file entries); each is checked.
    """
    paths = [path] if isinstance(path, str) else list(path)
    for p in paths:
        try:
            info = read_audio_info(p)
        except BadAudioError as e:
            return e.reason
        reason = check_audio_info(info, offset, min_duration)
        if reason is not None:
            return reason
    return None


def check_audio_files(paths: Iterable[str], num_threads: Optional[int] = None) -> Dict[str, Union[AudioInfo, str]]:
    """Header-check many files in parallel threads (reading headers is I/O bound and libsndfile releases
    the GIL). Returns ``{path: AudioInfo}`` for readable files and ``{path: reason}`` for the others."""
    unique = list(dict.fromkeys(paths))
    if num_threads is None:
        num_threads = min(MAX_CHECK_THREADS, len(unique) // FILES_PER_THREAD + 1, (os.cpu_count() or 1) * 4)

    def one(p):
        try:
            return p, read_audio_info(p)
        except BadAudioError as e:
            return p, e.reason

    if num_threads <= 1 or len(unique) < FILES_PER_THREAD:
        return dict(one(p) for p in unique)
    with ThreadPoolExecutor(max_workers=num_threads) as pool:
        return dict(pool.map(one, unique, chunksize=FILES_PER_THREAD))


class ManifestLines(_PicklesWithoutLock):
    """Maps NeMo's manifest entry ids (the running count of non-empty lines over all manifest files, as
    ``nemo.collections.common.parts.preprocessing.manifest.item_iter`` numbers them) to ``file:line``.

    Built lazily, on the first bad entry, so a clean run never reads the manifests a second time.

    Example::

        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), 'm.json')
        >>> _ = open(p, 'w').write('{"a": 1}\\n\\n{"a": 2}\\n')
        >>> ManifestLines([p]).where(1).endswith('m.json:3')
        True
    """

    def __init__(self, manifest_files: Union[str, Sequence[str], None]):
        if manifest_files is None:
            manifest_files = []
        elif isinstance(manifest_files, str):
            manifest_files = manifest_files.split(",")
        self.files: List[str] = [str(f) for f in manifest_files]
        self._starts: Optional[List[int]] = None
        self._lines = array("q")
        self._lock = threading.Lock()

    def _build(self):
        starts = []
        for f in self.files:
            starts.append(len(self._lines))
            try:
                with open(os.path.expanduser(f), "r", encoding="utf-8") as fh:
                    for no, line in enumerate(fh, start=1):
                        if line.strip():
                            self._lines.append(no)
            except OSError:
                pass  # remote (datastore) manifests: fall back to the entry number
        self._starts = starts

    def where(self, entry_id: Optional[int]) -> str:
        """``manifest:line`` of entry ``entry_id`` (or a best-effort description)."""
        if entry_id is None:
            return ", ".join(self.files) or "<no manifest>"
        with self._lock:
            if self._starts is None:
                self._build()
        i = bisect.bisect_right(self._starts, entry_id) - 1
        if 0 <= entry_id < len(self._lines) and i >= 0:
            return f"{self.files[i]}:{self._lines[entry_id]}"
        return f"{', '.join(self.files)} (entry #{entry_id})"


class BadAudioReport(_PicklesWithoutLock):
    """Logs each bad entry it is given by path and manifest line, counts them by reason, and applies the policy.

    Callers give each entry once (the datasets remember which items failed).

    Args:
        on_bad_audio: ``'skip'`` (log, count, go on) or ``'error'`` (raise ``BadAudioError`` at once).
        name: what the report is about (shown in the summary), e.g. the manifest path.
        logger: where skipped entries are logged; this module's logger (``nest_ext.data.bad_audio``) by default.

    Example::

        >>> r = BadAudioReport('skip', name='train')
        >>> r.add('/x.wav', 'missing file', where='train.json:3', stage='start')
        >>> r.count, dict(r.by_reason)
        (1, {'missing file': 1})
    """

    def __init__(self, on_bad_audio: str = "skip", name: str = "", logger: Optional[logging.Logger] = None):
        self.on_bad_audio = _checked_policy(on_bad_audio)
        self.name = name
        self.logger = logger
        self.count = 0
        self.by_reason: Counter = Counter()
        self.entries: List[tuple] = []  # (path, reason, where, stage); the first MAX_REPORT_ENTRIES only
        self._lock = threading.Lock()

    def add(self, path, reason: str, where: Optional[str] = None, stage: str = "load"):
        """Record one bad entry; raise under ``on_bad_audio='error'``."""
        err = BadAudioError(path, reason, where)
        if self.on_bad_audio == "error":
            raise err
        with self._lock:
            self.count += 1
            self.by_reason[reason.split(":")[0]] += 1
            if len(self.entries) < MAX_REPORT_ENTRIES:
                self.entries.append((path, reason, where, stage))
        (self.logger or logger).warning(f"Skipping {err} [found at {stage}; {self.count} bad so far in {self.name or 'dataset'}]")

    def summary(self) -> str:
        if not self.count:
            return f"{self.name or 'dataset'}: no bad audio"
        parts = ", ".join(f"{n} {r}" for r, n in self.by_reason.most_common())
        return f"{self.name or 'dataset'}: skipped {self.count} bad audio entries ({parts})"
