"""MossFormer2SeparationModel: forward, PIT training loss, metrics, .nemo round trip, configs."""
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf, open_dict

from conftest import ROOT, speech_like, write_manifest, write_wav

CONFIG = ROOT / "config"
SR = 8000


def _model_cfg(name="mossformer2_tiny"):
    cfg = OmegaConf.load(CONFIG / f"{name}.yaml")
    return cfg.model


@pytest.fixture(scope="module")
def model_cls():
    from nest_ext.models import MossFormer2SeparationModel

    return MossFormer2SeparationModel


@pytest.fixture(scope="module")
def tiny(model_cls):
    torch.manual_seed(0)
    return model_cls(_model_cfg()).eval()


def _make_set(folder, count, seconds, seed, num_spks=2):
    """Mixtures = sum of speech-like sources, and a manifest in the separation dataset's format."""
    folder = Path(folder)
    rows = []
    for i in range(count):
        n = seconds[i % len(seconds)]
        sources = [speech_like(n, SR, seed=seed + 10 * i + k) * (0.5 + 0.5 * k) for k in range(num_spks)]
        targets = [write_wav(folder / f"s{k + 1}_{i}.wav", s, SR) for k, s in enumerate(sources)]
        mix = write_wav(folder / f"mix_{i}.wav", np.sum(sources, axis=0), SR)
        speakers = [f"spk{seed + 10 * i + k}" for k in range(num_spks)]  # for dynamic mixing
        rows.append({"input_filepath": mix, "target_filepath": targets, "duration": n, "speaker_ids": speakers})
    return write_manifest(folder / f"{folder.name}_manifest.json", rows), rows


def test_forward_shapes_and_mono_layouts(tiny):
    x = torch.randn(2, 4003)
    est3, length = tiny(input_signal=x.unsqueeze(1), input_length=torch.tensor([4003, 3000]))
    est2, _ = tiny(input_signal=x)
    assert est3.shape == (2, 2, 4003)
    assert length.tolist() == [4003, 3000]
    torch.testing.assert_close(est2, est3, rtol=0, atol=0)
    with pytest.raises(ValueError, match="single-channel"):
        tiny(input_signal=torch.randn(2, 2, 4000))


def test_state_dict_is_the_mossformer2_module(tiny):
    """The model's children are MossFormer2's: the same state dict loads strictly and gives the same numbers."""
    from nest_ext.modules.mossformer2 import MossFormer2

    m = _model_cfg().masker
    reference = MossFormer2(
        num_spks=2,
        encoder_kernel_size=16,
        encoder_embedding_dim=m.embedding_dim,
        mossformer_sequence_dim=m.sequence_dim,
        num_mossformer_layer=m.num_layers,
        group_size=m.group_size,
        query_key_dim=m.query_key_dim,
        fsmn_inner_dim=m.fsmn_inner_dim,
    ).eval()
    reference.load_state_dict(tiny.state_dict(), strict=True)
    x = torch.randn(1, 3001)
    torch.testing.assert_close(tiny(input_signal=x)[0], reference(x))


def test_model_and_module_share_one_composition(tiny, monkeypatch):
    """Both run EncoderMaskerDecoder.encode_mask_decode: a hook overridden on the model changes its forward, and a
    too-short input fails with the composition's message, for the model and the bare module alike."""
    from nest_ext.modules.encoder_masker_decoder import EncoderMaskerDecoder
    from nest_ext.modules.mossformer2 import MossFormer2

    assert isinstance(tiny, EncoderMaskerDecoder) and issubclass(MossFormer2, EncoderMaskerDecoder)
    x = torch.randn(2, 1001)
    monkeypatch.setattr(tiny, "postprocess", lambda estimates, mixture: estimates + mixture.unsqueeze(1))
    residual, _ = tiny(input_signal=x)
    monkeypatch.undo()
    plain, _ = tiny(input_signal=x)
    torch.testing.assert_close(residual - plain, x.unsqueeze(1).expand(-1, 2, -1))
    for run in (lambda t: tiny(input_signal=t), MossFormer2(num_spks=2, encoder_embedding_dim=8, mossformer_sequence_dim=8,
                num_mossformer_layer=1, group_size=4, query_key_dim=8, fsmn_inner_dim=4)):
        with pytest.raises(ValueError, match="too short: the model needs at least 24"):
            run(torch.randn(1, 23))


def test_train_loss_is_pit_sisdr_and_reaches_every_parameter(model_cls):
    from nest_ext.losses.pit_sisdr import pit_si_sdr

    torch.manual_seed(1)
    model = model_cls(_model_cfg()).train()
    torch.manual_seed(2)
    sources = torch.randn(2, 2, 2400)
    mixture = sources.sum(1, keepdim=True)
    lengths = torch.tensor([2400, 1800])
    torch.manual_seed(3)
    loss = model._compute_train_loss(mixture, sources, lengths)
    torch.manual_seed(3)  # same dropout draws
    est, _ = model(input_signal=mixture, input_length=lengths)
    want = -pit_si_sdr(est, sources, lengths)[0].mean()
    assert loss.item() == pytest.approx(want.item(), abs=1e-5)
    loss.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    no_grad = [n for n, p in trainable if p.grad is None or not torch.isfinite(p.grad).all()]
    assert trainable and not no_grad
    with pytest.raises(ValueError, match="target source"):
        model._compute_train_loss(mixture, sources[:, :1], lengths)


def test_nemo_round_trip(tiny, model_cls, tmp_path):
    path = tmp_path / "tiny.nemo"
    tiny.save_to(str(path))
    restored = model_cls.restore_from(str(path), map_location="cpu").eval()
    assert isinstance(restored, model_cls)
    assert restored.sample_rate == SR and restored.num_spks == 2
    x = torch.randn(1, 2000)
    torch.testing.assert_close(restored(input_signal=x)[0], tiny(input_signal=x)[0], rtol=0, atol=0)


def _si_sdr_np(est, ref):
    est, ref = est - est.mean(), ref - ref.mean()
    proj = (est @ ref) / (ref @ ref) * ref
    return 10 * np.log10((proj @ proj) / ((est - proj) @ (est - proj)))


def test_validation_logs_sisdr_and_improvement(model_cls, tmp_path):
    from lightning.pytorch import Trainer

    manifest, rows = _make_set(tmp_path / "val", count=2, seconds=[0.5, 0.4], seed=7)
    cfg = _model_cfg()
    with open_dict(cfg):
        for ds in (cfg.validation_ds, cfg.test_ds):
            ds.manifest_filepath = manifest
            ds.batch_size = 1
    torch.manual_seed(0)
    model = model_cls(cfg)
    trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    (metrics,) = trainer.validate(model, verbose=False)
    (tested,) = trainer.test(model, verbose=False)
    assert tested == pytest.approx({k.replace("val_", "test_"): v for k, v in metrics.items()}, abs=1e-5)

    # Independent numbers: the model's estimates, the best permutation by brute force, the mixture baseline
    # (float64 here; the logged values are float32, whose rounding at ~-27 dB SI-SDR is a few 1e-3 dB)
    model.eval()
    sdrs, improvements = [], []
    for row in rows:
        import soundfile as sf

        mix, _ = sf.read(row["input_filepath"], dtype="float32")
        refs = [sf.read(p, dtype="float32")[0].astype(np.float64) for p in row["target_filepath"]]
        with torch.no_grad():
            est = model(input_signal=torch.from_numpy(mix)[None])[0][0].double().numpy()
        best = max(np.mean([_si_sdr_np(est[p[s]], refs[s]) for s in range(2)]) for p in ([0, 1], [1, 0]))
        base = np.mean([_si_sdr_np(mix.astype(np.float64), r) for r in refs])
        sdrs.append(best)
        improvements.append(best - base)
    assert metrics["val_sisdr"] == pytest.approx(np.mean(sdrs), abs=2e-2)
    assert metrics["val_sisdri"] == pytest.approx(np.mean(improvements), abs=2e-2)
    assert metrics["val_loss"] == pytest.approx(-np.mean(sdrs), abs=2e-2)


@pytest.mark.slow
def test_a_few_training_steps_with_the_tiny_config(model_cls, tmp_path):
    """trainer.fit on the tiny config with dynamic mixing: Adam + weight decay, ReduceLROnPlateau, new mixtures
    each epoch."""
    from lightning.pytorch import Trainer

    train, _ = _make_set(tmp_path / "train", count=4, seconds=[0.7], seed=100)
    val, _ = _make_set(tmp_path / "val", count=2, seconds=[0.5], seed=200)
    full = OmegaConf.load(CONFIG / "mossformer2_tiny.yaml")
    cfg = full.model
    with open_dict(cfg):
        cfg.train_ds.manifest_filepath = train
        cfg.train_ds.dynamic_mixing = True
        cfg.validation_ds.manifest_filepath = val
    trainer_cfg = OmegaConf.to_container(full.trainer)
    trainer_cfg.update(max_epochs=2, default_root_dir=str(tmp_path))
    trainer = Trainer(**trainer_cfg)
    torch.manual_seed(0)
    model = model_cls(cfg=cfg, trainer=trainer)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    trainer.fit(model)
    assert trainer.global_step == 4  # 2 epochs x (4 items / batch 2)
    changed = [n for n, p in model.named_parameters() if n in before and not torch.equal(before[n], p.detach())]
    assert len(changed) == len(before)
    optimizer = trainer.optimizers[0]
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.param_groups[0]["weight_decay"] == 1e-5
    (sched,) = trainer.lr_scheduler_configs
    assert isinstance(sched.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau) and sched.monitor == "val_loss"
    assert np.isfinite(trainer.callback_metrics["val_sisdri"].item())
    # the dataset was told the epoch: epoch 1 drew other mixtures than epoch 0
    dataset = model._train_dl.dataset
    assert dataset.mixer is not None and dataset.epoch == 1
    epoch1 = dataset[0]["input_signal"]
    dataset.set_epoch(0)
    assert not torch.equal(epoch1, dataset[0]["input_signal"])


@pytest.mark.slow
def test_train_py_trains_the_tiny_config(model_cls, tmp_path):
    """The user's command: python train.py --config-name mossformer2_tiny model.train_ds.manifest_filepath=..."""
    import subprocess
    import sys

    train, _ = _make_set(tmp_path / "train", count=4, seconds=[0.7], seed=300)
    val, _ = _make_set(tmp_path / "val", count=2, seconds=[0.5], seed=400)
    cmd = [
        sys.executable, str(ROOT / "train.py"), "--config-name", "mossformer2_tiny",
        f"model.train_ds.manifest_filepath={train}", f"model.validation_ds.manifest_filepath={val}",
        f"exp_manager.exp_dir={tmp_path / 'exp'}", "trainer.max_epochs=1",
    ]
    run = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=540)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    line = [l for l in run.stdout.splitlines() if l.startswith("Trained model (.nemo):")]
    assert line, run.stdout[-2000:]
    nemo = line[-1].split(":", 1)[1].strip()
    model = model_cls.restore_from(nemo, map_location="cpu").eval()
    assert model.cfg.train_ds.manifest_filepath == train
    assert model.separate(torch.randn(4000)).shape == (2, 4000)


@pytest.mark.parametrize(
    "name, params",
    [("mossformer2_wsj0-2mix", 55_735_410), ("mossformer2-s_wsj0-2mix", 37_755_382)],
)
def test_official_parameter_counts(model_cls, name, params):
    with torch.device("meta"):
        model = model_cls(_model_cfg(name))
    assert sum(p.numel() for p in model.parameters()) == params


def test_recipe_configs(model_cls):
    expected = {  # name: (sample rate, speakers, dynamic mixing)
        "mossformer2_wsj0-2mix": (8000, 2, True),
        "mossformer2-s_wsj0-2mix": (8000, 2, True),
        "mossformer2_wsj0-3mix": (8000, 3, True),
        "mossformer2_libri2mix": (16000, 2, False),
        "mossformer2_whamr": (8000, 2, False),
    }
    for name, (rate, spks, dm) in expected.items():
        full = OmegaConf.load(CONFIG / f"{name}.yaml")
        model = full.model
        assert model.target == "nest_ext.models.MossFormer2SeparationModel"
        assert (model.sample_rate, model.num_spks, model.train_ds.dynamic_mixing) == (rate, spks, dm), name
        assert model.masker.num_spks == spks and model.train_ds.sample_rate == rate
        assert model.train_ds.segment_seconds == 2.0
        assert (model.optim.name, model.optim.lr, model.optim.weight_decay) == ("adam", 1.5e-4, 1e-5)
        assert model.optim.sched.name == "ReduceLROnPlateau" and model.optim.sched.factor == 0.5
        assert full.trainer.gradient_clip_val == 10.0
        if spks == 3:
            with torch.device("meta"):
                built = model_cls(model)
            assert built.masker.num_spks == 3
