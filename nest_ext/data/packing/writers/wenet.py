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

from typing import Dict, List

from nest_ext.data.packing.item import ShardItem
from nest_ext.data.packing.writers.base import TarShardWriter, add_tar_member, register_writer
from nest_ext.data.wenet_shards import DATA_LIST

KEY_MAP = "key_map.tsv"


@register_writer
class WenetShardWriter(TarShardWriter):
    """Writes ``shards_{i:09d}.tar`` (``KEY.wav`` + ``KEY.txt`` per utterance; WeNet's ``make_shard_list.py``
    naming) and a per-shard key map (empty when no id was renamed)."""

    name = "wenet"
    index_files = (KEY_MAP, DATA_LIST)
    tar_pattern = "shards_{shard_id:09d}.tar"
    sidecar_pattern = "key_maps/key_map_{shard_id}.tsv"

    def add(self, item: ShardItem) -> None:
        audio = item.sole_audio(self.name)  # ASR data: one audio and a transcript per utterance
        add_tar_member(self.tar, f"{item.key}.{audio.ext}", audio.data)
        add_tar_member(self.tar, f"{item.key}.txt", str(item.meta.get("text", "")).encode("utf-8"))
        if item.input_id != item.key:
            self.lines.append(f"{item.key}\t{item.input_id}\n")

    @classmethod
    def finalize(cls, out_dir: str, markers: List[Dict]) -> Dict[str, bytes]:
        return {KEY_MAP: cls.merged_sidecars(out_dir, len(markers)), DATA_LIST: cls.tar_list(out_dir, len(markers))}
