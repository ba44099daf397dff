"""Source pools for dynamic mixing: single-speaker utterances with speaker IDs (LibriSpeech, WSJ0 themselves),
as SpeechBrain's and LibriMix's on-the-fly recipes mix them -- not only the sources of existing mixtures.

``model.train_ds.source_pool`` is one of:

* a **manifest** (a file): NeMo JSON lines ``{"audio_filepath": ..., "duration": ..., "speaker": "103"}`` (the
  speaker under ``source_pool_speaker_key``, default ``speaker`` or ``speaker_id``), or a separation manifest
  (its ``target_filepath`` files with their ``speaker_ids``). Files are read at random
  (:class:`~nest_ext.data.dynamic_mixing.DynamicMixer`), only the frames a mixture uses;
* **shards** (a folder written by ``pack_shards``): NeMo tarred (``tarred_audio_manifest.json`` + ``audio_N.tar``;
  ASR items with a speaker key -- ``utt2spk``/``segments`` give one -- or separation items) or lhotse Shar
  (cuts with a supervision speaker or ``custom`` speaker; separation cuts' ``target_recording`` channels with
  ``speaker_ids``). Read as a stream, this rank's shards (``scatter``) split over DataLoader workers, mixed from
  a window (:class:`~nest_ext.data.streaming_mixer.StreamingMixer`).

A source without a speaker ID (no key, no recognisable file name, no ``speaker_id_regex`` match) counts as its
own speaker under ``dynamic_mixing_speakers: auto`` (warned) and is left out under ``ids``
(:func:`nest_ext.data.speaker_ids.resolve_speakers`).

Example::

    >>> import json, os, tempfile, numpy as np, soundfile as sf
    >>> d = tempfile.mkdtemp()
    >>> rows = []
    >>> for name in ("103-1240-0000", "103-1240-0001", "1235-135887-0017"):
    ...     sf.write(os.path.join(d, name + ".flac"), np.zeros(800, np.float32), 8000)
    ...     rows.append(json.dumps({"audio_filepath": name + ".flac", "duration": 0.1}))
    >>> _ = open(os.path.join(d, "pool.json"), "w").write("\\n".join(rows))
    >>> utts = read_source_pool_manifest(os.path.join(d, "pool.json"))
    >>> [u.speaker for u in utts], source_pool_kind(os.path.join(d, "pool.json"))
    (['103', '103', '1235'], 'manifest')
"""
from __future__ import annotations

import glob
import io
import json
import logging
import os
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
import soundfile as sf

from nest_ext.data.bad_audio import BadAudioReport
from nest_ext.data.dynamic_mixing import SourceUtterance
from nest_ext.data.json_lines import json_lines
from nest_ext.data.speaker_ids import compile_speaker_regex, resolve_speakers, speaker_ids_from_name
from nest_ext.data.tarred_shards import (
    iter_tar_samples, load_tarred_manifest, rank_shards, select_shar_shards, shar_fields, shard_id_of,
    split_for_worker, worker_info,
)

__all__ = ["POOL_SPEAKER_KEYS", "ShardedSourcePool", "read_source_pool_manifest", "source_pool_kind"]

logger = logging.getLogger(__name__)

POOL_SPEAKER_KEYS = ("speaker", "speaker_id")  # tried in order when source_pool_speaker_key is not set
TARRED_MANIFEST = "tarred_audio_manifest.json"


def source_pool_kind(path: str) -> str:
    """``'manifest'``, ``'tarred'`` or ``'shar'``: what kind of source pool ``path`` is."""
    if os.path.isfile(path):
        return "manifest"
    if not os.path.isdir(path):
        raise FileNotFoundError(f"source pool {path} does not exist (a manifest file or a folder of shards)")
    if os.path.isfile(os.path.join(path, TARRED_MANIFEST)):
        return "tarred"
    shar_fields(path)  # raises when there is no Shar either
    return "shar"


def _resolve(path: str, base: str) -> str:
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(base, path))


def _speaker_of(entry: Dict, name: str, speaker_key: Optional[str], regex) -> Optional[str]:
    """An entry's speaker: its speaker key, else from the file name (regex, LibriSpeech/WSJ0 patterns)."""
    for key in ([speaker_key] if speaker_key else POOL_SPEAKER_KEYS):
        if entry.get(key) not in (None, ""):
            return str(entry[key])
    ids, _ = speaker_ids_from_name(name, 1, regex)
    return ids[0] if ids else None


def _warn_unknown(what: str, unknown: int, total: int, mode: str) -> None:
    if not unknown:
        return
    if mode == "auto":
        logger.warning("dynamic mixing: %d of %d sources in %s have no speaker ID; each counts as its own speaker "
                       "(dynamic_mixing_speakers: auto), so two of one real speaker may be mixed. Give speaker IDs "
                       "(manifest key, speaker_id_regex) or set dynamic_mixing_speakers: ids to leave them out",
                       unknown, total, what)
    else:
        logger.warning("dynamic mixing: %d of %d sources in %s have no speaker ID and are not used "
                       "(dynamic_mixing_speakers: ids)", unknown, total, what)


def read_source_pool_manifest(path: str, speaker_key: Optional[str] = None, speaker_regex: Optional[str] = None,
                              mode: str = "auto", report: Optional[BadAudioReport] = None) -> List[SourceUtterance]:
    """The sources of a pool manifest with their speakers (see the module docstring). Malformed lines and
    missing files are reported (``report``, by file and line) and left out."""
    regex = compile_speaker_regex(speaker_regex)
    base = os.path.dirname(os.path.abspath(path))
    paths, speakers = [], []
    for where, entry, error in json_lines(path):
        try:
            if error is not None:
                raise ValueError(error)
            if "target_filepath" in entry:  # a separation manifest: its sources
                files = entry["target_filepath"]
                files = [files] if isinstance(files, str) else list(files)
                ids = entry.get("speaker_ids") or [None] * len(files)
            else:
                files, ids = [entry["audio_filepath"]], [None]
        except (ValueError, KeyError, TypeError) as e:
            if report is not None:
                report.add(path, f"invalid source pool line ({type(e).__name__}: {e})", where, "start")
            continue
        for file, spk in zip(files, ids):
            file = _resolve(file, base)
            if not os.path.isfile(file):
                if report is not None:
                    report.add(file, "missing file", where, "start")
                continue
            paths.append(file)
            speakers.append(spk if spk not in (None, "") else _speaker_of(entry, file, speaker_key, regex))
    resolved, unknown = resolve_speakers(paths, speakers, mode)
    _warn_unknown(path, unknown, len(paths), mode)
    return [SourceUtterance(p, s) for p, s in resolved]


class ShardedSourcePool:
    """Single-speaker sources streamed out of pack_shards' tarred or Shar folders (see the module docstring).

    Picklable (only settings and the tarred manifest): DataLoader workers each open their own stream.
    :meth:`sources` is one pass over this rank's and this worker's shards in an ``rng``-drawn order, yielding
    ``(audio [T] float32, speaker, name)``; bad members are reported to ``report`` and skipped.
    """

    def __init__(self, path: str, sample_rate: int, speaker_key: Optional[str] = None,
                 speaker_regex: Optional[str] = None, mode: str = "auto", shard_strategy: str = "scatter",
                 global_rank: int = 0, world_size: int = 1, report: Optional[BadAudioReport] = None):
        self.path, self.kind = path, source_pool_kind(path)
        if self.kind == "manifest":
            raise ValueError(f"{path} is a manifest: read it with read_source_pool_manifest")
        self.sample_rate, self.speaker_key, self.mode = int(sample_rate), speaker_key, mode
        self.regex = compile_speaker_regex(speaker_regex)
        self.report = report or BadAudioReport("skip", name=f"source pool {path}", logger=logger)
        self._warned = False
        if self.kind == "tarred":
            manifest = os.path.join(path, TARRED_MANIFEST)
            with open(manifest, encoding="utf-8") as f:
                first = json.loads(f.readline() or "{}")
            key_field = "input_filepath" if "target_filepath" in first else "audio_filepath"
            self.entries, _ = load_tarred_manifest(manifest, key_field)
            urls = sorted(glob.glob(os.path.join(path, "audio_*.tar")), key=lambda u: shard_id_of(u, 0))
        else:
            self.fields = shar_fields(path)
            urls = [str(i) for i in range(len(self.fields["cuts"]))]
        if not urls:
            raise FileNotFoundError(f"source pool {path}: no shards")
        self.urls = rank_shards(urls, shard_strategy, global_rank, world_size)

    def _speakers(self, count: int, ids, entry: Dict, name: str) -> List[Optional[str]]:
        if ids and len(ids) == count:
            return [str(s) if s not in (None, "") else None for s in ids]
        if count == 1:
            return [_speaker_of(entry, name, self.speaker_key, self.regex)]
        return [None] * count

    def _emit(self, sources: List[Tuple[np.ndarray, Optional[str], str]]):
        resolved, unknown = resolve_speakers([n for _, _, n in sources], [s for _, s, _ in sources], self.mode)
        if unknown and not self._warned:
            self._warned = True
            _warn_unknown(self.path, unknown, len(sources), self.mode)
        audio = {n: a for a, _, n in sources}
        for name, speaker in resolved:
            yield audio[name], speaker, name

    def sources(self, rng: np.random.Generator) -> Iterator[Tuple[np.ndarray, str, str]]:
        worker, num_workers = worker_info()
        urls, sample_split = split_for_worker(self.urls, worker, num_workers)
        if self.kind == "tarred":
            yield from self._tarred_sources(urls, rng, sample_split)
        else:
            yield from self._shar_sources([int(u) for u in urls], rng, sample_split)

    def _decode(self, data: bytes, name: str, where: str) -> Optional[np.ndarray]:
        try:
            audio, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        except Exception as e:
            self.report.add(name, f"cannot decode ({type(e).__name__}: {e})", where, "load (source pool)")
            return None
        if rate != self.sample_rate or audio.shape[1] != 1 or audio.shape[0] == 0:
            self.report.add(name, f"{rate} Hz, {audio.shape[1]} channel(s), {audio.shape[0]} samples; needs mono "
                                  f"at {self.sample_rate} Hz", where, "load (source pool)")
            return None
        return audio[:, 0]

    def _tarred_sources(self, urls, rng, sample_split):
        for sample in iter_tar_samples(urls, rng, sample_split=sample_split):
            entry = self.entries.get(sample["__key__"])
            if entry is None:
                continue  # not in the manifest (e.g. filtered when packed)
            members = entry.get("target_filepath") or [entry["audio_filepath"]]
            ids = entry.get("speaker_ids")
            sources = []
            name = entry.get("utt_id") or members[0]  # the input's own id, for speaker patterns
            for member, spk in zip(members, self._speakers(len(members), ids, entry, name)):
                field = member.split(".", 1)[1]
                audio = self._decode(sample.get(field, b""), member, entry["_where"])
                if audio is not None:
                    sources.append((audio, spk, member))
            yield from self._emit(sources)

    def _shar_sources(self, shards, rng, sample_split):
        from lhotse import CutSet

        if not shards:
            return
        order = [shards[i] for i in rng.permutation(len(shards))]
        cuts = CutSet.from_shar(fields=select_shar_shards(self.fields, order))
        for i, cut in enumerate(cuts):
            if sample_split is not None and i % sample_split[1] != sample_split[0]:
                continue
            try:
                if cut.has_custom("target_recording"):
                    channels = cut.load_target_recording()
                    ids = (cut.custom or {}).get("speaker_ids")
                else:
                    channels = cut.load_audio()
                    sup = cut.supervisions[0].speaker if cut.supervisions else None
                    ids = [sup] if sup else None
            except Exception as e:
                self.report.add(cut.id, f"cannot load ({type(e).__name__}: {e})", self.path, "load (source pool)")
                continue
            if cut.sampling_rate != self.sample_rate:
                self.report.add(cut.id, f"{cut.sampling_rate} Hz, needs {self.sample_rate} Hz", self.path,
                                "load (source pool)")
                continue
            names = [cut.id] if len(channels) == 1 else [f"{cut.id}.s{k + 1}" for k in range(len(channels))]
            speakers = self._speakers(len(channels), ids, dict(cut.custom or {}), cut.id)
            yield from self._emit([(np.asarray(a, np.float32), s, n) for a, s, n in zip(channels, speakers, names)])
