"""What a shard writer is given: a :class:`ShardItem` -- a key, one or more named audio payloads, metadata.

An ASR utterance is one payload (``{"audio": ...}``) with ``meta = {"text": ..., <other manifest keys>}``;
a separation example would carry ``{"mixture": ..., "s1": ..., "s2": ..., "noise": ...}``, a restoration
pair ``{"degraded": ..., "clean": ...}``. Each format decides how to store the payloads (tar members
``KEY.<name>.wav``, manifest fields, ...); a format that holds one audio per example takes
:meth:`ShardItem.sole_audio`.

Example::

    >>> a = EncodedAudio(b"RIFF...", "wav", num_samples=16000, sample_rate=16000, num_channels=1)
    >>> item = ShardItem(key="utt1", audio={"audio": a}, meta={"text": "hi"})
    >>> item.sole_audio("nemo").ext, item.seconds, item.nbytes, item.input_id, item.member_name("audio")
    ('wav', 1.0, 7, 'utt1', 'utt1.wav')
    >>> ShardItem(key="ex1", audio={"mixture": a, "s1": a}).member_name("s1")
    'ex1.s1.wav'
"""
from __future__ import annotations

import dataclasses
from typing import Dict

from nest_ext.data.packing.inputs import PackingError


@dataclasses.dataclass
class EncodedAudio:
    """One audio payload, encoded: ``data`` is a whole file of type ``ext`` (``wav``, ``flac``...)."""

    data: bytes
    ext: str
    num_samples: int
    sample_rate: int
    num_channels: int


@dataclasses.dataclass
class ShardItem:
    """One example to store. ``key`` is unique within the job and loader-safe (no dots: WebDataset keys end
    at the first one); ``input_id`` is the input's own id, which ``key`` may have had to change (default:
    ``key``). ``audio`` keeps its insertion order; the first payload gives :attr:`seconds`."""

    key: str
    audio: Dict[str, EncodedAudio]
    meta: Dict = dataclasses.field(default_factory=dict)
    input_id: str = ""

    def __post_init__(self):
        if not self.audio:
            raise PackingError(f"item {self.key!r} has no audio payload")
        self.input_id = self.input_id or self.key

    @property
    def seconds(self) -> float:
        """Duration of the first payload (all payloads of a separation or restoration example are equally long)."""
        first = next(iter(self.audio.values()))
        return first.num_samples / first.sample_rate

    @property
    def nbytes(self) -> int:
        return sum(len(a.data) for a in self.audio.values())

    def member_name(self, name: str) -> str:
        """The tar member that holds payload ``name``: ``KEY.EXT`` for an item's only ``audio`` payload (NeMo's
        tarred ASR layout), else ``KEY.NAME.EXT`` -- WebDataset groups ``KEY.*`` members into one sample."""
        enc = self.audio[name]
        if name == "audio" and len(self.audio) == 1:
            return f"{self.key}.{enc.ext}"
        return f"{self.key}.{name}.{enc.ext}"

    def sole_audio(self, fmt: str) -> EncodedAudio:
        """The one payload, for formats that store one audio per example."""
        if len(self.audio) != 1:
            raise PackingError(f"format {fmt!r} stores one audio per example; item {self.key!r} has "
                               f"{', '.join(self.audio)}")
        return next(iter(self.audio.values()))
