"""Pack a Kaldi data dir (``wav.scp`` + ``text``, ``segments``, ``utt2spk``), a NeMo manifest, or a separation
manifest (``task="separation"``: mixture + sources (+ noise) of each example together) into shards, crash-safely.

Output formats (``format=``, one :class:`ShardWriter` each, listed in ``FORMATS``): ``nemo`` (NeMo's tarred
audio: ``audio_{i}.tar``, per-shard and merged manifests, ``data.list``; see ``writers/nemo.py``) and
``lhotse-shar`` (lhotse's Shar via its ``SharWriter``; see ``writers/lhotse_shar.py``). A new format is a
:class:`ShardWriter` subclass registered with :func:`register_writer` (``writers/base.py``).

The package, along its seams: ``inputs`` (parsing, :class:`Utterance`, :class:`BadItem`), ``separation``
(separation examples: :class:`SeparationUtterance`, their reader and loader), ``plan`` (member names, the
seeded shuffle, shards, plan hash), ``audio`` (decode = integrity check, cut, resample, re-encode), ``item`` (what a
writer is given: :class:`ShardItem`), ``writers``, ``pool`` (process pools), ``state`` (markers: the
crash-safe publish protocol) and ``pack`` (:func:`pack_shards`, the driver).

Workers: with ``num_workers`` > 1, worker processes decode/resample and this process writes, in input order;
for a format whose writer does the heavy work itself (``lhotse-shar``: lhotse's ``SharWriter`` encodes), each
worker writes whole shards instead.

Determinism: tar members carry mtime 0, uid/gid 0, empty user/group names and mode 0644, members appear in
input order, worker results are consumed in input order, and gzip headers carry mtime 0, so the same input
gives byte-identical shards for any ``num_workers`` or process split.

Example (tiny, runnable)::

    >>> import os, tempfile, numpy as np, soundfile as sf
    >>> d = tempfile.mkdtemp()
    >>> sf.write(os.path.join(d, "a.wav"), np.zeros(1600, np.float32), 16000)
    >>> with open(os.path.join(d, "wav.scp"), "w") as f:
    ...     _ = f.write(f"utt1 {d}/a.wav\\n")
    >>> s = pack_shards(wav_scp=os.path.join(d, "wav.scp"), out_dir=os.path.join(d, "out"), progress=False)
    >>> s.num_written, sorted(os.listdir(os.path.join(d, "out")))[:2]
    (1, ['.pack_state', 'audio_0.tar'])
"""
from nest_ext.data.packing.audio import load_utterance, resample
from nest_ext.data.packing.inputs import (
    BadItem, PackingError, Utterance, duration_problem, normalize_text, read_inputs, read_kaldi_segments,
    read_kaldi_text, read_nemo_manifest, read_wav_scp,
)
from nest_ext.data.packing.item import EncodedAudio, ShardItem
from nest_ext.data.packing.pack import DEFAULT_SHARD_SIZE, TASKS, PackSummary, pack_shards
from nest_ext.data.packing.plan import assign_member_names, plan_shards, shuffle_utterances
from nest_ext.data.packing.separation import SeparationUtterance, load_separation_item, read_separation_manifest
from nest_ext.data.packing.writers import FORMATS, ShardWriter, add_tar_member, get_writer, register_writer

__all__ = [
    "BadItem", "DEFAULT_SHARD_SIZE", "EncodedAudio", "FORMATS", "PackSummary", "PackingError", "SeparationUtterance",
    "ShardItem", "ShardWriter", "TASKS", "Utterance", "add_tar_member", "assign_member_names", "duration_problem",
    "get_writer", "load_separation_item", "load_utterance", "normalize_text", "pack_shards", "plan_shards",
    "read_inputs", "read_kaldi_segments", "read_kaldi_text", "read_nemo_manifest", "read_separation_manifest",
    "read_wav_scp", "register_writer", "resample", "shuffle_utterances",
]
