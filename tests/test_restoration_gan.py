"""Restoration GAN (tiny config, CPU): the generator starts as the identity; epochs before gan_start_epoch train
the generator alone and leave the discriminator untouched, later ones step both; every loss term and
D_real/D_fake is logged and finite; the health monitor stops a run fed NaN and one whose discriminator
collapses; .nemo save/restore gives the same outputs; the recipe config is the users' recipe; 2-process CPU DDP
runs across gan_start_epoch; and training makes the output closer to clean than the degraded input."""
import copy
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

pl = pytest.importorskip("lightning.pytorch")
pytest.importorskip("nemo")

from omegaconf import OmegaConf  # noqa: E402

from conftest import ROOT, write_manifest, write_wav  # noqa: E402
from nest_ext.data.degradations import DegradationChain  # noqa: E402
from nest_ext.models import restoration_gan  # noqa: E402
from nest_ext.models.restoration_gan import RestorationGANModel  # noqa: E402
from nest_ext.parts.health import TrainingHealthError, health_monitor_from_config  # noqa: E402
from nest_ext.cli.synth import speech_like  # noqa: E402

SR = 16000
NOISE = [{"type": "noise", "prob": 1.0, "snr_db": [5.0, 5.0], "colors": ["white"]}]


def _pairs(folder, n, seconds=0.5, spec=NOISE, prefix="p"):
    chain, rows = DegradationChain.from_spec(spec), []
    for i in range(n):
        clean = speech_like(seconds, SR, seed=100 + i + (1000 if prefix != "p" else 0))
        degraded, _ = chain.degrade(clean, SR, seed=0, utt_id=f"{prefix}{i}")
        rows.append({"input_filepath": write_wav(folder / f"{prefix}{i}_deg.wav", degraded, SR),
                     "target_filepath": write_wav(folder / f"{prefix}{i}_clean.wav", clean, SR), "duration": seconds})
    return write_manifest(folder / f"{prefix}.json", rows)


def _cfg(train=None, val=None, **model):
    cfg = OmegaConf.load(ROOT / "config" / "restoration_gan_tiny.yaml")
    cfg.model.train_ds.manifest_filepath = train
    cfg.model.validation_ds.manifest_filepath = val
    for key, value in model.items():
        OmegaConf.update(cfg.model, key, value)
    return cfg


def _fit(cfg, max_epochs, callbacks=(), health=None):
    torch.manual_seed(0)
    monitor = [health_monitor_from_config({**cfg.model.health, **health})] if health is not None else []
    trainer = pl.Trainer(max_epochs=max_epochs, accelerator="cpu", devices=1, logger=False, log_every_n_steps=1,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, callbacks=[*monitor, *callbacks])
    model = RestorationGANModel(cfg.model, trainer=trainer)
    return model, trainer, monitor


class Recorder(pl.Callback):
    """Logged train/ metrics per batch, and the discriminator's weights and optimiser state per epoch."""

    def __init__(self):
        self.rows, self.disc, self.gen, self.disc_state = [], [], [], []

    def on_train_start(self, trainer, pl_module):
        self._snapshot(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.rows.append({"epoch": trainer.current_epoch, "step": trainer.global_step, **{
            k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")}})

    def on_train_epoch_end(self, trainer, pl_module):
        self._snapshot(pl_module)

    def _snapshot(self, pl_module):
        self.disc.append(copy.deepcopy(pl_module.discriminator.state_dict()))
        self.gen.append(copy.deepcopy(pl_module.generator.state_dict()))
        self.disc_state.append(len(pl_module.trainer.optimizers[1].state) if pl_module.trainer.optimizers else 0)


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_generator_starts_at_the_identity():
    x = torch.from_numpy(np.stack([speech_like(0.125, SR, seed=i) for i in range(3)]))[:, None]
    near = RestorationGANModel(_cfg().model).eval()  # the tiny config's gate 1.0
    out, _ = near(input_signal=x)
    assert 10 * torch.log10(((out - x) ** 2).sum() / (x**2).sum()) < -20  # correction >= 20 dB below the input
    model = RestorationGANModel(_cfg(**{"generator.gate_init": 0.0}).model).eval()
    out, length = model(input_signal=x, input_length=torch.tensor([2000, 2000, 1500]))
    torch.testing.assert_close(out[:2], x[:2], rtol=0, atol=0)
    assert length.tolist() == [2000, 2000, 1500] and out[2, 0, 1500:].abs().max() == 0
    out2, _ = model(input_signal=x[:, 0])  # [B, T] input too
    assert out2.shape == (3, 1, 2000)
    with pytest.raises(ValueError, match="single-channel"):
        model(input_signal=torch.zeros(1, 2, 2000))


def test_both_phases_run_and_log_every_term(tmp_path):
    cfg = _cfg(_pairs(tmp_path, 8), _pairs(tmp_path, 2, prefix="v"))
    rec = Recorder()
    model, trainer, _ = _fit(cfg, max_epochs=2, callbacks=[rec])
    trainer.fit(model)
    # epoch 0 (before gan_start_epoch=1): generator steps only, the discriminator untouched and never stepped
    assert rec.disc_state[:2] == [0, 0] and _same(rec.disc[0], rec.disc[1])
    assert not _same(rec.gen[0], rec.gen[1])
    epoch0 = [r for r in rec.rows if r["epoch"] == 0]
    assert len(epoch0) == 2 and all(r["train/gan_phase"] == 0 and "train/d_loss" not in r for r in epoch0)
    # epoch 1: both optimisers step; global_step counts optimiser steps (1 per batch, then 2)
    assert rec.disc_state[2] > 0 and not _same(rec.disc[1], rec.disc[2]) and not _same(rec.gen[1], rec.gen[2])
    assert [r["step"] for r in rec.rows] == [1, 2, 4, 6]
    keys = ["train/l1", "train/multi_stft", "train/adv", "train/fm", "train/d_loss", "train/d_real", "train/d_fake",
            "train/g_loss", "train/d_real_mpd", "train/d_fake_mpd", "train/d_real_mrsd", "train/d_fake_mrsd"]
    for row in [r for r in rec.rows if r["epoch"] == 1]:
        assert row["train/gan_phase"] == 1
        for key in keys:
            assert math.isfinite(row[key]), (key, row)
        # D_real / D_fake are the means over all sub-discriminators (5 periods + 2 STFT bands)
        assert row["train/d_real"] == pytest.approx((5 * row["train/d_real_mpd"] + 2 * row["train/d_real_mrsd"]) / 7)
        w = model.loss_weights
        recon = w["l1"] * row["train/l1"] + w["multi_stft"] * row["train/multi_stft"]
        assert row["train/g_loss"] == pytest.approx(recon + row["train/adv"] + 2.0 * row["train/fm"], rel=1e-5)
    for key in ("val_loss", "val_l1", "val_multi_stft", "val_sisdr", "val_multi_stft_input", "val_sisdr_input"):
        assert math.isfinite(float(trainer.callback_metrics[key])), key


def test_health_stops_a_run_fed_nan(tmp_path):
    class FeedNaN(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step >= 2:
                batch["input_signal"].fill_(float("nan"))

    cfg = _cfg(_pairs(tmp_path, 8))
    cfg.model.train_ds.batch_size = 2
    model, trainer, (monitor,) = _fit(cfg, max_epochs=1, callbacks=[FeedNaN()], health={"nan_patience": 2})
    with pytest.raises(TrainingHealthError, match=r"'train/g_loss' is NaN/Inf for 2 consecutive training batches"):
        trainer.fit(model)
    # the non-finite steps were skipped: the weights are still finite
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_health_stops_a_run_whose_discriminator_collapses(tmp_path, monkeypatch):
    real_discriminate = restoration_gan.discriminate

    def dead(part, real, fake):  # a discriminator that outputs 0 whatever it sees
        s_real, s_fake, f_real, f_fake = real_discriminate(part, real, fake)
        return [0 * s for s in s_real], [0 * s for s in s_fake], f_real, f_fake

    monkeypatch.setattr(restoration_gan, "discriminate", dead)
    cfg = _cfg(_pairs(tmp_path, 8))
    cfg.model.train_ds.batch_size = 2
    model, trainer, (monitor,) = _fit(cfg, max_epochs=3, health={"collapse_patience": 3})
    with pytest.raises(TrainingHealthError, match=r"discriminator collapsed to 0: 'train/d_real' \(0\) and "
                                                  r"'train/d_fake' \(0\); .* for 3 consecutive"):
        trainer.fit(model)
    assert trainer.current_epoch == 1  # the first GAN epoch


def test_nemo_save_restore_gives_the_same_outputs(tmp_path):
    model = RestorationGANModel(_cfg().model).eval()
    with torch.no_grad():  # a non-identity generator
        model.generator.gate.fill_(0.7)
        for p in model.discriminator.parameters():
            p.add_(0.01)
    path = tmp_path / "tiny.nemo"
    model.save_to(str(path))
    restored = RestorationGANModel.restore_from(str(path), map_location="cpu").eval()
    x = 0.1 * torch.randn(2, 1, 3000)
    with torch.no_grad():
        a, _ = model(input_signal=x)
        b, _ = restored(input_signal=x)
    assert not torch.allclose(a, x, atol=1e-4)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert _same(model.discriminator.state_dict(), restored.discriminator.state_dict())


def test_recipe_config_is_the_users_recipe():
    cfg = OmegaConf.load(ROOT / "config" / "restoration_gan.yaml")
    m = cfg.model
    assert dict(m.loss_weights) == {"l1": 3.0, "multi_stft": 3.0, "adversarial": 1.0, "feature_matching": 2.0}
    assert (m.gan_start_epoch, m.warmup_epochs, m.sample_rate) == (15, 5, 16000)
    assert (m.train_ds.batch_size, cfg.trainer.max_epochs) == (16, 60)
    model = RestorationGANModel(m)
    assert sum(p.numel() for p in model.generator.parameters()) == 18_443_203
    names = [type(d).__name__ for d in model.discriminator.discriminators]
    assert names == ["MultiPeriodDiscriminator", "MultiResolutionDiscriminatorSTFT"]
    assert type(model.feature_matching_loss).__module__ == "nemo.collections.tts.losses.audio_codec_loss"


@pytest.mark.slow
def test_training_restores_closer_to_clean_than_the_input(tmp_path):
    """An identity model fails this: after training, output -> clean beats degraded -> clean (multi-res STFT)."""
    torch.set_num_threads(1)  # much faster than 2 threads on a busy 2-core machine
    cfg = _cfg(_pairs(tmp_path, 16, seconds=1.0), gan_start_epoch=100)  # reconstruction phase only
    model, trainer, _ = _fit(cfg, max_epochs=20)  # 80 steps
    trainer.fit(model)
    test = [(speech_like(1.0, SR, seed=900 + i)) for i in range(4)]
    chain = DegradationChain.from_spec(NOISE)
    degraded = torch.stack([torch.from_numpy(chain.degrade(c, SR, 0, f"t{i}")[0]) for i, c in enumerate(test)])
    clean = torch.from_numpy(np.stack(test))
    model.eval()
    with torch.no_grad():
        out, _ = model(input_signal=degraded)
        length = torch.full((4,), clean.shape[1])
        before = float(model._multi_stft(clean, degraded, length))
        after = float(model._multi_stft(clean, out[:, 0], length))
    assert after < 0.9 * before, (before, after)


@pytest.mark.slow
def test_ddp_two_cpu_ranks_across_gan_start(tmp_path):
    from test_ddp import _check_ranks, _run_ddp, probe_env

    train, val = _pairs(tmp_path, 8), _pairs(tmp_path, 4, prefix="v")
    probe = tmp_path / "probe"
    cmd = [
        sys.executable, str(ROOT / "train.py"), "--config-name", "restoration_gan_tiny",
        f"model.train_ds.manifest_filepath={train}", f"model.validation_ds.manifest_filepath={val}",
        "model.train_ds.batch_size=2", "model.validation_ds.batch_size=2",
        "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp", "trainer.max_epochs=2",
        f"exp_manager.exp_dir={tmp_path / 'exp'}", "exp_manager.checkpoint_callback_params.always_save_nemo=false",
    ]
    run = _run_ddp(cmd, tmp_path, probe_env(tmp_path, probe, ["val_loss", "val_sisdr"]))
    _check_ranks(probe, ["val_loss", "val_sisdr"])
    ends = [r for r in __import__("test_ddp").read_probe(probe, 0) if r["event"] == "end"]
    assert ends[0]["step"] == 2 + 2 * 2  # epoch 0: 2 generator steps; epoch 1: 2 x (D + G) steps
    assert "Trained model" in run.stdout
