"""What packing reads: a Kaldi data dir (``wav.scp`` + optional ``text``, ``segments``, ``utt2spk``) or a NeMo
JSON-lines manifest, parsed into :class:`Utterance` entries in input order, and :class:`BadItem` for every
entry left out.

Kaldi ``text`` lines are ``UTTID transcript``; an utterance without a line is left out (reported). A
``wav.scp`` value ending in ``|`` is a shell command (a Kaldi pipe), run only when allowed. A ``segments``
file (read by lhotse's Kaldi import) cuts utterances out of the ``wav.scp`` recordings; ``utt2spk`` adds a
``speaker`` key. A manifest's ``offset``/``duration`` select a segment; its other keys travel to the output
manifest.

Example::

    >>> import os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> with open(os.path.join(d, "wav.scp"), "w") as f:
    ...     _ = f.write("u1 /data/a.wav\\nu1 /data/b.wav\\nlonely\\n")
    >>> utts, bad = read_wav_scp(os.path.join(d, "wav.scp"))
    >>> [u.utt_id for u in utts], [b.reason for b in bad]
    (['u1'], ['duplicate: utterance id repeated', 'malformed: no audio path'])
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

logger = logging.getLogger("nest_ext.pack_shards")


class PackingError(RuntimeError):
    """Bad input or a failed run, with a message naming the file / line / utterance."""


@dataclasses.dataclass
class Utterance:
    """One planned utterance; ``member`` is its unique name (without extension) inside the shards.

    Its fields, all of them, go into the plan hash that tells whether a finished shard is this job's
    (``state.plan_hash``): a new field would make earlier outputs look foreign to ``--skip-existing``.
    """

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
    """An input entry left out, with the reason (``"missing: ..."``, ``"unreadable: ..."``, ...)."""

    utt_id: str
    path: str
    origin: str
    reason: str


DURATION_REASON = "duration"  # BadItem reasons that say "filtered by length", not "broken"


def duration_problem(seconds: Optional[float], min_duration: Optional[float], max_duration: Optional[float]) -> Optional[str]:
    """Why an entry of ``seconds`` is outside ``[min_duration, max_duration]`` (a BadItem reason), or None.

    >>> duration_problem(0.4, 0.5, None)
    'duration: 0.400 s is below min_duration 0.500 s'
    >>> duration_problem(None, 0.5, 2.0) is None
    True
    """
    if seconds is None:
        return None
    if min_duration is not None and seconds < min_duration:
        return f"{DURATION_REASON}: {seconds:.3f} s is below min_duration {min_duration:.3f} s"
    if max_duration is not None and seconds > max_duration:
        return f"{DURATION_REASON}: {seconds:.3f} s is above max_duration {max_duration:.3f} s"
    return None


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


MALFORMED = (json.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError)  # a manifest line's faults


def manifest_lines(path: str, bad: List[BadItem]) -> Iterator[Tuple[str, str]]:
    """``(origin "path:line", text)`` of each non-blank line of a JSON-lines file; a line that is not UTF-8 goes to
    ``bad``."""
    for lineno, line in _lines(path):
        origin = f"{path}:{lineno}"
        if line is None:
            bad.append(BadItem("", "", origin, "malformed: line is not UTF-8"))
        elif line.strip():
            yield origin, line


def manifest_entries(path: str, bad: List[BadItem], take: Callable[[Dict], Any], what: str
                     ) -> Iterator[Tuple[str, Dict, Any, float, Optional[float]]]:
    """``(origin, entry, take(entry), offset, duration)`` for each line of a JSON-lines manifest; ``take`` pops and
    checks the entry's audio keys (raising one of ``MALFORMED``), offset/duration are popped after it. A line that
    is not such an object (``what`` names the keys it needs) goes to ``bad``."""
    for origin, line in manifest_lines(path, bad):
        try:
            item = json.loads(line)
            value = take(item)
            offset = float(item.pop("offset", 0.0) or 0.0)
            duration = item.pop("duration", None)
            duration = None if duration is None else float(duration)
        except MALFORMED as e:
            bad.append(BadItem("", "", origin, f"malformed: not a JSON object with {what} and numeric "
                                               f"offset/duration ({e})"))
            continue
        yield origin, item, value, offset, duration


def resolve_relative(path: str, base: str) -> str:
    """A relative path that does not exist from the working directory is taken relative to ``base`` (the
    manifest's folder, as NeMo does) when it exists there."""
    if not os.path.isabs(path) and not os.path.exists(path):
        candidate = os.path.join(base, path)
        if os.path.exists(candidate):
            return candidate
    return path


def read_nemo_manifest(path: str) -> Tuple[List[Utterance], List[BadItem]]:
    """Parse a NeMo JSON-lines manifest. Relative ``audio_filepath`` values that do not exist from the
    working directory are taken relative to the manifest's folder (as NeMo does). ``offset`` and
    ``duration`` select a segment, which is cut out. Other keys are carried to the output manifest."""
    utts, bad = [], []
    base = os.path.dirname(os.path.abspath(path))

    def take(item: Dict) -> str:
        audio = item.pop("audio_filepath", None) or item.pop("audio_filename")
        if not isinstance(audio, str) or not audio:
            raise TypeError(f"audio_filepath is {audio!r}")
        return audio

    for origin, item, audio, offset, duration in manifest_entries(path, bad, take, "audio_filepath"):
        audio = resolve_relative(audio, base)
        text = item.pop("text", "")
        utt_id = os.path.splitext(os.path.basename(audio))[0]
        utts.append(
            Utterance(
                utt_id=utt_id, source=audio, origin=origin, text=text if isinstance(text, str) else str(text),
                offset=offset, duration=duration, extra=item,
            )
        )
    return utts, bad


def read_kaldi_segments(wav_scp: str, segments: str, utts: List[Utterance], sample_rate: Optional[int] = None
                        ) -> Tuple[List[Utterance], List[BadItem]]:
    """The segments of a Kaldi ``segments`` file (``UTTID RECID START END``, END -1 = to the end) as utterances
    cut from the recordings ``utts`` of ``wav_scp`` (already parsed, pipes already allowed or refused), read with
    lhotse's Kaldi import (``lhotse.kaldi.load_kaldi_data_dir``, which also reads ``utt2spk`` beside
    ``segments``: the speaker goes to the utterance's ``speaker`` key). Segments whose recording is not in
    ``wav_scp`` are left out (reported)."""
    import tempfile

    from lhotse.kaldi import load_kaldi_data_dir

    lines = {}
    for lineno, line in _lines(segments):
        if line and line.split():
            lines.setdefault(line.split()[0], lineno)
    recordings = {u.utt_id: u for u in utts}
    with tempfile.TemporaryDirectory() as d:
        # lhotse reads a data dir by fixed names; link the given files under them
        os.symlink(os.path.abspath(wav_scp), os.path.join(d, "wav.scp"))
        os.symlink(os.path.abspath(segments), os.path.join(d, "segments"))
        utt2spk = os.path.join(os.path.dirname(os.path.abspath(segments)), "utt2spk")
        if os.path.isfile(utt2spk):
            os.symlink(utt2spk, os.path.join(d, "utt2spk"))
        # lhotse wants a transcript per segment; ours come from ``text`` later (an empty one each here)
        with open(os.path.join(d, "text"), "w", encoding="utf-8") as f:
            f.writelines(f"{seg_id}\n" for seg_id in lines)
        try:
            _, supervisions, _ = load_kaldi_data_dir(d, sampling_rate=sample_rate or 16000)
        except Exception as e:  # lhotse asserts and raises on malformed files
            raise PackingError(f"{segments}: lhotse's Kaldi import failed ({type(e).__name__}: {e})") from e
    out, bad = [], []
    for sup in supervisions or []:
        origin = f"{segments}:{lines.get(sup.id, '?')}"
        rec = recordings.get(sup.recording_id)
        if rec is None:
            bad.append(BadItem(sup.id, sup.recording_id, origin, f"no recording: {sup.recording_id!r} not in {wav_scp}"))
            continue
        extra = {"speaker": sup.speaker} if sup.speaker else {}
        out.append(Utterance(utt_id=sup.id, source=rec.source, origin=origin, is_pipe=rec.is_pipe,
                             offset=float(sup.start), duration=float(sup.duration), extra=extra))
    return out, bad


def read_inputs(wav_scp: Optional[str] = None, text: Optional[str] = None, manifest: Optional[str] = None,
                allow_pipes: bool = False, segments: Optional[str] = None, utt2spk: Optional[str] = None,
                sample_rate: Optional[int] = None) -> Tuple[List[Utterance], List[BadItem]]:
    """The utterances of ``wav_scp`` (cut by Kaldi ``segments``, with transcripts from Kaldi ``text`` and speakers
    from ``utt2spk``) or of a NeMo ``manifest``, and the entries left out. With ``text``, an utterance without a
    transcript is left out."""
    if manifest is not None:
        return read_nemo_manifest(manifest)
    utts, bad = read_wav_scp(wav_scp, allow_pipes=allow_pipes)
    if segments is not None:
        utts, seg_bad = read_kaldi_segments(wav_scp, segments, utts, sample_rate)
        bad += seg_bad
    if utt2spk is not None:
        speakers = read_kaldi_text(utt2spk)
        for u in utts:
            if speakers.get(u.utt_id):
                u.extra["speaker"] = speakers[u.utt_id]
    if text is None:
        return utts, bad
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
    return kept, bad
