"""Read WeNet / MooER-style tar shards as lhotse cuts with transcripts.

Layout: ``shards_000000000.tar``, ``shards_000000001.tar``, ... each holding, per utterance, ``KEY.wav``
(or another audio extension) and ``KEY.txt`` (UTF-8 transcript), the two members of a key next to each other;
``data.list`` names the tar files, one a line (absolute, or relative to the list's folder). As in WeNet's
reader, a member's key is its name up to the *last* dot.

Bad input is reported by :class:`~nest_ext.data.bad_audio.BadAudioReport` and skipped: a missing or
unreadable tar, a key without audio or without transcript, audio that cannot be decoded (named
``TAR:MEMBER``). Under ``on_bad_audio='error'`` the first one raises instead.

Example::

    >>> import io, os, tarfile, tempfile, numpy as np, soundfile as sf
    >>> d = tempfile.mkdtemp()
    >>> wav = io.BytesIO(); sf.write(wav, np.zeros(1600, np.float32), 16000, format="WAV")
    >>> with tarfile.open(os.path.join(d, "shards_000000000.tar"), "w") as tar:
    ...     for name, data in (("utt1.wav", wav.getvalue()), ("utt1.txt", "hello world".encode())):
    ...         info = tarfile.TarInfo(name); info.size = len(data); tar.addfile(info, io.BytesIO(data))
    >>> _ = open(os.path.join(d, "data.list"), "w").write("shards_000000000.tar\\n")
    >>> cuts = list(LazyWenetShardIterator(os.path.join(d, "data.list")))
    >>> cuts[0].id, cuts[0].supervisions[0].text, cuts[0].duration
    ('utt1', 'hello world', 0.1)
"""
from __future__ import annotations

import os
import random
import tarfile
from typing import Iterator, List, Optional, Sequence, Union

from nest_ext.data.bad_audio import BadAudioReport

AUDIO_EXTENSIONS = ("wav", "flac", "mp3", "m4a", "ogg", "opus", "wma")  # WeNet's AUDIO_FORMAT_SETS
TEXT_EXTENSION = "txt"
DATA_LIST = "data.list"


def read_data_list(path: str) -> List[str]:
    """Tar paths listed in a ``data.list`` (blank lines and ``#`` comments skipped; relative paths are taken
    relative to the list's folder)."""
    base = os.path.dirname(os.path.abspath(path))
    paths = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                paths.append(line if os.path.isabs(line) or "://" in line else os.path.join(base, line))
    if not paths:
        raise ValueError(f"{path}: lists no shards")
    return paths


def shard_paths(source: Union[str, Sequence[str]]) -> List[str]:
    """Tar paths from a ``data.list`` file, a folder holding one, a single ``.tar``, or a list of those."""
    if not isinstance(source, str):
        return [p for item in source for p in shard_paths(str(item))]
    if os.path.isdir(source):
        source = os.path.join(source, DATA_LIST)
    if source.endswith(".tar"):
        return [source]
    return read_data_list(source)


class LazyWenetShardIterator:
    """Iterates cuts (audio kept in memory, one supervision with the transcript) from WeNet shards.

    Args:
        source: a ``data.list``, a folder with one, a ``.tar``, or a list of those.
        shuffle_shards: visit the tars in a random order (seeded by ``shard_seed``, resolved at iteration
            time like lhotse's and NeMo's tarred readers: ``"trng"`` / ``"randomized"`` / an int).
        on_bad_audio: ``"skip"`` (report and go on) or ``"error"``.
        report: a :class:`BadAudioReport` to count into (a caller's, to total several readers); replaces
            ``on_bad_audio``.
    """

    def __init__(self, source: Union[str, Sequence[str]], shuffle_shards: bool = False,
                 shard_seed: Union[int, str] = "trng", on_bad_audio: str = "skip",
                 report: Optional[BadAudioReport] = None):
        self.source = source
        self.paths = shard_paths(source)
        self.shuffle_shards = shuffle_shards
        self.shard_seed = shard_seed
        self.report = report or BadAudioReport(on_bad_audio, name=f"WeNet shards {source}")

    def __iter__(self) -> Iterator:
        paths = list(self.paths)
        if self.shuffle_shards:
            from lhotse.dataset.dataloading import resolve_seed

            random.Random(resolve_seed(self.shard_seed)).shuffle(paths)
        for path in paths:
            yield from self._read_shard(path)

    def _read_shard(self, tar_path: str) -> Iterator:
        if not os.path.exists(tar_path):
            self.report.add(tar_path, "missing shard", where=str(self.source), stage="read")
            return
        key, members = None, {}
        try:
            with tarfile.open(tar_path, mode="r|*") as tar:  # streaming: members are read in order
                for info in tar:
                    if not info.isfile():
                        continue
                    name = info.name
                    dot = name.rfind(".")
                    if dot <= 0:
                        continue
                    this_key, ext = name[:dot], name[dot + 1:].lower()
                    if this_key != key:
                        if key is not None:
                            yield from self._make_cut(tar_path, key, members)
                        key, members = this_key, {}
                    members[ext] = tar.extractfile(info).read()
        except (tarfile.TarError, OSError) as e:
            self.report.add(tar_path, f"unreadable shard ({type(e).__name__}: {e})", stage="read")
        if key is not None:
            yield from self._make_cut(tar_path, key, members)

    def _make_cut(self, tar_path: str, key: str, members: dict) -> Iterator:
        from lhotse import Recording, SupervisionSegment

        where = f"{tar_path}:{key}"
        ext = next((e for e in AUDIO_EXTENSIONS if e in members), None)
        if ext is None:
            self.report.add(where, "no audio member", stage="read")
            return
        if TEXT_EXTENSION not in members:
            self.report.add(f"{where}.{ext}", "no transcript (.txt member)", stage="read")
            return
        try:
            recording = Recording.from_bytes(members[ext], recording_id=os.path.basename(key))
        except Exception as e:  # whatever the audio backend raises for bytes it cannot decode
            self.report.add(f"{where}.{ext}", f"undecodable audio ({type(e).__name__}: {e})", stage="read")
            return
        if recording.num_samples <= 0:
            self.report.add(f"{where}.{ext}", "no audio frames (empty audio)", stage="read")
            return
        cut = recording.to_cut()
        text = members[TEXT_EXTENSION].decode("utf-8", errors="replace").strip()
        cut.supervisions.append(SupervisionSegment(id=cut.id, recording_id=cut.recording_id, start=0.0,
                                                   duration=cut.duration, channel=cut.channel, text=text))
        cut.custom = {"tar_origin": tar_path}
        yield cut


def wenet_cuts(source: Union[str, Sequence[str]], shuffle_shards: bool = False, shard_seed="trng",
               on_bad_audio: str = "skip", repeat: bool = False, report: Optional[BadAudioReport] = None):
    """A lazy ``CutSet`` over WeNet shards (``repeat``: endless, for training)."""
    from lhotse import CutSet

    cuts = CutSet(LazyWenetShardIterator(source, shuffle_shards, shard_seed, on_bad_audio, report))
    return cuts.repeat(preserve_id=True) if repeat else cuts


__all__ = ["AUDIO_EXTENSIONS", "DATA_LIST", "LazyWenetShardIterator", "read_data_list", "shard_paths", "wenet_cuts"]
