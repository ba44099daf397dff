"""TrainingHealthMonitor's rules for GAN training (the restoration GAN's names): each logged loss term checked on
its own, D_real/D_fake collapsing to 0 or exploding stop the run naming the rule and the values; a flat
generator loss and drifting D_real/D_fake warn at epoch end without stopping."""
import pytest
import torch

pl = pytest.importorskip("lightning.pytorch")

from nest_ext.parts.health import TrainingHealthError, TrainingHealthMonitor, health_monitor_from_config  # noqa: E402
from test_health import _Data  # noqa: E402


class Logged(pl.LightningModule):
    """Logs ``metrics_fn(epoch, batch_idx) -> {name: value}`` each batch; trains nothing that matters."""

    def __init__(self, metrics_fn, n=20):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.metrics_fn, self.n, self.steps_run = metrics_fn, n, 0

    def training_step(self, batch, batch_idx):
        self.steps_run += 1
        for name, value in self.metrics_fn(self.current_epoch, batch_idx).items():
            self.log(name, float(value))
        return self.w.sum() * 0.0 + 1.0

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(_Data(self.n), batch_size=1)


def _fit(model, monitor, epochs=1):
    trainer = pl.Trainer(max_epochs=epochs, callbacks=[monitor], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1)
    trainer.fit(model)
    return trainer


GAN = dict(gan_real_key="train/d_real", gan_fake_key="train/d_fake")


def healthy(epoch, i):
    return {"train/l1": 0.1 + 0.01 * (i % 3), "train/d_real": 0.8 + 0.01 * (i % 5), "train/d_fake": 0.6 - 0.01 * (i % 4)}


def test_each_loss_term_is_checked_alone():
    monitor = TrainingHealthMonitor(loss_keys=["train/l1", "train/adv"], nan_patience=2, **GAN)
    _fit(Logged(healthy), monitor)  # train/adv is never logged: not judged
    assert monitor.stop_reason is None

    nan_l1 = lambda e, i: {**healthy(e, i), "train/l1": float("nan") if i >= 5 else 0.1}  # noqa: E731
    with pytest.raises(TrainingHealthError, match=r"'train/l1' is NaN/Inf for 2 consecutive training batches"):
        _fit(Logged(nan_l1), TrainingHealthMonitor(loss_keys=["train/l1"], nan_patience=2))
    spike = lambda e, i: {"train/l1": 0.1 * (1 + (i % 3) / 10) * (20 if i >= 15 else 1)}  # noqa: E731
    with pytest.raises(TrainingHealthError, match=r"'train/l1' spiked above 10 x its running median .* 'train/l1' 2"):
        _fit(Logged(spike), TrainingHealthMonitor(loss_keys=["train/l1"], spike_warmup=5, spike_patience=2))


def test_discriminator_collapsing_to_zero_stops_with_the_values():
    zero = lambda e, i: {**healthy(e, i), "train/d_fake": 0.0 if i >= 5 else 0.5}  # noqa: E731
    model = Logged(zero)
    with pytest.raises(TrainingHealthError, match=r"discriminator collapsed to 0: 'train/d_real' \(0\.8.*\) and "
                                                  r"'train/d_fake' \(0\); one stayed within 0\.01 of 0 for 4 consecutive"):
        _fit(model, TrainingHealthMonitor(gan_zero_eps=0.01, collapse_patience=4, **GAN))
    assert model.steps_run == 9
    _fit(Logged(zero), TrainingHealthMonitor(collapse_patience=4, **GAN))  # rule off by default (gan_zero_eps None)


def test_discriminator_exploding_stops_with_the_values():
    big = lambda e, i: {**healthy(e, i), "train/d_real": 50.0 if i >= 10 else 0.9}  # noqa: E731
    model = Logged(big)
    with pytest.raises(TrainingHealthError, match=r"discriminator exploded: 'train/d_real' \(50\) .* above 10\.0 .* "
                                                  r"for 3 consecutive"):
        _fit(model, TrainingHealthMonitor(gan_explode=10.0, spike_patience=3, **GAN))
    assert model.steps_run == 13
    inf = lambda e, i: {**healthy(e, i), "train/d_fake": float("inf") if i >= 10 else 0.5}  # noqa: E731
    with pytest.raises(TrainingHealthError, match="discriminator exploded"):  # non-finite always counts
        _fit(Logged(inf), TrainingHealthMonitor(spike_patience=3, **GAN))


def test_flat_generator_loss_and_drifting_discriminator_warn_only():
    flat = lambda e, i: {**healthy(e, i), "train/g_loss": 1.0 - 0.001 * e}  # noqa: E731
    monitor = TrainingHealthMonitor(flat_key="train/g_loss", flat_epochs=3, flat_tolerance=0.01, **GAN)
    model = Logged(flat, n=4)
    _fit(model, monitor, epochs=5)
    assert monitor.stop_reason is None and model.steps_run == 20
    assert len(monitor.warnings) == 2  # after epochs 3 and 4 (each compared with 3 epochs before)
    assert "'train/g_loss' is flat: its epoch mean went from 1 to 0.997 over the last 3 epochs" in monitor.warnings[0]
    falling = lambda e, i: {"train/g_loss": 1.0 - 0.1 * e}  # noqa: E731
    monitor = TrainingHealthMonitor(flat_key="train/g_loss", flat_epochs=3)
    _fit(Logged(falling, n=4), monitor, epochs=5)
    assert monitor.warnings == []

    apart = lambda e, i: {"train/d_real": 0.95, "train/d_fake": 0.05 + 0.001 * i}  # noqa: E731
    monitor = TrainingHealthMonitor(gan_drift=0.5, **GAN)
    _fit(Logged(apart, n=4), monitor, epochs=2)
    assert monitor.stop_reason is None and len(monitor.warnings) == 2 and "drifted apart" in monitor.warnings[0]
    monitor = TrainingHealthMonitor(gan_drift=0.5, **GAN)
    _fit(Logged(healthy, n=4), monitor, epochs=2)
    assert monitor.warnings == []


def test_new_keys_from_config():
    monitor = health_monitor_from_config({"loss_keys": ["train/l1"], "gan_zero_eps": 0.01, "gan_explode": 10,
                                          "flat_key": "train/g_loss", "flat_epochs": 5, "gan_drift": 0.5})
    assert (monitor.loss_keys, monitor.gan_zero_eps, monitor.gan_explode) == (["train/l1"], 0.01, 10.0)
    with pytest.raises(ValueError):
        TrainingHealthMonitor(flat_epochs=0)
