"""Transcribed speech as lhotse cuts, from every layout this package writes or reads.

``read_asr_cuts(path)`` takes one path and finds its layout (``detect_layout``):

* ``nemo-manifest`` -- a NeMo JSON-lines manifest (``audio_filepath``, ``text``, optional ``duration``,
  ``offset``, ``utt_id``/``id``); each file's header is read when the entry is reached, and a missing,
  corrupt or empty file is reported by path and ``manifest:line`` and skipped;
* ``nemo-tarred`` -- a ``tools/pack_shards.py`` folder in NeMo's tarred layout (``audio_{i}.tar``,
  ``sharded_manifests/manifest_{i}.json``), read by NeMo's ``LazyNeMoTarredIterator`` (which skips and logs
  members it cannot decode);
* ``lhotse-shar`` -- a ``pack_shards.py --format lhotse-shar`` folder (``shar/``), read by lhotse's Shar reader;
* ``wenet`` -- WeNet / MooER shards (``shards_*.tar`` with ``KEY.wav`` + ``KEY.txt``) through a ``data.list``
  (or its folder, or one ``.tar``), read by :class:`~nest_ext.data.wenet_shards.LazyWenetShardIterator`.

Every cut carries its transcript as ``cut.supervisions[0].text``; cuts without one are dropped with a log
line. ``train=True`` shuffles shards (seeded with ``shard_seed``, per worker and rank as lhotse does) and
repeats tarred data endlessly; ``train=False`` reads each utterance once, in order.

Example::

    >>> import json, os, tempfile, numpy as np, soundfile as sf
    >>> d = tempfile.mkdtemp()
    >>> sf.write(os.path.join(d, "a.wav"), np.zeros(8000, np.float32), 16000)
    >>> with open(os.path.join(d, "m.json"), "w") as f:
    ...     _ = f.write(json.dumps({"audio_filepath": "a.wav", "text": "hi"}) + "\\n")
    ...     _ = f.write(json.dumps({"audio_filepath": "missing.wav", "text": "no"}) + "\\n")
    >>> detect_layout(os.path.join(d, "m.json"))
    'nemo-manifest'
    >>> [(c.id, c.duration, c.supervisions[0].text) for c in read_asr_cuts(os.path.join(d, "m.json"))]
    [('a', 0.5, 'hi')]
"""
from __future__ import annotations

import glob
import json
import logging
import os
import re
from typing import Iterator, Optional, Union

from nest_ext.data.wenet_shards import DATA_LIST, wenet_cuts
from nest_ext.data.audio_io import BadAudioError, read_audio_info
from nest_ext.data.bad_audio import BadAudioReport, check_audio_info

logger = logging.getLogger(__name__)

LAYOUTS = ("nemo-manifest", "nemo-tarred", "lhotse-shar", "wenet")
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a")
NEMO_TARRED_MANIFEST = "tarred_audio_manifest.json"  # what pack_shards' nemo layout writes last
SHAR_DIR = "shar"


def detect_layout(path: str) -> str:
    """Which of ``LAYOUTS`` ``path`` is in; ``ValueError`` naming the path when none."""
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, NEMO_TARRED_MANIFEST)):
            return "nemo-tarred"
        if os.path.isdir(os.path.join(path, SHAR_DIR)):
            return "lhotse-shar"
        if os.path.exists(os.path.join(path, DATA_LIST)):
            return "wenet"
        if glob.glob(os.path.join(path, "audio_*.tar")):
            raise ValueError(f"{path}: NeMo tarred shards without {NEMO_TARRED_MANIFEST} (packing not finished?)")
        raise ValueError(f"{path}: no {NEMO_TARRED_MANIFEST}, {SHAR_DIR}/ or {DATA_LIST} (not a packed data folder)")
    if not os.path.exists(path):
        raise ValueError(f"{path}: no such file or folder")
    if path.endswith(".tar"):
        return "wenet"
    if os.path.basename(path) == DATA_LIST or path.endswith(".list"):
        folder = os.path.dirname(os.path.abspath(path))
        # pack_shards' nemo layout writes a data.list of its audio_{i}.tar too
        return "nemo-tarred" if os.path.exists(os.path.join(folder, NEMO_TARRED_MANIFEST)) else "wenet"
    return "nemo-manifest"


def read_asr_cuts(path: str, train: bool = False, shard_seed: Union[int, str] = "trng",
                  on_bad_audio: str = "skip", report: Optional[BadAudioReport] = None):
    """A lazy ``CutSet`` of transcribed utterances from ``path`` (any of ``LAYOUTS``); see the module doc.
    ``report``: where our readers (manifest, WeNet) count what they skip, instead of a report of their own."""
    from lhotse import CutSet

    layout = detect_layout(path)
    if layout == "nemo-manifest":
        cuts = CutSet(LazyCheckedManifestIterator(path, on_bad_audio, report))
    elif layout == "wenet":
        cuts = wenet_cuts(path, shuffle_shards=train, shard_seed=shard_seed, on_bad_audio=on_bad_audio, repeat=train,
                          report=report)
    elif layout == "lhotse-shar":
        folder = path if os.path.isdir(path) else os.path.dirname(path)
        cuts = CutSet.from_shar(in_dir=os.path.join(folder, SHAR_DIR), shuffle_shards=train, seed=shard_seed)
        cuts = cuts.repeat(preserve_id=True) if train else cuts
    else:
        cuts = _nemo_tarred_cuts(path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path)),
                                 train, shard_seed)
    return cuts.filter(_has_transcript)


def utterance_id(cut) -> str:
    """An utterance's id in every layout: the manifest's ``utt_id`` when present (pack_shards keeps a changed
    id there), else the cut id without an audio suffix (NeMo's tarred reader names cuts after tar members)."""
    uid = str((cut.custom or {}).get("utt_id") or cut.id)
    for suffix in AUDIO_SUFFIXES:
        if uid.endswith(suffix):
            return uid[: -len(suffix)]
    return uid


def _nemo_tarred_cuts(folder: str, train: bool, shard_seed):
    from omegaconf import DictConfig

    from nemo.collections.common.data.lhotse.cutset import read_nemo_manifest

    ids = sorted(int(m.group(1)) for p in glob.glob(os.path.join(folder, "audio_*.tar"))
                 if (m := re.fullmatch(r"audio_(\d+)\.tar", os.path.basename(p))))
    if ids != list(range(len(ids))) or not ids:
        raise ValueError(f"{folder}: expected audio_0.tar ... audio_N.tar, found shards {ids}")
    last = len(ids) - 1
    # NeMo's brace syntax for a range of shards: one manifest and one tar per shard id
    cfg = DictConfig({
        "manifest_filepath": os.path.join(folder, "sharded_manifests", f"manifest__OP_0..{last}_CL_.json"),
        "tarred_audio_filepaths": os.path.join(folder, f"audio__OP_0..{last}_CL_.tar"),
        "shuffle": train, "shard_seed": shard_seed, "force_finite": not train,
    })
    cuts, _ = read_nemo_manifest(cfg)
    return cuts


def _has_transcript(cut) -> bool:
    if cut.supervisions and cut.supervisions[0].text is not None:
        return True
    logger.warning(f"Skipping {cut.id}: no transcript")
    return False


class LazyCheckedManifestIterator:
    """Cuts from a NeMo JSON-lines manifest; entries whose audio is missing, unreadable or empty, or that have
    no ``text``, are reported by path and ``manifest:line`` (``BadAudioReport``) and skipped.

    Relative ``audio_filepath``s are taken relative to the manifest's folder when the file is there (as NeMo
    does). The cut id is the entry's ``utt_id`` or ``id``, else the audio file's stem.
    """

    def __init__(self, manifest: str, on_bad_audio: str = "skip", report: Optional[BadAudioReport] = None):
        self.manifest = manifest
        self.report = report or BadAudioReport(on_bad_audio, name=f"manifest {manifest}")

    def __iter__(self) -> Iterator:
        from lhotse import AudioSource, Recording, SupervisionSegment

        base = os.path.dirname(os.path.abspath(self.manifest))
        with open(self.manifest, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                where = f"{self.manifest}:{lineno}"
                try:
                    entry = json.loads(line)
                    path = str(entry["audio_filepath"])
                except (ValueError, KeyError, TypeError) as e:
                    raise ValueError(f"{where}: not a manifest entry with 'audio_filepath' ({e})") from None
                if not os.path.isabs(path) and os.path.exists(os.path.join(base, path)):
                    path = os.path.join(base, path)
                if entry.get("text") is None:
                    self.report.add(path, "no 'text' in the entry", where=where, stage="read")
                    continue
                try:
                    info = read_audio_info(path)
                except BadAudioError as e:
                    self.report.add(path, e.reason, where=where, stage="read")
                    continue
                offset = float(entry.get("offset") or 0.0)
                reason = check_audio_info(info, offset)
                if reason is not None:
                    self.report.add(path, reason, where=where, stage="read")
                    continue
                utt_id = str(entry.get("utt_id") or entry.get("id") or os.path.splitext(os.path.basename(path))[0])
                recording = Recording(id=utt_id, sources=[AudioSource(type="file", channels=list(range(info.channels)),
                                                                      source=path)],
                                      sampling_rate=info.samplerate, num_samples=info.frames,
                                      duration=info.frames / info.samplerate)
                duration = entry.get("duration")
                cut = recording.to_cut()
                if offset or duration is not None:
                    cut = cut.truncate(offset=offset, duration=None if duration is None else float(duration),
                                       preserve_id=True)
                cut.supervisions = [SupervisionSegment(id=utt_id, recording_id=recording.id, start=0.0,
                                                       duration=cut.duration, channel=cut.channel,
                                                       text=str(entry["text"]))]
                cut.custom = {"manifest_origin": where}
                yield cut

    def __len__(self) -> int:
        with open(self.manifest, encoding="utf-8") as f:
            return sum(1 for line in f if line.strip())
