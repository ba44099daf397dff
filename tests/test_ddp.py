"""Lightning DDP through NeMo's trainer config on CPU (gloo), the path users take to many GPUs and nodes:
``python train.py trainer.accelerator=cpu trainer.devices=2 trainer.strategy=ddp`` for NEST and MossFormer2.

A probe callback writes, per rank: the sampler's indices, a fingerprint of every training
batch, the validation metrics and a checksum of the final weights. The test checks that the two ranks
got disjoint shares of the data through a DistributedSampler, saw different batches, ended with identical
weights (gradients were all-reduced) and report the same validation metrics (they were reduced).
NeMo's ``safe_instantiate`` refuses ``trainer.callbacks`` targets outside its allow-list, so the probe is added
by a ``sitecustomize`` that only the test's subprocesses see (train.py is run unchanged).
"""
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pl = pytest.importorskip("lightning.pytorch")

from conftest import ROOT, speech_like, write_manifest, write_wav  # noqa: E402

TESTS = Path(__file__).resolve().parent


def _first_float_tensor(batch):
    if isinstance(batch, torch.Tensor):
        return batch if batch.is_floating_point() else None
    if dataclasses.is_dataclass(batch):
        batch = [getattr(batch, f.name) for f in dataclasses.fields(batch)]
    elif isinstance(batch, dict):
        batch = list(batch.values())
    if isinstance(batch, (list, tuple)):
        for item in batch:
            found = _first_float_tensor(item)
            if found is not None:
                return found
    return None


class RankProbe(pl.Callback):
    """Test-only callback: records what each DDP rank saw, one JSON line per event, in ``{path}.rank{R}``."""

    def __init__(self, path: str, metrics=("val_loss",)):
        self.path, self.metrics = path, list(metrics)

    def _write(self, trainer, **record):
        record.update(rank=trainer.global_rank, world_size=trainer.world_size)
        with open(f"{self.path}.rank{trainer.global_rank}", "a") as f:
            f.write(json.dumps(record) + "\n")

    def on_train_start(self, trainer, pl_module):
        self._write(trainer, event="start", step=trainer.global_step, ckpt_path=trainer.ckpt_path)

    def on_train_epoch_start(self, trainer, pl_module):
        sampler = getattr(trainer.train_dataloader, "sampler", None)
        self._write(trainer, event="sampler", type=type(sampler).__name__,
                    num_replicas=getattr(sampler, "num_replicas", None), sampler_rank=getattr(sampler, "rank", None),
                    dataset_len=len(trainer.train_dataloader.dataset), indices=[int(i) for i in sampler])

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        t = _first_float_tensor(batch)
        self._write(trainer, event="batch", step=trainer.global_step, shape=list(t.shape),
                    fingerprint=[round(float(x), 6) for x in t.detach().double().flatten(1).sum(1)])

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self._write(trainer, event="val", step=trainer.global_step,
                        metrics={k: float(trainer.callback_metrics[k]) for k in self.metrics
                                 if k in trainer.callback_metrics})

    def on_train_end(self, trainer, pl_module):
        params = torch.cat([p.detach().double().flatten() for p in pl_module.parameters()])
        self._write(trainer, event="end", step=trainer.global_step, checksum=float(params.sum()),
                    abs_checksum=float(params.abs().sum()))


_SITECUSTOMIZE = """
import json, os
if os.environ.get("NEST_EXT_TEST_PROBE"):
    import lightning.pytorch as _pl

    _init = _pl.Trainer.__init__

    def _with_probe(self, *args, **kwargs):
        from test_ddp import RankProbe

        probe = RankProbe(os.environ["NEST_EXT_TEST_PROBE"], json.loads(os.environ["NEST_EXT_TEST_PROBE_METRICS"]))
        kwargs["callbacks"] = list(kwargs.get("callbacks") or []) + [probe]
        _init(self, *args, **kwargs)

    _pl.Trainer.__init__ = _with_probe
"""


def probe_env(tmp_path, probe, metrics=("val_loss",)):
    """Environment for a train.py subprocess whose Trainer gets a RankProbe writing to ``{probe}.rank{R}``."""
    site = Path(tmp_path) / "probe_site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    path = os.pathsep.join([str(site), str(TESTS), os.environ.get("PYTHONPATH", "")])
    return dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS="1", NEST_EXT_TEST_PROBE=str(probe),
                NEST_EXT_TEST_PROBE_METRICS=json.dumps(list(metrics)))


def read_probe(path, rank=0):
    """The records a RankProbe wrote for ``rank``."""
    with open(f"{path}.rank{rank}") as f:
        return [json.loads(line) for line in f]


def _read(path, rank):
    with open(f"{path}.rank{rank}") as f:
        return [json.loads(line) for line in f]


def _run_ddp(cmd, cwd, env, timeout=500):
    run = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    return run


def _check_ranks(probe, metric_keys):
    r0, r1 = _read(probe, 0), _read(probe, 1)
    for rank, records in ((0, r0), (1, r1)):
        sampler = [r for r in records if r["event"] == "sampler"][0]
        assert sampler["type"] == "DistributedSampler" and sampler["num_replicas"] == 2
        assert sampler["sampler_rank"] == rank and sampler["world_size"] == 2
    s0 = [r for r in r0 if r["event"] == "sampler"][0]
    s1 = [r for r in r1 if r["event"] == "sampler"][0]
    # disjoint shares covering the data set (DistributedSampler pads only when the length is odd)
    assert not set(s0["indices"]) & set(s1["indices"])
    assert set(s0["indices"]) | set(s1["indices"]) == set(range(s0["dataset_len"]))
    b0 = [r["fingerprint"] for r in r0 if r["event"] == "batch"]
    b1 = [r["fingerprint"] for r in r1 if r["event"] == "batch"]
    assert b0 and len(b0) == len(b1)
    assert all(x != y for x, y in zip(b0, b1))  # each step, the ranks trained on different audio
    end0 = [r for r in r0 if r["event"] == "end"][0]
    end1 = [r for r in r1 if r["event"] == "end"][0]
    assert end0["step"] == end1["step"] > 0
    # different data but the same weights: gradients were averaged over the ranks
    assert end0["checksum"] == pytest.approx(end1["checksum"], rel=1e-9, abs=1e-9)
    assert end0["abs_checksum"] == pytest.approx(end1["abs_checksum"], rel=1e-9)
    v0 = [r["metrics"] for r in r0 if r["event"] == "val"]
    v1 = [r["metrics"] for r in r1 if r["event"] == "val"]
    assert v0 and len(v0) == len(v1)
    for m0, m1 in zip(v0, v1):
        assert set(metric_keys) <= set(m0)
        for key in metric_keys:  # reduced over ranks, although each rank validated on other files
            assert m0[key] == pytest.approx(m1[key], rel=1e-6), (
                f"{key} differs between ranks ({m0[key]} vs {m1[key]}): not reduced over DDP ranks; log it with "
                "sync_dist=True (NeMo models: on_validation_epoch_end must call super() with sync_metrics=True)")


@pytest.mark.slow
def test_nest_ddp_two_cpu_ranks(tmp_path):
    sr = 16000
    rows = {"train": [], "val": [], "noise": []}
    for split, count in (("train", 8), ("val", 4), ("noise", 2)):
        for i in range(count):
            audio = speech_like(2.0, sr, seed=100 * len(split) + i) if split != "noise" else (
                0.05 * np.random.default_rng(i).standard_normal(2 * sr).astype(np.float32))
            path = write_wav(tmp_path / split / f"{split}_{i}.wav", audio, sr)
            rows[split].append({"audio_filepath": path, "duration": 2.0, "text": ""})
    manifests = {k: write_manifest(tmp_path / f"{k}.json", v) for k, v in rows.items()}
    probe = tmp_path / "probe"
    cmd = [
        sys.executable, str(ROOT / "train.py"), "--config-name", "nest_demo",
        f"model.train_ds.manifest_filepath={manifests['train']}", f"model.train_ds.noise_manifest={manifests['noise']}",
        f"model.validation_ds.manifest_filepath={manifests['val']}",
        f"model.validation_ds.noise_manifest={manifests['noise']}",
        "model.train_ds.batch_size=2", "model.validation_ds.batch_size=2",
        "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp", "trainer.max_steps=2",
        "trainer.num_sanity_val_steps=0", "trainer.val_check_interval=2", "trainer.log_every_n_steps=1",
        f"exp_manager.exp_dir={tmp_path / 'exp'}", "exp_manager.checkpoint_callback_params.always_save_nemo=false",
        "exp_manager.checkpoint_callback_params.every_n_train_steps=2",
    ]
    _run_ddp(cmd, tmp_path, probe_env(tmp_path, probe, ["val_loss"]))
    _check_ranks(probe, ["val_loss"])


@pytest.mark.slow
def test_mossformer2_ddp_two_cpu_ranks(tmp_path):
    sr = 8000
    manifests = {}
    for split, count in (("train", 8), ("val", 4)):
        rows = []
        for i in range(count):
            sources = [speech_like(0.6, sr, seed=1000 * len(split) + 10 * i + k) * (0.5 + 0.5 * k) for k in range(2)]
            targets = [write_wav(tmp_path / split / f"s{k + 1}_{i}.wav", s, sr) for k, s in enumerate(sources)]
            mix = write_wav(tmp_path / split / f"mix_{i}.wav", np.sum(sources, axis=0), sr)
            rows.append({"input_filepath": mix, "target_filepath": targets, "duration": 0.6})
        manifests[split] = write_manifest(tmp_path / f"{split}.json", rows)
    probe = tmp_path / "probe"
    cmd = [
        sys.executable, str(ROOT / "train.py"), "--config-name", "mossformer2_tiny",
        f"model.train_ds.manifest_filepath={manifests['train']}",
        f"model.validation_ds.manifest_filepath={manifests['val']}",
        "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp", "trainer.max_epochs=1",
        f"exp_manager.exp_dir={tmp_path / 'exp'}", "exp_manager.checkpoint_callback_params.always_save_nemo=false",
    ]
    _run_ddp(cmd, tmp_path, probe_env(tmp_path, probe, ["val_sisdri", "val_loss"]))
    _check_ranks(probe, ["val_sisdri"])
