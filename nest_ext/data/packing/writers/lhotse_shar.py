"""``lhotse-shar``: lhotse's Shar layout, written by lhotse's own ``SharWriter``.

``shar/cuts.{i:06d}.jsonl.gz`` + ``shar/recording.{i:06d}.tar``, read with ``CutSet.from_shar(in_dir=DIR/shar)``
or with ``fields=json.load(open(DIR/shar_index.json))``. The ``shar`` folder holds nothing else, because
lhotse takes every file in ``in_dir`` for a field. Audio is stored as ``shar_audio_format`` (FLAC by
default); a transcript becomes the cut's supervision, other manifest keys the cut's ``custom`` fields. gzip
headers carry mtime 0, so the same input gives the same bytes.

Separation examples (payloads ``mixture``, ``s1`` .. ``sN``, ``noise``) follow NeMo's lhotse audio-to-audio
convention (``nemo.collections.audio.data.audio_to_audio_lhotse``): the cut's ``recording`` is the mixture, the
custom recording ``target_recording`` holds the sources as channels (one file, ``target_recording.{i:06d}.tar``),
``noise_recording`` the noise, and ``custom["speaker_ids"]`` etc. the manifest's other keys.

Example::

    >>> NAME, SharShardWriter.options, SharShardWriter.index_files
    ('lhotse-shar', ('shar_audio_format',), ('shar_index.json',))
"""
from __future__ import annotations

import gzip
import io
import json
import os
import re
from typing import Dict, List

import numpy as np
import soundfile as sf

from nest_ext.data.packing.audio import zero_write_time
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
        super().__init__(out_dir, shard_id)
        self.tmp_dir = self.temp_for(self.outputs(out_dir, shard_id)[2], directory=True)
        self.audio_format = shar_audio_format
        self.writer = None  # made at the first item, whose payloads say which fields the shard has

    def _open(self, fields: List[str]) -> None:
        from lhotse.shar import SharWriter

        # shard_size above any real shard: lhotse writes exactly one file per field, numbered shard_id.
        self.writer = SharWriter(self.tmp_dir, fields={f: self.audio_format for f in fields}, shard_size=2**62,
                                 shard_offset=self.shard_id, warn_unused_fields=False)
        self.writer.__enter__()

    def add(self, item: ShardItem) -> None:
        from lhotse import Recording, SupervisionSegment

        if list(item.audio) == ["audio"]:
            cut, fields = Recording.from_bytes(item.audio["audio"].data, recording_id=item.key).to_cut(), ["recording"]
        else:
            cut, fields = _multi_payload_cut(item)
        if self.writer is None:
            self._open(fields)
        meta = dict(item.meta)
        text = meta.pop("text", "")
        if text:
            cut.supervisions = [SupervisionSegment(id=item.key, recording_id=cut.recording.id, start=0.0,
                                                   duration=cut.duration, channel=cut.channel, text=text)]
        for key, value in meta.items():
            if not key.endswith("_filepath"):  # member names mean nothing in Shar
                cut.custom = {**(cut.custom or {}), key: value}
        self.writer.write(cut)

    def commit(self) -> Dict[str, int]:
        if self.writer is None:  # every item of the shard was bad: an empty shard
            self._open(["recording"])
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
            if self.writer is not None:
                self.writer.close()
        finally:
            super().abort()

    @classmethod
    def finalize(cls, out_dir: str, markers: List[Dict]) -> Dict[str, bytes]:
        fields: Dict[str, List[str]] = {"cuts": [], "recording": []}
        for marker in markers:
            for rel in sorted(marker["files"]):
                fields.setdefault(os.path.basename(rel).split(".")[0], []).append(os.path.join(out_dir, rel))
        return {SHAR_INDEX: json.dumps(fields, indent=1).encode()}


def _multi_payload_cut(item: ShardItem):
    """The cut of a separation example: mixture as ``recording``, sources stacked as channels of
    ``target_recording``, any other payload NAME as ``NAME_recording``; and the Shar fields it needs."""
    from lhotse import Recording

    names = list(item.audio)
    sources = [n for n in names[1:] if re.fullmatch(r"s\d+", n)]
    cut = Recording.from_bytes(item.audio[names[0]].data, recording_id=item.key).to_cut()
    fields = ["recording"]
    if sources:
        cut.target_recording = Recording.from_bytes(_stack_channels([item.audio[n] for n in sources]),
                                                    recording_id=f"{item.key}_sources")
        fields.append("target_recording")
    for name in names[1:]:
        if name not in sources:
            setattr(cut, f"{name}_recording", Recording.from_bytes(item.audio[name].data, recording_id=f"{item.key}_{name}"))
            fields.append(f"{name}_recording")
    return cut, fields


def _stack_channels(payloads) -> bytes:
    """One WAV whose channels are the given mono payloads (16-bit when they all are, else float)."""
    decoded = [sf.read(io.BytesIO(p.data), dtype="float32", always_2d=True) for p in payloads]
    subtypes = {sf.info(io.BytesIO(p.data)).subtype for p in payloads}
    audio = np.concatenate([a for a, _ in decoded], axis=1)
    buf = io.BytesIO()
    sf.write(buf, audio, decoded[0][1], format="WAV", subtype="PCM_16" if subtypes == {"PCM_16"} else "FLOAT")
    return zero_write_time(buf.getvalue())
