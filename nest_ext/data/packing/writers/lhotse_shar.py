"""``lhotse-shar``: lhotse's Shar layout, written by lhotse's own ``SharWriter``.

``shar/cuts.{i:06d}.jsonl.gz`` + ``shar/recording.{i:06d}.tar``, read with ``CutSet.from_shar(in_dir=DIR/shar)``
or with ``fields=json.load(open(DIR/shar_index.json))``. The ``shar`` folder holds nothing else, because
lhotse takes every file in ``in_dir`` for a field. Audio is stored as ``shar_audio_format`` (FLAC by
default); a transcript becomes the cut's supervision. gzip headers carry mtime 0, so the same input gives the
same bytes.

Example::

    >>> NAME, SharShardWriter.options, SharShardWriter.index_files
    ('lhotse-shar', ('shar_audio_format',), ('shar_index.json',))
"""
from __future__ import annotations

import gzip
import json
import os
from typing import Dict, List

from nest_ext.data.packing.item import ShardItem
from nest_ext.data.packing.writers.base import ShardWriter, register_writer
from nest_ext.parts.atomic_io import discard, publish

NAME = "lhotse-shar"
SHAR_INDEX = "shar_index.json"
SHAR_DIR = "shar"


def _deterministic_gzip(path: str) -> None:
    """Re-compress with a zero header mtime so identical content gives identical bytes."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(gzip.compress(data, mtime=0))


@register_writer
class SharShardWriter(ShardWriter):
    """Writes one Shar shard with lhotse's ``SharWriter`` into a temporary folder, then moves its files into
    ``out_dir/shar``."""

    name = NAME
    options = ("shar_audio_format",)
    index_files = (SHAR_INDEX,)
    parallel_shards = True  # SharWriter encodes in the process that writes

    @classmethod
    def outputs(cls, out_dir: str, shard_id: int) -> List[str]:
        return [os.path.join(out_dir, SHAR_DIR, f"cuts.{shard_id:06d}.jsonl.gz"),
                os.path.join(out_dir, SHAR_DIR, f"recording.{shard_id:06d}.tar"),
                os.path.join(out_dir, f"shar.{shard_id:06d}")]  # base name of the temporary folder

    def __init__(self, out_dir: str, shard_id: int, shar_audio_format: str = "flac", **options):
        from lhotse.shar import SharWriter

        super().__init__(out_dir, shard_id)
        self.tmp_dir = self.temp_for(self.outputs(out_dir, shard_id)[2], directory=True)
        # shard_size above any real shard: lhotse writes exactly one file per field, numbered shard_id.
        self.writer = SharWriter(self.tmp_dir, fields={"recording": shar_audio_format}, shard_size=2**62,
                                 shard_offset=shard_id, warn_unused_fields=False)
        self.writer.__enter__()

    def add(self, item: ShardItem) -> None:
        from lhotse import Recording, SupervisionSegment

        rec = Recording.from_bytes(item.sole_audio(self.name).data, recording_id=item.key)
        cut = rec.to_cut()
        text = item.meta.get("text", "")
        if text:
            cut.supervisions = [SupervisionSegment(id=item.key, recording_id=rec.id, start=0.0,
                                                   duration=rec.duration, channel=cut.channel, text=text)]
        self.writer.write(cut)

    def commit(self) -> Dict[str, int]:
        self.writer.close()
        names = sorted(os.listdir(self.tmp_dir))
        for name in names:
            src = os.path.join(self.tmp_dir, name)
            if name.endswith(".gz"):
                _deterministic_gzip(src)
        for name in names:
            publish(os.path.join(self.tmp_dir, name), os.path.join(self.out_dir, SHAR_DIR, name))
        discard(self.tmp_dir)
        return {f"{SHAR_DIR}/{n}": os.path.getsize(os.path.join(self.out_dir, SHAR_DIR, n)) for n in names}

    def abort(self) -> None:
        try:
            self.writer.close()
        finally:
            super().abort()

    @classmethod
    def finalize(cls, out_dir: str, markers: List[Dict]) -> Dict[str, bytes]:
        fields: Dict[str, List[str]] = {"cuts": [], "recording": []}
        for marker in markers:
            for rel in sorted(marker["files"]):
                key = "cuts" if os.path.basename(rel).startswith("cuts.") else "recording"
                fields[key].append(os.path.join(out_dir, rel))
        return {SHAR_INDEX: json.dumps(fields, indent=1).encode()}
