"""``wenet``: WeNet / MooER tar shards, drop-in for their loaders and read back by
:mod:`nest_ext.data.wenet_shards` (``model.train_ds`` of the SALM config, ``nest-evaluate-llm-asr``).

``shards_000000000.tar``, ``shards_000000001.tar``, ... hold, per utterance, ``KEY.wav`` (or ``.flac``...) and
``KEY.txt`` (the UTF-8 transcript, empty when the input has none), next to each other as WeNet's reader wants;
``data.list`` names the tars (absolute paths, one a line) and appears only when the whole job is complete.
Utterance ids that were not loader-safe are changed as for ``nemo`` (no dots, unique): ``key_map.tsv`` lists
``KEY<TAB>input id`` for those, so results can be joined back to the input.

Example::

    >>> import os, tempfile
    >>> from nest_ext.data.packing.item import EncodedAudio, ShardItem
    >>> d = tempfile.mkdtemp()
    >>> w = WenetShardWriter(d, 0)
    >>> w.add(ShardItem("utt1", {"audio": EncodedAudio(b"RIFF", "wav", 4, 16000, 1)}, meta={"text": "hi"}))
    >>> sorted(w.commit())
    ['key_maps/key_map_0.tsv', 'shards_000000000.tar']
    >>> import tarfile; tarfile.open(os.path.join(d, "shards_000000000.tar")).getnames()
    ['utt1.wav', 'utt1.txt']
"""
from __future__ import annotations

import os
import tarfile
from typing import Dict, List

from nest_ext.data.packing.inputs import PackingError
from nest_ext.data.packing.item import ShardItem
from nest_ext.data.packing.writers.base import ShardWriter, add_tar_member, register_writer
from nest_ext.data.wenet_shards import DATA_LIST

KEY_MAP = "key_map.tsv"


def wenet_shard_name(shard_id: int) -> str:
    """``shards_{shard_id:09d}.tar``, WeNet's ``make_shard_list.py`` naming."""
    return f"shards_{shard_id:09d}.tar"


@register_writer
class WenetShardWriter(ShardWriter):
    """Writes ``shards_{i:09d}.tar`` (``KEY.wav`` + ``KEY.txt`` per utterance) and a per-shard key map."""

    name = "wenet"
    index_files = (KEY_MAP, DATA_LIST)

    @classmethod
    def outputs(cls, out_dir: str, shard_id: int) -> List[str]:
        return [os.path.join(out_dir, wenet_shard_name(shard_id)),
                os.path.join(out_dir, "key_maps", f"key_map_{shard_id}.tsv")]

    def __init__(self, out_dir: str, shard_id: int, **options):
        super().__init__(out_dir, shard_id)
        tar_path, self.key_map_path = self.outputs(out_dir, shard_id)
        self.tar = tarfile.open(self.temp_for(tar_path), "w", format=tarfile.PAX_FORMAT)
        self.renamed: List[str] = []
        os.makedirs(os.path.dirname(self.key_map_path), exist_ok=True)

    def add(self, item: ShardItem) -> None:
        if list(item.audio) != ["audio"]:
            raise PackingError(f"{item.input_id}: the wenet format holds one audio per utterance (ASR data), "
                               f"not {list(item.audio)}; use --format nemo or lhotse-shar")
        add_tar_member(self.tar, item.member_name("audio"), item.audio["audio"].data)
        add_tar_member(self.tar, f"{item.key}.txt", str(item.meta.get("text", "")).encode("utf-8"))
        if item.input_id != item.key:
            self.renamed.append(f"{item.key}\t{item.input_id}\n")

    def commit(self) -> Dict[str, int]:
        self.tar.close()
        with open(self.temp_for(self.key_map_path), "w", encoding="utf-8") as f:  # empty when nothing was renamed
            f.writelines(self.renamed)
        return self.publish_temps()

    def abort(self) -> None:
        self.tar.close()
        super().abort()

    @classmethod
    def finalize(cls, out_dir: str, markers: List[Dict]) -> Dict[str, bytes]:
        key_maps = []
        for i in range(len(markers)):
            path = os.path.join(out_dir, "key_maps", f"key_map_{i}.tsv")
            with open(path, "rb") as f:
                key_maps.append(f.read())
        tars = [os.path.join(os.path.abspath(out_dir), wenet_shard_name(i)) for i in range(len(markers))]
        return {KEY_MAP: b"".join(key_maps), DATA_LIST: "".join(t + "\n" for t in tars).encode()}
