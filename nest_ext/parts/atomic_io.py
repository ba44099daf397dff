"""Atomic writes: whatever others read (manifests, shards, audio, checkpoints, ``.nemo``) either appears
complete under its final name or not at all.

The data goes to a hidden temporary file in the same folder (same filesystem, so the rename is atomic), is
fsynced, given the mode a plain ``open()`` would give, and renamed over the target; the folder entry is
fsynced too. On any error, a killed process aside, the temporary file is removed.

A temporary file is named ``.<name>.tmp.<host>.<pid>.<random><suffix>``: what it is for, and whose it is.
A killed writer leaves one behind; :func:`remove_temps` deletes those of a target, and with
``only_orphans=True`` only those whose writer is gone, for targets another live process may be writing
(processes of a split job sharing a folder).

Example::

    >>> import os, tempfile
    >>> from nest_ext.parts.atomic_io import atomic_path, atomic_write, publish, remove_temps, temp_path
    >>> d = tempfile.mkdtemp()
    >>> atomic_write(os.path.join(d, "a.json"), '{"x": 1}')
    >>> with atomic_path(os.path.join(d, "b.txt")) as tmp:   # for writers that want a path (soundfile, save_to)
    ...     _ = open(tmp, "w").write("hello")
    >>> sorted(os.listdir(d))
    ['a.json', 'b.txt']
    >>> tmp = temp_path(os.path.join(d, "c.tar"))           # for writers that fill a file over time
    >>> os.path.basename(tmp).startswith(".c.tar.tmp.")
    True
    >>> publish(tmp, os.path.join(d, "c.tar"))
    >>> stale = temp_path(os.path.join(d, "c.tar"))         # as a killed run would leave it
    >>> remove_temps(os.path.join(d, "c.tar"))
    >>> sorted(os.listdir(d))
    ['a.json', 'b.txt', 'c.tar']
"""
import contextlib
import glob
import os
import re
import shutil
import tempfile
import time
from typing import Iterator, Union

PathLike = Union[str, os.PathLike]
TEMP_TAG = ".tmp."
# Host names go into temporary names, so they may not hold the '.' that separates the name's fields.
_HOST = re.sub(r"[^\w\-]", "_", os.uname().nodename if hasattr(os, "uname") else "host")


def default_mode() -> int:
    """The mode a plain ``open()`` creates files with (``mkstemp`` makes them 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def fsync_dir(directory: str) -> None:
    """Make a rename durable across power loss too (a SIGKILL alone would not need it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temp_path(path: PathLike, suffix: str = "", directory: bool = False) -> str:
    """Create an empty hidden temporary file (or folder, with ``directory``) beside ``path`` and return its
    name, ``.<name>.tmp.<host>.<pid>.<random><suffix>``. Hand it to :func:`publish` when it is complete and
    to :func:`discard` when it is not; the folder of ``path`` must exist."""
    path = os.path.abspath(os.fspath(path))
    folder, name = os.path.split(path)
    prefix = f".{name}{TEMP_TAG}{_HOST}.{os.getpid()}."
    if directory:
        return tempfile.mkdtemp(dir=folder, prefix=prefix, suffix=suffix)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=prefix, suffix=suffix)
    os.close(fd)
    return tmp


def publish(tmp: PathLike, path: PathLike) -> None:
    """fsync the complete file ``tmp``, give it a plain ``open()``'s mode and rename it over ``path``
    (same filesystem), then fsync the folder entry."""
    tmp, path = os.fspath(tmp), os.fspath(path)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.chmod(tmp, default_mode())
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def discard(tmp: PathLike) -> None:
    """Remove a temporary file or folder if it is there."""
    tmp = os.fspath(tmp)
    if os.path.isdir(tmp) and not os.path.islink(tmp):
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        try:
            os.remove(tmp)
        except FileNotFoundError:
            pass


def temp_owner_gone(tmp: PathLike, max_age_s: float = 3600.0) -> bool:
    """True when the process that made ``tmp`` is dead (same host), or, made on another host (whose processes
    cannot be asked), when the file is older than ``max_age_s``."""
    tmp = os.fspath(tmp)
    fields = os.path.basename(tmp).rsplit(TEMP_TAG, 1)[-1].split(".")
    if len(fields) >= 2 and fields[0] == _HOST and fields[1].isdigit():
        try:
            os.kill(int(fields[1]), 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, owned by another user
            return False
        return False
    try:
        return time.time() - os.path.getmtime(tmp) > max_age_s
    except OSError:
        return False


def remove_temps(path: PathLike, only_orphans: bool = False) -> None:
    """Delete the temporary files and folders of ``path`` that killed writers left behind; with
    ``only_orphans`` only those whose writer is gone (:func:`temp_owner_gone`)."""
    folder, name = os.path.split(os.path.abspath(os.fspath(path)))
    for tmp in glob.glob(os.path.join(glob.escape(folder), f".{glob.escape(name)}{TEMP_TAG}*")):
        if not (only_orphans and not temp_owner_gone(tmp)):
            discard(tmp)


@contextlib.contextmanager
def atomic_path(path: PathLike, suffix: str = ".tmp") -> Iterator[str]:
    """Yield a temporary path beside ``path``; when the block succeeds, rename it over ``path``.

    ``suffix`` matters to writers that infer the format from the name (e.g. ``".wav"`` for soundfile).
    """
    path = os.path.abspath(os.fspath(path))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = temp_path(path, suffix=suffix)
    try:
        yield tmp
        publish(tmp, path)
    except BaseException:
        discard(tmp)
        raise


def atomic_write(path: PathLike, data: Union[str, bytes]) -> None:
    """Write text (UTF-8) or bytes to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
