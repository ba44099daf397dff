"""Atomic writes: whatever others read (manifests, shards, audio, checkpoints, ``.nemo``) either appears
complete under its final name or not at all.

The data goes to a hidden temporary file in the same folder (same filesystem, so the rename is atomic), is
fsynced, given the mode a plain ``open()`` would give, and renamed over the target; the folder entry is
fsynced too. On any error, a killed process aside, the temporary file is removed.

Example::

    >>> import os, tempfile
    >>> from nest_ext.parts.atomic_io import atomic_path, atomic_write
    >>> d = tempfile.mkdtemp()
    >>> atomic_write(os.path.join(d, "a.json"), '{"x": 1}')
    >>> with atomic_path(os.path.join(d, "b.txt")) as tmp:   # for writers that want a path (soundfile, save_to)
    ...     _ = open(tmp, "w").write("hello")
    >>> sorted(os.listdir(d))
    ['a.json', 'b.txt']
"""
import contextlib
import os
import tempfile
from typing import Iterator, Union


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


@contextlib.contextmanager
def atomic_path(path: Union[str, os.PathLike], suffix: str = ".tmp") -> Iterator[str]:
    """Yield a temporary path beside ``path``; when the block succeeds, rename it over ``path``.

    ``suffix`` matters to writers that infer the format from the name (e.g. ``".wav"`` for soundfile).
    """
    path = os.path.abspath(os.fspath(path))
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=suffix)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, default_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    fsync_dir(directory)


def atomic_write(path: Union[str, os.PathLike], data: Union[str, bytes]) -> None:
    """Write text (UTF-8) or bytes to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
