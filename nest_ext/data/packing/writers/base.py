"""The one interface every output format implements, and the registry ``FORMATS`` that ``pack_shards`` looks
formats up in. A new format is a :class:`ShardWriter` subclass decorated with :func:`register_writer`; the
driver needs no change.

Life of a writer, per shard, in one process: ``cls(out_dir, shard_id, **options)``, ``add(item)`` for each
:class:`~nest_ext.data.packing.item.ShardItem` in input order, then ``commit()`` (publish the shard's files,
return their sizes) or, on any error, ``abort()`` (remove what it wrote). Once every shard of the job is
complete, the process that completed the last one calls ``cls.finalize(out_dir, markers)`` for the merged
index files. Files are written under temporary names from :meth:`ShardWriter.temp_for` and renamed into
place by :meth:`ShardWriter.publish_temps` (``nest_ext.parts.atomic_io``), so a kill never leaves a partial
file under a final name.

Example (a format that stores each item's audio payloads as ``KEY.NAME.EXT`` tar members)::

    >>> import os, tarfile, tempfile
    >>> from nest_ext.data.packing.item import EncodedAudio, ShardItem
    >>> class Members(ShardWriter):
    ...     name = "members-doctest"
    ...     @classmethod
    ...     def outputs(cls, out_dir, shard_id):
    ...         return [os.path.join(out_dir, f"part_{shard_id}.tar")]
    ...     def __init__(self, out_dir, shard_id, **options):
    ...         super().__init__(out_dir, shard_id)
    ...         self.tar = tarfile.open(self.temp_for(self.outputs(out_dir, shard_id)[0]), "w")
    ...     def add(self, item):
    ...         for field, audio in item.audio.items():
    ...             add_tar_member(self.tar, f"{item.key}.{field}.{audio.ext}", audio.data)
    ...     def commit(self):
    ...         self.tar.close()
    ...         return self.publish_temps()
    ...     def abort(self):
    ...         self.tar.close()
    ...         super().abort()
    >>> d = tempfile.mkdtemp()
    >>> w = Members(d, 0)
    >>> a = EncodedAudio(b"x", "wav", 1, 8000, 1)
    >>> w.add(ShardItem("ex1", {"mixture": a, "s1": a, "s2": a}))
    >>> w.commit()
    {'part_0.tar': 10240}
    >>> tarfile.open(os.path.join(d, "part_0.tar")).getnames()
    ['ex1.mixture.wav', 'ex1.s1.wav', 'ex1.s2.wav']
"""
from __future__ import annotations

import abc
import io
import os
import tarfile
from typing import ClassVar, Dict, List, Tuple, Type

from nest_ext.data.packing.inputs import PackingError
from nest_ext.data.packing.item import ShardItem
from nest_ext.parts.atomic_io import discard, publish, temp_path

FORMATS: Dict[str, Type["ShardWriter"]] = {}


def register_writer(cls: Type["ShardWriter"]) -> Type["ShardWriter"]:
    """Class decorator: make ``cls`` available as ``pack_shards(format=cls.name)``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a format name")
    FORMATS[cls.name] = cls
    return cls


def get_writer(fmt: str) -> Type["ShardWriter"]:
    if fmt not in FORMATS:
        raise PackingError(f"format must be one of {tuple(FORMATS)} (got {fmt!r})")
    return FORMATS[fmt]


class ShardWriter(abc.ABC):
    """Writes one shard of one output format. See the module docstring for the life cycle.

    Class attributes a format sets:

    * ``name``: the format's name (``--format``);
    * ``options``: the ``pack_shards`` options it takes as keyword arguments (e.g. ``shar_audio_format``);
      they go into the plan hash, so changing one redoes the shards;
    * ``index_files``: names in ``out_dir`` that :meth:`finalize` returns, in publish order; the last one
      appears only when the whole job is complete (readers may wait for it);
    * ``parallel_shards``: True when the writer itself does the heavy work (lhotse's ``SharWriter`` encodes
      as it writes), so worker processes write whole shards instead of decoding for one writer process.
    """

    name: ClassVar[str] = ""
    options: ClassVar[Tuple[str, ...]] = ()
    index_files: ClassVar[Tuple[str, ...]] = ()
    parallel_shards: ClassVar[bool] = False

    def __init__(self, out_dir: str, shard_id: int, **options):
        self.out_dir, self.shard_id = out_dir, shard_id
        self._temps: Dict[str, str] = {}  # final path -> temporary path, in publish order

    @classmethod
    @abc.abstractmethod
    def outputs(cls, out_dir: str, shard_id: int) -> List[str]:
        """Every final path shard ``shard_id`` may publish, and every path given to :meth:`temp_for`: their
        temporaries, left by a killed run, are removed before the shard is written again. The folders of
        shard 0's outputs are created before any shard is written."""

    @abc.abstractmethod
    def add(self, item: ShardItem) -> None:
        """Store one item (called in input order)."""

    @abc.abstractmethod
    def commit(self) -> Dict[str, int]:
        """Publish the shard's files; return ``{path relative to out_dir: size}`` of each (for the marker)."""

    def abort(self) -> None:
        """Remove everything written so far (the shard stays incomplete). Close open files first."""
        for tmp in self._temps.values():
            discard(tmp)

    @classmethod
    def finalize(cls, out_dir: str, markers: List[Dict]) -> Dict[str, bytes]:
        """The merged index files of the complete job, ``{name in index_files: bytes}``; ``markers[i]`` is
        shard ``i``'s marker (``files`` lists what it published)."""
        return {}

    def temp_for(self, final: str, directory: bool = False) -> str:
        """A temporary file (or folder) beside ``final``, which :meth:`publish_temps` renames to ``final``
        and :meth:`abort` removes."""
        tmp = temp_path(final, directory=directory)
        self._temps[final] = tmp
        return tmp

    def publish_temps(self) -> Dict[str, int]:
        """Rename every temporary over its final path, in the order they were made; return the sizes."""
        for final, tmp in self._temps.items():
            publish(tmp, final)
        return {os.path.relpath(p, self.out_dir): os.path.getsize(p) for p in self._temps}


def add_tar_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    """Add ``data`` as member ``name`` with nothing that varies between runs or machines: mtime 0, uid/gid 0,
    empty user/group names, mode 0644 -- so the same input gives byte-identical tars."""
    ti = tarfile.TarInfo(name)
    ti.size, ti.mtime, ti.mode = len(data), 0, 0o644
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    tar.addfile(ti, io.BytesIO(data))


class TarShardWriter(ShardWriter):
    """A shard that is one tar (members added by the subclass's :meth:`add`) plus one per-shard text file of
    lines, the sidecar (a manifest, a key map), which :meth:`merged_sidecars` joins for the job's index.

    Subclasses set ``tar_pattern`` (e.g. ``"audio_{shard_id}.tar"``) and ``sidecar_pattern`` (a path relative
    to ``out_dir``, e.g. ``"sharded_manifests/manifest_{shard_id}.json"``), write members to ``self.tar`` and
    lines to ``self.lines``. The tar is published before the sidecar.
    """

    tar_pattern: ClassVar[str] = ""
    sidecar_pattern: ClassVar[str] = ""

    @classmethod
    def outputs(cls, out_dir: str, shard_id: int) -> List[str]:
        return [os.path.join(out_dir, cls.tar_pattern.format(shard_id=shard_id)),
                os.path.join(out_dir, cls.sidecar_pattern.format(shard_id=shard_id))]

    def __init__(self, out_dir: str, shard_id: int, **options):
        super().__init__(out_dir, shard_id)
        tar_path, self.sidecar_path = self.outputs(out_dir, shard_id)
        os.makedirs(os.path.dirname(self.sidecar_path), exist_ok=True)
        self.tar = tarfile.open(self.temp_for(tar_path), "w", format=tarfile.PAX_FORMAT)
        self.lines: List[str] = []

    def commit(self) -> Dict[str, int]:
        self.tar.close()
        with open(self.temp_for(self.sidecar_path), "w", encoding="utf-8") as f:
            f.writelines(self.lines)
        return self.publish_temps()

    def abort(self) -> None:
        self.tar.close()
        super().abort()

    @classmethod
    def merged_sidecars(cls, out_dir: str, num_shards: int) -> bytes:
        parts = []
        for i in range(num_shards):
            with open(os.path.join(out_dir, cls.sidecar_pattern.format(shard_id=i)), "rb") as f:
                parts.append(f.read())
        return b"".join(parts)

    @classmethod
    def tar_list(cls, out_dir: str, num_shards: int) -> bytes:
        """``data.list``: the absolute tar paths, one a line (the list WeNet's and MooER's loaders read)."""
        folder = os.path.abspath(out_dir)
        return "".join(os.path.join(folder, cls.tar_pattern.format(shard_id=i)) + "\n" for i in range(num_shards)).encode()

