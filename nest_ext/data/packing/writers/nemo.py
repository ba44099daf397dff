"""``nemo``: NeMo's tarred-audio layout.

``audio_0.tar ... audio_{N-1}.tar``, one member per utterance (``<key>.wav``/``.flac``...) -- or, for an
example of several payloads (separation: ``<key>.mixture.wav``, ``<key>.s1.wav``...), one per payload, which
WebDataset reads back as one sample --
``sharded_manifests/manifest_{i}.json`` (one per shard, the layout NeMo's ``shard_manifests=true`` expects),
``tarred_audio_manifest.json`` (entries with ``audio_filepath`` = member name, ``duration``, ``text``,
``shard_id``, the input's other keys, and ``utt_id`` when the member name had to differ from the input id;
for separation the input manifest's keys with member names, see ``packing/separation.py``) and
``data.list`` (absolute tar paths, one a line, as MooER's loader reads). Train with::

    model.train_ds.is_tarred=true \\
    model.train_ds.tarred_audio_filepaths=DIR/audio__OP_0..N-1_CL_.tar \\
    model.train_ds.manifest_filepath=DIR/tarred_audio_manifest.json

NeMo's tarred loader splits whole shards over ranks and dataloader workers, so pick ``shard_size`` to give a
shard count that is a multiple of ``world_size x num_workers``.

Example::

    >>> nemo_duration(16001, 16000) * 16000 >= 16001
    True
"""
from __future__ import annotations

import json
import math
from typing import Dict, List

from nest_ext.data.packing.item import ShardItem
from nest_ext.data.packing.writers.base import TarShardWriter, add_tar_member, register_writer

NEMO_MANIFEST = "tarred_audio_manifest.json"
DATA_LIST = "data.list"
SHARD_MANIFESTS = "sharded_manifests"


def nemo_duration(num_samples: int, sample_rate: int) -> float:
    """Seconds such that NeMo's ``int(duration * sr)`` gives back exactly ``num_samples``."""
    d = num_samples / sample_rate
    while int(d * sample_rate) < num_samples:
        d = math.nextafter(d, math.inf)
    return d


@register_writer
class NemoShardWriter(TarShardWriter):
    """Writes ``audio_{i}.tar`` and ``sharded_manifests/manifest_{i}.json``, publishing the tar first."""

    name = "nemo"
    index_files = (DATA_LIST, NEMO_MANIFEST)
    tar_pattern = "audio_{shard_id}.tar"
    sidecar_pattern = SHARD_MANIFESTS + "/manifest_{shard_id}.json"

    def add(self, item: ShardItem) -> None:
        if list(item.audio) != ["audio"]:
            return self._add_multi(item)
        enc = item.audio["audio"]
        name = item.member_name("audio")
        add_tar_member(self.tar, name, enc.data)
        entry = {"audio_filepath": name, "duration": nemo_duration(enc.num_samples, enc.sample_rate),
                 "text": item.meta.get("text", ""), "shard_id": self.shard_id}
        if item.input_id != item.key:
            entry["utt_id"] = item.input_id  # the id had to be made loader-safe or unique
        for k, v in item.meta.items():
            entry.setdefault(k, v)
        self.lines.append(json.dumps(entry, ensure_ascii=False) + "\n")

    def _add_multi(self, item: ShardItem) -> None:
        """An example of several payloads (separation: mixture, s1, s2...): one member ``KEY.NAME.EXT`` each; the
        entry is the item's ``meta`` (which names the members under the input manifest's keys) plus duration,
        shard and input id."""
        for name, enc in item.audio.items():
            add_tar_member(self.tar, item.member_name(name), enc.data)
        first = next(iter(item.audio.values()))
        entry = dict(item.meta)
        entry["duration"] = nemo_duration(first.num_samples, first.sample_rate)
        entry["shard_id"] = self.shard_id
        if item.input_id != item.key:
            entry["utt_id"] = item.input_id
        self.lines.append(json.dumps(entry, ensure_ascii=False) + "\n")

    @classmethod
    def finalize(cls, out_dir: str, markers: List[Dict]) -> Dict[str, bytes]:
        return {DATA_LIST: cls.tar_list(out_dir, len(markers)), NEMO_MANIFEST: cls.merged_sidecars(out_dir, len(markers))}
