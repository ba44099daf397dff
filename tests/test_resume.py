"""Crash safety of checkpoints and resume after SIGKILL.

* Lightning's default save puts its temporary file in the system temp dir (why AtomicTorchCheckpointIO exists);
* AtomicTorchCheckpointIO writes beside the target, fsyncs, renames; errors and SIGKILL mid-save leave the
  previous checkpoint intact and no file matching ``*last.ckpt``;
* train.py killed with SIGKILL mid-training resumes from its last checkpoint with the same command and finishes.
"""
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
import torch

pl = pytest.importorskip("lightning.pytorch")

from nest_ext.parts import atomic_checkpoint  # noqa: E402
from nest_ext.parts.atomic_checkpoint import AtomicTorchCheckpointIO, UseAtomicCheckpointIO, atomic_torch_save  # noqa: E402

from conftest import ROOT, speech_like, write_manifest, write_wav  # noqa: E402
from test_ddp import probe_env, read_probe  # noqa: E402

PY = sys.executable


def test_lightning_default_save_uses_system_temp_dir(tmp_path, monkeypatch):
    """Canary for the reason AtomicTorchCheckpointIO exists: Lightning 2.4's TorchCheckpointIO stages the
    file in tempfile.gettempdir() and moves it, which is a copy (not atomic) across filesystems. If this
    starts failing, Lightning changed its mechanism: re-check whether the wrapper is still needed."""
    import shutil

    from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

    moves = []
    real_move = shutil.move
    monkeypatch.setattr(shutil, "move", lambda src, dst, *a, **k: (moves.append((src, dst)), real_move(src, dst, *a, **k))[1])
    target = tmp_path / "ckpts" / "x.ckpt"
    TorchCheckpointIO().save_checkpoint({"a": torch.ones(3)}, target)
    assert len(moves) == 1
    src, dst = moves[0]
    assert Path(dst) == target
    assert Path(src).parent == Path(tempfile.gettempdir()) != target.parent


def test_atomic_save_writes_beside_target_fsyncs_then_replaces(tmp_path, monkeypatch):
    events = []
    real_replace, real_fsync = os.replace, os.fsync
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", a, b)), real_replace(a, b))[1])
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", fd)), real_fsync(fd))[1])
    target = tmp_path / "run" / "m--epoch=0-last.ckpt"
    AtomicTorchCheckpointIO().save_checkpoint({"w": torch.arange(4.0)}, target)
    kinds = [e[0] for e in events]
    assert kinds.index("fsync") < kinds.index("replace")  # data on disk before the name points at it
    (_, src, dst), = [e for e in events if e[0] == "replace"]
    assert Path(src).parent == target.parent and Path(src).name.startswith(".") and src.endswith(".tmp")
    assert Path(dst) == target
    assert torch.equal(torch.load(target)["w"], torch.arange(4.0))
    assert os.listdir(target.parent) == [target.name]
    mode = target.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # not mkstemp's 0600


def test_error_during_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    target = tmp_path / "a-last.ckpt"
    atomic_torch_save({"step": 1}, target)

    def broken_save(obj, f):
        f.write(b"partial bytes")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_torch_save({"step": 2}, target)
    monkeypatch.undo()
    assert torch.load(target)["step"] == 1
    assert os.listdir(tmp_path) == [target.name]


def test_trainer_saves_through_atomic_io(tmp_path, monkeypatch):
    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            return self.lin(batch).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

        def train_dataloader(self):
            return torch.utils.data.DataLoader(torch.randn(6, 2), batch_size=2)

    saved = []
    real = atomic_checkpoint.atomic_torch_save
    monkeypatch.setattr(atomic_checkpoint, "atomic_torch_save", lambda obj, p: (saved.append(p), real(obj, p))[1])
    for i, kwargs in enumerate(({"plugins": [AtomicTorchCheckpointIO()]}, {"callbacks": [UseAtomicCheckpointIO()]})):
        saved.clear()
        ckpt = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / str(i), every_n_train_steps=1, save_last=True)
        callbacks = [ckpt, *kwargs.pop("callbacks", [])]
        trainer = pl.Trainer(max_steps=3, logger=False, enable_progress_bar=False, enable_model_summary=False,
                             accelerator="cpu", callbacks=callbacks, default_root_dir=tmp_path, **kwargs)
        trainer.fit(Tiny())
        assert isinstance(trainer.strategy.checkpoint_io, AtomicTorchCheckpointIO)
        assert any(str(p).endswith("last.ckpt") for p in saved) and len(saved) >= 3
        assert torch.load(ckpt.last_model_path, weights_only=False)["global_step"] == 3


_SLOW_SAVER = textwrap.dedent("""
    import io, sys, time, torch
    from nest_ext.parts.atomic_checkpoint import atomic_torch_save
    path = sys.argv[1]
    atomic_torch_save({"step": 1, "w": torch.ones(10)}, path)
    real_save = torch.save
    def slow_save(obj, f):  # a big checkpoint on a slow disk: many small writes
        buf = io.BytesIO(); real_save(obj, buf); data = buf.getvalue()
        for i in range(0, len(data), 4096):
            f.write(data[i:i + 4096]); f.flush(); time.sleep(0.02)
    torch.save = slow_save
    print("saving", flush=True)
    atomic_torch_save({"step": 2, "w": torch.zeros(200000)}, path)
    print("saved", flush=True)
""")


@pytest.mark.slow
def test_sigkill_during_save_leaves_previous_checkpoint(tmp_path):
    target = tmp_path / "ckpts" / "run--epoch=0-last.ckpt"
    proc = subprocess.Popen([PY, "-c", _SLOW_SAVER, str(target)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert proc.stdout.readline().strip() == "saving"
        deadline = time.time() + 60
        while time.time() < deadline:  # kill once the temporary file holds part of the new checkpoint
            temps = list(target.parent.glob(".*.tmp"))
            if temps and temps[0].stat().st_size > 20000:
                break
            time.sleep(0.01)
        else:
            pytest.fail("the temporary checkpoint never appeared")
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert torch.load(target)["step"] == 1  # the previous checkpoint, whole
    assert [p.name for p in target.parent.rglob("*last.ckpt")] == [target.name]  # what NeMo's resume globs
    assert len(list(target.parent.glob(".*.tmp"))) == 1
    # the first save into the directory after a restart removes the stale temporary
    atomic_checkpoint._cleaned_dirs.discard(str(target.parent))  # as in a fresh process
    atomic_torch_save({"step": 3}, target)
    assert sorted(os.listdir(target.parent)) == [target.name]
    assert torch.load(target)["step"] == 3


def _nest_data(root, count=8, seconds=2.0, sr=16000):
    import numpy as np

    rows = {"train": [], "val": [], "noise": []}
    for split, n in (("train", count), ("val", 2), ("noise", 2)):
        for i in range(n):
            audio = speech_like(seconds, sr, seed=50 * len(split) + i) if split != "noise" else (
                0.05 * np.random.default_rng(i).standard_normal(int(seconds * sr)).astype(np.float32))
            rows[split].append({"audio_filepath": write_wav(root / split / f"{i}.wav", audio, sr),
                                "duration": seconds, "text": ""})
    return {k: write_manifest(root / f"{k}.json", v) for k, v in rows.items()}


def _finished_last_checkpoints(ckpt_dir):
    return [p for p in Path(ckpt_dir).rglob("*last.ckpt")
            if not p.with_name(p.name[: -len(".ckpt")] + "-unfinished").exists()]


@pytest.mark.slow
def test_train_py_resumes_after_sigkill(tmp_path):
    """SIGKILL train.py after its first checkpoint, rerun the same command: it resumes from that checkpoint
    (global step continues, it does not restart at 0), loses at most one checkpoint interval, and finishes."""
    m = _nest_data(tmp_path / "data")
    probe, exp, interval, max_steps = tmp_path / "probe", tmp_path / "exp", 3, 9
    cmd = [
        PY, str(ROOT / "train.py"), "--config-name", "nest_demo",
        f"model.train_ds.manifest_filepath={m['train']}", f"model.train_ds.noise_manifest={m['noise']}",
        f"model.validation_ds.manifest_filepath={m['val']}", f"model.validation_ds.noise_manifest={m['noise']}",
        "model.train_ds.batch_size=2", "model.validation_ds.batch_size=2", "trainer.accelerator=cpu",
        "trainer.devices=1", f"trainer.max_steps={max_steps}", "trainer.num_sanity_val_steps=0",
        "trainer.enable_progress_bar=false", f"exp_manager.exp_dir={exp}",
        f"exp_manager.checkpoint_callback_params.every_n_train_steps={interval}",
        "exp_manager.checkpoint_callback_params.always_save_nemo=false",
        "exp_manager.resume_if_exists=true", "exp_manager.resume_ignore_no_checkpoint=true",
    ]
    env = probe_env(tmp_path, probe)  # a RankProbe records the global step of every batch and of the start
    log1 = open(tmp_path / "run1.log", "w")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log1, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.time() + 480
        while time.time() < deadline and proc.poll() is None and not _finished_last_checkpoints(exp):
            time.sleep(0.05)
        assert proc.poll() is None, "train.py ended before it could be killed:\n" + (tmp_path / "run1.log").read_text()[-3000:]
        assert _finished_last_checkpoints(exp), "no checkpoint within the time limit"
        os.killpg(proc.pid, signal.SIGKILL)  # the whole job, as a scheduler or a node failure does
        proc.wait(60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        log1.close()
    assert proc.returncode == -signal.SIGKILL
    last = _finished_last_checkpoints(exp)
    assert len(last) == 1, last
    saved_step = torch.load(last[0], map_location="cpu", weights_only=False)["global_step"]
    assert 0 < saved_step < max_steps
    run1_steps = [r["step"] for r in read_probe(probe) if r["event"] == "batch"]
    assert max(run1_steps) - saved_step <= interval  # work lost: at most one checkpoint interval

    run = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=480)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]
    assert "Resuming training from checkpoint" in out and last[0].name in out
    records = read_probe(probe)
    starts = [r for r in records if r["event"] == "start"]
    assert len(starts) == 2 and starts[0]["step"] == 0
    assert starts[1]["step"] == saved_step and Path(starts[1]["ckpt_path"]).name == last[0].name
    run2_steps = [r["step"] for r in records[records.index(starts[1]):] if r["event"] == "batch"]
    assert run2_steps == list(range(saved_step, max_steps))  # continues from the checkpoint, not from 0
    end = [r for r in records if r["event"] == "end"]
    assert len(end) == 1 and end[0]["step"] == max_steps
    final = _finished_last_checkpoints(exp)
    assert [torch.load(p, map_location="cpu", weights_only=False)["global_step"] for p in final] == [max_steps]
    assert "Trained model (.nemo):" in run.stdout




def test_nemo_resume_after_kill_during_save_needs_step_in_name(tmp_path):
    """What a kill during a save leaves, as NeMo's resume sees it. With atomic saves the new file never
    appears, only NeMo's "-unfinished" marker for it. If the name has no {step}, that marker belongs to the
    only *-last.ckpt and NeMo refuses to resume; with {step} in the name (NeMo's NEST configs) it resumes from
    the previous, complete checkpoint."""
    pytest.importorskip("nemo")
    from types import SimpleNamespace

    from nemo.utils.exp_manager import check_resume

    def killed_during_save(ckpt_dir, previous, new):
        ckpt_dir.mkdir(parents=True)
        atomic_torch_save({"global_step": 3}, ckpt_dir / previous)
        (ckpt_dir / (new[: -len(".ckpt")] + "-unfinished")).touch()  # NeMo's marker, set before the save

    same_name = tmp_path / "a" / "checkpoints"
    killed_during_save(same_name, "run--val_loss=1.000-epoch=0-last.ckpt", "run--val_loss=1.000-epoch=0-last.ckpt")
    with pytest.raises(ValueError, match="unfinished"):
        check_resume(SimpleNamespace(ckpt_path=None), str(same_name.parent), resume_if_exists=True,
                     resume_ignore_no_checkpoint=True)

    with_step = tmp_path / "b" / "checkpoints"
    killed_during_save(with_step, "run--val_loss=1.000-step=3-last.ckpt", "run--val_loss=1.000-step=6-last.ckpt")
    trainer = SimpleNamespace(ckpt_path=None)
    check_resume(trainer, str(with_step.parent), resume_if_exists=True, resume_ignore_no_checkpoint=True)
    assert Path(trainer.ckpt_path).name == "run--val_loss=1.000-step=3-last.ckpt"
