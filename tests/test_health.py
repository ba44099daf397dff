"""TrainingHealthMonitor on a tiny Lightning module (no NeMo): stops with the reason on NaN/Inf loss, loss spikes
and a collapsed discriminator, never writes a NaN checkpoint, warns on data-bound steps; healthy runs finish."""
import math
import time

import pytest
import torch

pl = pytest.importorskip("lightning.pytorch")

from nest_ext.parts.health import (  # noqa: E402
    TrainingHealthError,
    TrainingHealthMonitor,
    add_health_monitor,
    health_monitor_from_config,
)


class _Data(torch.utils.data.Dataset):
    def __init__(self, n, delay=0.0):
        self.n, self.delay = n, delay

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if self.delay:
            time.sleep(self.delay)
        return torch.tensor([float(i)])


class Scripted(pl.LightningModule):
    """loss = scale(step) * (1 + w^2) with w a real parameter, so a NaN scale makes NaN gradients and weights."""

    def __init__(self, scale_fn, n=60, data_delay=0.0, compute_delay=0.0, gan_fn=None, lr=0.0, skip_nonfinite=False):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.scale_fn, self.n, self.data_delay, self.compute_delay, self.gan_fn, self.lr = (
            scale_fn, n, data_delay, compute_delay, gan_fn, lr)
        self.steps_run = 0
        self.skip_nonfinite = skip_nonfinite

    def training_step(self, batch, batch_idx):
        if self.compute_delay:
            time.sleep(self.compute_delay)
        self.steps_run += 1
        if self.gan_fn is not None:
            real, fake = self.gan_fn(batch_idx)
            self.log("d_real", real)
            self.log("d_fake", fake)
        return (1.0 + self.w.pow(2).sum()) * self.scale_fn(batch_idx)

    def on_before_optimizer_step(self, optimizer):
        if self.skip_nonfinite:  # like fp16 AMP's GradScaler: a step with non-finite gradients changes nothing
            for p in self.parameters():
                if p.grad is not None and not torch.isfinite(p.grad).all():
                    p.grad.zero_()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(_Data(self.n, self.data_delay), batch_size=1)


def _fit(model, monitor, max_steps=None, callbacks=(), root=None, **kw):
    trainer = pl.Trainer(
        max_steps=max_steps or model.n, max_epochs=1, callbacks=[monitor, *callbacks], logger=False,
        enable_checkpointing=bool(callbacks), enable_progress_bar=False, enable_model_summary=False,
        accelerator="cpu", devices=1, default_root_dir=root, **kw)
    trainer.fit(model)
    return trainer


def _noisy(level, seed=0):
    gen = torch.Generator().manual_seed(seed)
    noise = torch.rand(1000, generator=gen) * 0.5 + 0.75  # +-25 % around the level
    return lambda i: float(level * noise[i])


def test_nan_for_patience_steps_stops_with_reason():
    model = Scripted(lambda i: float("nan") if i >= 10 else 1.0)
    with pytest.raises(TrainingHealthError, match=r"NaN/Inf for 3 consecutive training batches") as err:
        _fit(model, TrainingHealthMonitor(nan_patience=3))
    assert "global steps 11-13" in err.value.reason
    assert model.steps_run == 13  # stopped at the third NaN batch, not later


def test_inf_and_isolated_nan_below_patience():
    with pytest.raises(TrainingHealthError, match="NaN/Inf"):
        _fit(Scripted(lambda i: float("inf") if i >= 5 else 1.0), TrainingHealthMonitor(nan_patience=2))
    # two isolated non-finite batches (as fp16 AMP skips) are tolerated with patience 3
    monitor = TrainingHealthMonitor(nan_patience=3)
    model = Scripted(lambda i: float("nan") if i in (7, 8, 20) else 1.0, lr=0.1, skip_nonfinite=True)
    _fit(model, monitor)
    assert monitor.stop_reason is None and model.steps_run == model.n


def test_healthy_noisy_run_is_not_stopped():
    monitor = TrainingHealthMonitor(spike_window=20, spike_warmup=10, spike_patience=1, data_wait_interval=1000)
    model = Scripted(_noisy(3.0))
    _fit(model, monitor)
    assert monitor.stop_reason is None and model.steps_run == model.n


def test_loss_spike_stops_after_warmup_with_numbers():
    base = _noisy(2.0)
    model = Scripted(lambda i: base(i) * (50.0 if i >= 30 else 1.0))
    monitor = TrainingHealthMonitor(spike_factor=10, spike_window=20, spike_warmup=10, spike_patience=3)
    with pytest.raises(TrainingHealthError, match=r"spiked above 10 x its running median") as err:
        _fit(model, monitor)
    assert "global steps 31-33" in err.value.reason and "median of the last 20" in err.value.reason
    assert model.steps_run == 33


def test_spike_needs_warmup_and_patience():
    # a spike during warm-up (the loss falls fast early on) is not judged
    model = Scripted(lambda i: 100.0 if i == 3 else 1.0)
    _fit(model, TrainingHealthMonitor(spike_window=20, spike_warmup=10, spike_patience=1))
    assert model.steps_run == model.n
    # two spiking batches with patience 3, then back to normal: not stopped
    model = Scripted(lambda i: 100.0 if i in (30, 31) else 1.0)
    _fit(model, TrainingHealthMonitor(spike_window=20, spike_warmup=10, spike_patience=3))
    assert model.steps_run == model.n
    # spike_factor None disables the check
    model = Scripted(lambda i: 100.0 if i >= 30 else 1.0)
    _fit(model, TrainingHealthMonitor(spike_factor=None, spike_warmup=10))
    assert model.steps_run == model.n


def test_spike_on_negative_loss():
    # -SI-SDR style loss around -10: rising to +100 is a blow-up; rising to -8 is not
    base = _noisy(-10.0)
    with pytest.raises(TrainingHealthError, match="spiked"):
        _fit(Scripted(lambda i: 100.0 if i >= 30 else base(i)),
             TrainingHealthMonitor(spike_window=20, spike_warmup=10, spike_patience=2))
    model = Scripted(lambda i: -8.0 if i >= 30 else base(i))
    _fit(model, TrainingHealthMonitor(spike_window=20, spike_warmup=10, spike_patience=2))
    assert model.steps_run == model.n


def test_nan_state_never_overwrites_last_good_checkpoint(tmp_path):
    # lr > 0: the first NaN batch makes NaN gradients and NaN weights; checkpoints every step
    ckpt = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=1, save_last=True, save_top_k=-1)
    model = Scripted(lambda i: float("nan") if i >= 8 else 1.0, lr=0.1)
    with pytest.raises(TrainingHealthError):
        _fit(model, TrainingHealthMonitor(nan_patience=3), callbacks=[ckpt], root=tmp_path)
    saved = sorted(tmp_path.glob("*.ckpt"))
    assert saved
    steps = []
    for path in saved:
        state = torch.load(path, map_location="cpu", weights_only=False)
        assert all(torch.isfinite(t).all() for t in state["state_dict"].values()), path
        steps.append(state["global_step"])
    # the NaN update happened in batch 8 (global step 9); the newest checkpoint is the last good one
    assert max(steps) == 8
    last = torch.load(tmp_path / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == 8


def test_checkpoint_with_nan_params_refused_during_grace_steps(tmp_path):
    ckpt = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=5, save_top_k=-1)
    model = Scripted(lambda i: float("nan") if i >= 7 else 1.0, lr=0.1)
    with pytest.raises(TrainingHealthError, match="refusing to save a checkpoint at global step 10"):
        _fit(model, TrainingHealthMonitor(nan_patience=50), callbacks=[ckpt], root=tmp_path)
    assert [p.name for p in tmp_path.glob("*.ckpt")] == ["epoch=0-step=5.ckpt"]


def test_discriminator_collapse():
    gen = torch.Generator().manual_seed(1)
    rnd = torch.rand(200, 2, generator=gen)

    def healthy(i):
        return 0.6 + 0.3 * float(rnd[i, 0]), 0.1 + 0.3 * float(rnd[i, 1])

    monitor = TrainingHealthMonitor(collapse_patience=5)
    model = Scripted(lambda i: 1.0, gan_fn=healthy)
    _fit(model, monitor)
    assert monitor.stop_reason is None and model.steps_run == model.n

    # D outputs equal on real and fake (but moving)
    equal = lambda i: healthy(i) if i < 20 else (float(rnd[i, 0]),) * 2  # noqa: E731
    with pytest.raises(TrainingHealthError, match=r"discriminator collapsed: 'd_real' .* stayed equal .* 5 consecutive"):
        _fit(Scripted(lambda i: 1.0, gan_fn=equal), TrainingHealthMonitor(collapse_patience=5))
    # D outputs constant (saturated), different from each other
    constant = lambda i: healthy(i) if i < 20 else (1.0, 0.0)  # noqa: E731
    model = Scripted(lambda i: 1.0, gan_fn=constant)
    with pytest.raises(TrainingHealthError, match="stayed constant"):
        _fit(model, TrainingHealthMonitor(collapse_patience=5))
    assert model.steps_run == 26  # batches 0-19 healthy, 20 moves to (1, 0), 21-25 constant: 5th at 25


def test_data_wait_warning_for_slow_loader_only():
    slow_data = TrainingHealthMonitor(data_wait_interval=10)
    _fit(Scripted(lambda i: 1.0, n=32, data_delay=0.03), slow_data)
    assert slow_data.stop_reason is None
    assert len(slow_data.data_wait_warnings) == 3  # once per 10-batch interval (31 gaps)
    assert "waiting for data took" in slow_data.data_wait_warnings[0]
    assert "num_workers" in slow_data.data_wait_warnings[0]

    slow_compute = TrainingHealthMonitor(data_wait_interval=10)
    _fit(Scripted(lambda i: 1.0, n=32, compute_delay=0.03), slow_compute)
    assert slow_compute.data_wait_warnings == []


def test_config_and_callback_assembly():
    monitor = health_monitor_from_config({"nan_patience": 2, "spike_factor": 5.0, "enabled": True})
    assert (monitor.nan_patience, monitor.spike_factor) == (2, 5.0)
    assert health_monitor_from_config(None).nan_patience == 3
    assert health_monitor_from_config({"enabled": False}) is None
    with pytest.raises(ValueError, match="nan_patiense"):
        health_monitor_from_config({"nan_patiense": 2})
    with pytest.raises(ValueError):
        TrainingHealthMonitor(nan_patience=0)

    omegaconf = pytest.importorskip("omegaconf")
    cfg = omegaconf.OmegaConf.create({"model": {"optim": {}}})
    cbs = add_health_monitor([], cfg.model)  # NeMo-parity config without a health key: on by default
    assert len(cbs) == 1 and isinstance(cbs[0], TrainingHealthMonitor)
    cfg = omegaconf.OmegaConf.create({"model": {"health": {"enabled": False}}})
    assert add_health_monitor([], cfg.model) == []
    cfg = omegaconf.OmegaConf.create({"model": {"health": {"nan_patience": 7}}})
    assert add_health_monitor(None, cfg.model)[0].nan_patience == 7
    own = TrainingHealthMonitor(nan_patience=9)  # given through trainer.callbacks: not duplicated
    assert add_health_monitor([own], cfg.model) == [own]
    assert math.isclose(add_health_monitor([], {"health": None})[0].spike_factor, 10.0)


def test_trainer_callbacks_config_builds_the_monitor_through_nemo():
    pytest.importorskip("nemo")
    from nemo.core.classes.common import UnsafeTargetError
    from nemo.utils.trainer_utils import resolve_trainer_cfg
    from omegaconf import OmegaConf

    from nest_ext.parts.nemo_targets import allow_nest_ext_targets

    cfg = OmegaConf.create({"callbacks": [{"_target_": "nest_ext.parts.health.TrainingHealthMonitor",
                                           "nan_patience": 5}]})
    allow_nest_ext_targets(TrainingHealthMonitor)
    (monitor,) = resolve_trainer_cfg(cfg)["callbacks"]
    assert isinstance(monitor, TrainingHealthMonitor) and monitor.nan_patience == 5
    # only the exact class was allowed, not its module
    bad = OmegaConf.create({"callbacks": [{"_target_": "nest_ext.parts.health.TrainingHealthError", "reason": "x"}]})
    with pytest.raises(UnsafeTargetError):
        resolve_trainer_cfg(bad)


def test_train_py_attaches_monitor_from_model_health():
    pytest.importorskip("nemo")
    from omegaconf import OmegaConf

    from nest_ext.cli import train
    from nest_ext.parts.atomic_checkpoint import UseAtomicCheckpointIO

    def kinds(cfg):
        return [type(cb).__name__ for cb in train.build_callbacks(OmegaConf.create(cfg))]

    base = {"trainer": {"devices": 1}, "model": {}}
    assert sorted(kinds(base)) == ["TrainingHealthMonitor", "UseAtomicCheckpointIO"]  # on by default
    (monitor,) = [cb for cb in train.build_callbacks(OmegaConf.create(
        {"trainer": {}, "model": {"health": {"nan_patience": 4}}})) if isinstance(cb, TrainingHealthMonitor)]
    assert monitor.nan_patience == 4
    assert kinds({"trainer": {}, "model": {"health": {"enabled": False}}}) == ["UseAtomicCheckpointIO"]
    # a monitor from trainer.callbacks (instantiated by NeMo, as train.py's trainer_kwargs does) is not doubled
    from nemo.utils.trainer_utils import resolve_trainer_cfg

    from nest_ext.parts.nemo_targets import allow_nest_ext_targets

    allow_nest_ext_targets(TrainingHealthMonitor)
    listed = OmegaConf.create({"trainer": {"callbacks": [{"_target_": "nest_ext.parts.health.TrainingHealthMonitor",
                                                          "nan_patience": 9}]}, "model": {}})
    configured = resolve_trainer_cfg(listed.trainer)["callbacks"]
    callbacks = train.build_callbacks(listed, configured)
    assert [type(cb).__name__ for cb in callbacks] == ["TrainingHealthMonitor", "UseAtomicCheckpointIO"]
    assert callbacks[0] is configured[0] and callbacks[0].nan_patience == 9
    assert isinstance(train.build_callbacks(OmegaConf.create(base))[0], UseAtomicCheckpointIO)
