"""Restoration pairs: items with a ``degraded`` and a ``clean`` payload, as WAV files or as tar shards.

Both formats write, per shard ``i``, ``sharded_manifests/manifest_{i}.json`` and, once the whole job is complete,
the NeMo audio-to-audio manifests ``val_manifest.json`` then ``train_manifest.json`` (last: its presence says the
job is complete). A line: ``input_filepath`` (degraded), ``target_filepath`` (clean), ``duration``, ``shard_id``
and the item's metadata (``utt_id``, ``pair``, ``split``, ``degradations``, ...).

* ``restoration-wav`` (``prepare_restoration_data --format manifest``): ``pairs/shard_{i:06d}/KEY.degraded.wav``
  and ``KEY.clean.wav``; manifest paths are relative to ``out_dir`` (where the manifests are), so
  ``model.train_ds.manifest_filepath=OUT/train_manifest.json`` trains on them and the folder can move. A
  shard's folder is filled under a temporary name and renamed whole.
* ``restoration-tar`` (``--format tar``): ``pairs_{i}.tar`` with members ``KEY.degraded.wav``, ``KEY.clean.wav``
  (WebDataset groups ``KEY.*`` into one sample); manifest paths are member names, and ``train.list`` /
  ``val.list`` list the split's tars (absolute paths, one a line). A shard holds one split only.

Example::

    >>> import os, tempfile
    >>> from nest_ext.data.packing.item import EncodedAudio, ShardItem
    >>> d = tempfile.mkdtemp()
    >>> for folder in ("sharded_manifests", "pairs"):   # the driver makes them (shard 0's output folders)
    ...     os.makedirs(os.path.join(d, folder))
    >>> a = EncodedAudio(b"RIFF", "wav", 16000, 16000, 1)
    >>> w = RestorationWavWriter(d, 0)
    >>> w.add(ShardItem("u1", {"degraded": a, "clean": a}, meta={"split": "train"}))
    >>> sorted(w.commit())
    ['pairs/shard_000000/u1.clean.wav', 'pairs/shard_000000/u1.degraded.wav', 'sharded_manifests/manifest_0.json']
"""
from __future__ import annotations

import json
import os
import tarfile
from typing import Dict, List

from nest_ext.data.packing.inputs import PackingError
from nest_ext.data.packing.item import ShardItem
from nest_ext.data.packing.writers.base import ShardWriter, add_tar_member, register_writer
from nest_ext.data.packing.writers.nemo import SHARD_MANIFESTS, nemo_duration

PAYLOADS = ("degraded", "clean")
SPLITS = ("train", "val")
PAIRS_DIR = "pairs"


def _member(item: ShardItem, payload: str) -> str:
    return f"{item.key}.{payload}.{item.audio[payload].ext}"


class _PairWriter(ShardWriter):
    """What both formats share: the pair check, the shard's manifest lines, the split manifests."""

    task = "restoration"

    def __init__(self, out_dir: str, shard_id: int, **options):
        super().__init__(out_dir, shard_id)
        self.lines: List[str] = []

    def _check(self, item: ShardItem) -> None:
        if tuple(item.audio) != PAYLOADS:
            raise PackingError(f"format {self.name!r} stores {' + '.join(PAYLOADS)} pairs; item {item.key!r} has "
                               f"{', '.join(item.audio)}")

    def _add_line(self, item: ShardItem, degraded: str, clean: str) -> None:
        audio = item.audio["clean"]
        entry = {"input_filepath": degraded, "target_filepath": clean,
                 "duration": nemo_duration(audio.num_samples, audio.sample_rate), "shard_id": self.shard_id}
        for k, v in item.meta.items():
            entry.setdefault(k, v)
        self.lines.append(json.dumps(entry, ensure_ascii=False) + "\n")

    def _write_lines(self) -> None:
        path = os.path.join(self.out_dir, SHARD_MANIFESTS, f"manifest_{self.shard_id}.json")
        with open(self.temp_for(path), "w", encoding="utf-8") as f:
            f.writelines(self.lines)

    @classmethod
    def _split_manifests(cls, out_dir: str, markers: List[Dict]) -> Dict[str, List[bytes]]:
        """``{split: [manifest lines]}`` over every shard, in shard order."""
        lines: Dict[str, List[bytes]] = {s: [] for s in SPLITS}
        for i in range(len(markers)):
            with open(os.path.join(out_dir, SHARD_MANIFESTS, f"manifest_{i}.json"), "rb") as f:
                for line in f:
                    lines[json.loads(line).get("split", "train")].append(line)
        return lines


@register_writer
class RestorationWavWriter(_PairWriter):
    """``pairs/shard_{i:06d}/KEY.{degraded,clean}.wav`` + the shard's manifest."""

    name = "restoration-wav"
    index_files = ("val_manifest.json", "train_manifest.json")

    @classmethod
    def outputs(cls, out_dir: str, shard_id: int) -> List[str]:
        return [os.path.join(out_dir, SHARD_MANIFESTS, f"manifest_{shard_id}.json"),
                os.path.join(out_dir, PAIRS_DIR, f"shard_{shard_id:06d}")]

    def __init__(self, out_dir: str, shard_id: int, **options):
        super().__init__(out_dir, shard_id)
        self.folder = self.outputs(out_dir, shard_id)[1]
        self.tmp_dir = self.temp_for(self.folder, directory=True)
        self.rel = os.path.relpath(self.folder, out_dir)

    def add(self, item: ShardItem) -> None:
        self._check(item)
        names = [_member(item, p) for p in PAYLOADS]
        for payload, name in zip(PAYLOADS, names):
            with open(os.path.join(self.tmp_dir, name), "wb") as f:
                f.write(item.audio[payload].data)
        self._add_line(item, *(f"{self.rel}/{n}" for n in names))

    def commit(self) -> Dict[str, int]:
        self._write_lines()
        names = sorted(os.listdir(self.tmp_dir))
        self.publish_temps()  # the folder, then the manifest (temp_for order)
        sizes = {f"{self.rel}/{n}": os.path.getsize(os.path.join(self.folder, n)) for n in names}
        manifest = self.outputs(self.out_dir, self.shard_id)[0]
        sizes[os.path.relpath(manifest, self.out_dir)] = os.path.getsize(manifest)
        return sizes

    @classmethod
    def finalize(cls, out_dir: str, markers: List[Dict]) -> Dict[str, bytes]:
        lines = cls._split_manifests(out_dir, markers)
        return {f"{split}_manifest.json": b"".join(lines[split]) for split in SPLITS}


@register_writer
class RestorationTarWriter(_PairWriter):
    """``pairs_{i}.tar`` (``KEY.degraded.wav``, ``KEY.clean.wav``) + the shard's manifest."""

    name = "restoration-tar"
    index_files = ("val.list", "train.list", "val_manifest.json", "train_manifest.json")

    @classmethod
    def outputs(cls, out_dir: str, shard_id: int) -> List[str]:
        return [os.path.join(out_dir, f"pairs_{shard_id}.tar"),
                os.path.join(out_dir, SHARD_MANIFESTS, f"manifest_{shard_id}.json")]

    def __init__(self, out_dir: str, shard_id: int, **options):
        super().__init__(out_dir, shard_id)
        self.tar = tarfile.open(self.temp_for(self.outputs(out_dir, shard_id)[0]), "w", format=tarfile.PAX_FORMAT)

    def add(self, item: ShardItem) -> None:
        self._check(item)
        names = [_member(item, p) for p in PAYLOADS]
        for payload, name in zip(PAYLOADS, names):
            add_tar_member(self.tar, name, item.audio[payload].data)
        self._add_line(item, *names)

    def commit(self) -> Dict[str, int]:
        self.tar.close()
        self._write_lines()
        return self.publish_temps()

    def abort(self) -> None:
        self.tar.close()
        super().abort()

    @classmethod
    def finalize(cls, out_dir: str, markers: List[Dict]) -> Dict[str, bytes]:
        lines = cls._split_manifests(out_dir, markers)
        out = {}
        for split in SPLITS:
            shards = sorted({json.loads(line)["shard_id"] for line in lines[split]})
            out[f"{split}.list"] = "".join(os.path.join(out_dir, f"pairs_{i}.tar") + "\n" for i in shards).encode()
            out[f"{split}_manifest.json"] = b"".join(lines[split])
        return out
