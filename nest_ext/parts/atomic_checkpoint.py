"""Crash-safe checkpoint files: write to a temporary file in the checkpoint's own directory, fsync, then
``os.replace`` -- so a killed or crashed save never leaves a partial ``*.ckpt`` under the final name.

Why not Lightning's default: ``TorchCheckpointIO`` (Lightning 2.4) serialises the whole checkpoint into an
in-memory buffer, then writes it through an fsspec transaction whose local temporary file comes from
``tempfile.mkstemp()`` -- in the *system* temp directory -- and is moved with ``shutil.move``. When ``/tmp``
and the checkpoint directory are on different filesystems (the usual cluster set-up: node-local or RAM
``/tmp``, checkpoints on NFS/Lustre) that move is a copy followed by a delete, so a kill during it leaves a
truncated checkpoint under its final name, and the full checkpoint must fit in ``/tmp`` (and in RAM twice).
Nothing is fsynced. NeMo's ``NeMoModelCheckpoint`` adds an "unfinished" marker file around each save, which
lets ``resume_if_exists`` skip a checkpoint whose save did not finish -- but if that was the only
``*last.ckpt``, resuming stops with "Last checkpoint is unfinished" and needs a person. With this
``CheckpointIO`` an interrupted save leaves only a hidden ``.<name>.tmp.<host>.<pid>.<random>.tmp`` (never
matched by ``*last.ckpt``; removed by the next save into that directory) and the previous checkpoint
untouched.

Use it with ``Trainer(plugins=[AtomicTorchCheckpointIO()])``, or add :class:`UseAtomicCheckpointIO` to the
callbacks (it installs the IO at setup when the strategy still has Lightning's default). Remote paths
(``s3://`` etc.) are passed to Lightning's implementation unchanged.

Example::

    >>> import os, tempfile, torch
    >>> d = tempfile.mkdtemp()
    >>> atomic_torch_save({'w': torch.ones(2)}, os.path.join(d, 'a.ckpt'))
    >>> sorted(os.listdir(d)), torch.load(os.path.join(d, 'a.ckpt'))['w'].tolist()
    (['a.ckpt'], [1.0, 1.0])
"""
from __future__ import annotations

import glob
import os
import threading
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.callbacks import Callback

from nest_ext.parts.atomic_io import atomic_path

__all__ = ["AtomicTorchCheckpointIO", "UseAtomicCheckpointIO", "atomic_torch_save", "TEMP_SUFFIX"]

TEMP_SUFFIX = ".tmp"
_cleaned_dirs = set()
_cleaned_lock = threading.Lock()


def _temp_pattern(directory: str) -> str:
    return os.path.join(directory, f".*{TEMP_SUFFIX}")


def _remove_stale_temps(directory: str) -> None:
    """Delete temporaries left by a save that was killed, once per directory and process (the writer is
    rank 0 alone, so no other save into this directory is in flight when it first saves there)."""
    with _cleaned_lock:
        if directory in _cleaned_dirs:
            return
        _cleaned_dirs.add(directory)
    for stale in glob.glob(_temp_pattern(directory)):
        if ".ckpt." in os.path.basename(stale):
            try:
                os.remove(stale)
            except FileNotFoundError:
                pass


def atomic_torch_save(obj: Any, path: Union[str, Path]) -> None:
    """``torch.save(obj, path)`` that either completes or leaves ``path`` as it was.

    Written through :func:`nest_ext.parts.atomic_io.atomic_path`: the data goes to a hidden
    ``.<name>.tmp.<host>.<pid>.<random>.tmp`` beside ``path`` (same filesystem, so the rename is atomic), is
    fsynced, then renamed over ``path``; the directory entry is fsynced too. On any error the temporary file
    is removed and the error re-raised.
    """
    path = os.path.abspath(os.fspath(path))
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    _remove_stale_temps(directory)
    with atomic_path(path, suffix=TEMP_SUFFIX) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


class AtomicTorchCheckpointIO(TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO`` whose local saves go through :func:`atomic_torch_save`."""

    def save_checkpoint(self, checkpoint: Dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None or not _is_local_file_protocol(path):
            return super().save_checkpoint(checkpoint, path, storage_options=storage_options)
        local = str(path)
        if local.startswith("file://"):
            local = local[len("file://"):]
        atomic_torch_save(checkpoint, local)


class UseAtomicCheckpointIO(Callback):
    """Installs :class:`AtomicTorchCheckpointIO` on the trainer's strategy at setup, when the strategy uses
    Lightning's plain ``TorchCheckpointIO``; a custom or asynchronous CheckpointIO is left alone.

    For scripts that assemble callbacks but not plugins. Setup runs before any checkpoint is written.
    """

    def setup(self, trainer, pl_module, stage: str) -> None:
        strategy = trainer.strategy
        if type(getattr(strategy, "_checkpoint_io", None) or strategy.checkpoint_io) is TorchCheckpointIO:
            strategy.checkpoint_io = AtomicTorchCheckpointIO()
