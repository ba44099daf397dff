"""NEST model: NeMo's loss on the same batch and weights, our data path, the encoder toggle, .nemo round trip."""
import copy
import logging

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf, open_dict

from conftest import ROOT, write_manifest, write_wav
from nest_ext.cli.synth import speech_like
from nest_ext.parts.synthetic_noise import noise_like

NEMO_CONFORMER = "nemo.collections.asr.modules.ConformerEncoder"
OUR_CONFORMER = "nest_ext.modules.ConformerEncoder"
# our class -> NeMo's class, to build NeMo's twin of one of our configs
NEMO_TWINS = {OUR_CONFORMER: NEMO_CONFORMER, "nest_ext.losses.MultiMLMLoss": "nemo.collections.asr.losses.MultiMLMLoss",
              "nest_ext.modules.RandomProjectionVectorQuantizer": "nemo.collections.asr.modules.RandomProjectionVectorQuantizer"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A 6-utterance training manifest and a 2-file noise manifest of synthetic audio."""
    d = tmp_path_factory.mktemp("nest_data")
    entries = []
    for i in range(6):
        dur = 1.2 + 0.1 * i
        write_wav(d / f"utt{i}.wav", speech_like(dur, 16000, seed=i))
        entries.append({"audio_filepath": f"utt{i}.wav", "duration": dur, "text": ""})
    noise = []
    for i in range(2):
        write_wav(d / f"noise{i}.wav", noise_like(4.0, 16000, seed=i))
        noise.append({"audio_filepath": f"noise{i}.wav", "duration": 4.0})
    return write_manifest(d / "train.json", entries), write_manifest(d / "noise.json", noise)


def tiny_cfg(manifest=None, noise=None, encoder_target=None):
    """Our NEST config, shrunk to a few thousand parameters (dropout off so train/eval agree)."""
    cfg = OmegaConf.load(ROOT / "config" / "nest_fast-conformer.yaml").model
    with open_dict(cfg):
        cfg.num_classes = 16
        cfg.encoder.update(d_model=32, n_heads=2, n_layers=1, subsampling_conv_channels=16, dropout=0.0,
                           dropout_pre_encoder=0.0, dropout_att=0.0)
        cfg.masking.mask_prob = 0.05
        if encoder_target:
            cfg.encoder._target_ = encoder_target
        for key in ("train_ds", "validation_ds"):
            if manifest is None:
                cfg[key] = None
            else:
                cfg[key].update(manifest_filepath=manifest, noise_manifest=noise, batch_size=3, num_workers=0,
                                pin_memory=False, min_duration=0.5, shuffle=False)
                cfg[key].batch_augmentor.prob = 1.0
    return cfg


def nemo_twin(cfg):
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        for section in ("encoder", "loss", "quantizer"):
            cfg[section]._target_ = NEMO_TWINS.get(cfg[section]._target_, cfg[section]._target_)
        cfg.train_ds = cfg.validation_ds = None
    return cfg


def ours_class():
    from nest_ext.models import EncDecDenoiseMaskedTokenPredModel

    return EncDecDenoiseMaskedTokenPredModel


@pytest.mark.parametrize("toggle", ["true", "0"])
def test_loss_equals_nemo_on_same_batch_and_weights(data, monkeypatch, toggle):
    """Our model (NeMo's encoder with the toggle on, the config's otherwise) gives NeMo's validation loss."""
    from nemo.collections.asr.models.ssl_models import EncDecDenoiseMaskedTokenPredModel as NeMoModel

    monkeypatch.setenv("USE_NEMO_CONFORMER", toggle)
    manifest, noise = data
    torch.manual_seed(0)
    cfg = tiny_cfg(manifest, noise, encoder_target=OUR_CONFORMER)
    ours = ours_class()(cfg=cfg)
    from nemo.collections.asr.modules import ConformerEncoder as NeMoConformer
    from nest_ext.modules import ConformerEncoder as OurConformer

    assert type(ours.encoder) is (NeMoConformer if toggle == "true" else OurConformer)
    nemo = NeMoModel(cfg=nemo_twin(cfg))
    ours.load_state_dict(nemo.state_dict(), strict=True)
    ours.eval(), nemo.eval()

    torch.manual_seed(1)
    batch = next(iter(ours._train_dl))  # our dataset + NeMo's collate and batch augmentor
    assert batch.noisy_audio.shape == batch.audio.shape and not torch.equal(batch.noisy_audio, batch.audio)
    losses = []
    for model in (ours, nemo):
        torch.manual_seed(2)  # the block masking draws from torch's RNG
        with torch.no_grad():
            losses.append(model.inference_pass(batch, 0, apply_mask=True)["val_loss"])
    assert torch.isfinite(losses[1]) and losses[1] > 0
    torch.testing.assert_close(losses[0], losses[1], atol=1e-5, rtol=1e-5)


def test_data_path_is_ours_with_worker_options(data):
    from nest_ext.data.ssl_dataset import AudioNoiseDataset

    manifest, noise = data
    cfg = tiny_cfg(manifest, noise)
    with open_dict(cfg):
        cfg.train_ds.update(num_workers=2, persistent_workers=True, prefetch_factor=3)
        cfg.validation_ds.update(persistent_workers=True, prefetch_factor=3)  # ignored without workers
    model = ours_class()(cfg=cfg)
    dl = model._train_dl
    assert isinstance(dl.dataset, AudioNoiseDataset)
    assert (dl.num_workers, dl.persistent_workers, dl.prefetch_factor, dl.batch_size) == (2, True, 3, 3)
    assert model._validation_dl.num_workers == 0 and model.loss.needs_labels


def test_no_manifest_builds_no_loader():
    model = ours_class()(cfg=tiny_cfg())
    assert model._train_dl is None and model._validation_dl is None


@pytest.mark.parametrize("value,nemo", [("TRUE", True), ("1", True), ("yes", True), ("0", False), ("", False)])
def test_toggle_and_saved_target(monkeypatch, value, nemo):
    from nemo.collections.asr.modules import ConformerEncoder as NeMoConformer
    from nest_ext.modules import ConformerEncoder as OurConformer

    monkeypatch.setenv("USE_NEMO_CONFORMER", value)
    model = ours_class()(cfg=tiny_cfg(encoder_target=OUR_CONFORMER))
    assert type(model.encoder) is (NeMoConformer if nemo else OurConformer)
    assert model.cfg.encoder._target_ == NEMO_CONFORMER  # the saved config is portable: NeMo's class either way
    assert model.hparams["cfg"]["encoder"]["_target_"] == NEMO_CONFORMER


def test_nemo_round_trip_across_the_toggle(tmp_path, monkeypatch):
    """Saved with NeMo's encoder (toggle on), restored with ours: same weights, same outputs."""
    from nest_ext.modules import ConformerEncoder as OurConformer

    monkeypatch.setenv("USE_NEMO_CONFORMER", "true")
    torch.manual_seed(0)
    model = ours_class()(cfg=tiny_cfg(encoder_target=OUR_CONFORMER)).eval()
    path = str(tmp_path / "nest.nemo")
    model.save_to(path)
    monkeypatch.setenv("USE_NEMO_CONFORMER", "false")
    restored = ours_class().restore_from(path, map_location="cpu").eval()
    assert type(restored) is type(model) and type(restored.encoder) is OurConformer
    sd_a, sd_b = model.state_dict(), restored.state_dict()
    assert sd_a.keys() == sd_b.keys() and all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)

    g = torch.Generator().manual_seed(3)
    audio = 0.1 * torch.randn(2, 16000, generator=g)
    lens = torch.tensor([16000, 12000])
    outs = []
    for m in (model, restored):
        torch.manual_seed(4)
        with torch.no_grad():
            outs.append(m(input_signal=audio, input_signal_length=lens, noisy_input_signal=audio,
                          noisy_input_signal_length=lens, apply_mask=True))
    valid = torch.arange(outs[0][0].shape[1])[None, :] < outs[0][1][:, None]
    torch.testing.assert_close(outs[0][0][valid], outs[1][0][valid], atol=1e-4, rtol=1e-4)
    assert torch.equal(outs[0][2], outs[1][2]) and torch.equal(outs[0][3], outs[1][3])


def test_lhotse_path_uses_our_lhotse_dataset(data):
    from nest_ext.data.ssl_dataset import LhotseAudioNoiseDataset

    manifest, noise = data
    cfg = tiny_cfg(manifest, noise)
    with open_dict(cfg):
        cfg.train_ds.use_lhotse = True
        cfg.validation_ds = None
    model = ours_class()(cfg=cfg)
    assert isinstance(model._train_dl.dataset, LhotseAudioNoiseDataset)
    batch = next(iter(model._train_dl))
    assert batch.audio.shape == batch.noisy_audio.shape == batch.noise.shape and batch.audio.shape[0] == 3
    assert not torch.equal(batch.audio, batch.noisy_audio)  # noise was mixed in (augmentor prob 1)


def test_encoder_choice_is_logged_and_leaves_other_encoders(caplog):
    from nest_ext.parts import encoder_choice

    caplog.set_level(logging.INFO, logger=encoder_choice.__name__)
    cfg = OmegaConf.create({"encoder": {"_target_": OUR_CONFORMER, "d_model": 8}})
    on = encoder_choice.apply_encoder_choice(cfg, env={"USE_NEMO_CONFORMER": "Yes"})
    assert on.encoder._target_ == NEMO_CONFORMER and cfg.encoder._target_ == OUR_CONFORMER
    assert encoder_choice.apply_encoder_choice(cfg, env={}) == cfg
    nemos = OmegaConf.create({"encoder": {"_target_": NEMO_CONFORMER}})  # a portable config: ours is built
    assert encoder_choice.apply_encoder_choice(nemos, env={}).encoder._target_ == OUR_CONFORMER
    other = OmegaConf.create({"encoder": {"_target_": "nemo.collections.asr.modules.SqueezeformerEncoder"}})
    assert encoder_choice.apply_encoder_choice(other, env={"USE_NEMO_CONFORMER": "1"}) == other
    said = [(r.getMessage(), r.levelno == logging.WARNING) for r in caplog.records if r.name == encoder_choice.__name__]
    assert [w for _, w in said] == [False, False, False, True]
    assert "USE_NEMO_CONFORMER is set" in said[0][0] and NEMO_CONFORMER in said[0][0]
    assert "SqueezeformerEncoder" in said[3][0]


def _fit_losses(cfg, precision, steps=3):
    """Training losses of ``steps`` Lightning steps of a fresh model (same seed, same batches)."""
    import lightning.pytorch as pl

    losses = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            losses.append(outputs["loss"].detach())

    torch.manual_seed(0)
    model = ours_class()(cfg=copy.deepcopy(cfg))
    trainer = pl.Trainer(accelerator="cpu", devices=1, precision=precision, max_steps=steps, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, limit_val_batches=0, callbacks=[Record()])
    torch.manual_seed(1)
    trainer.fit(model)
    return losses


def test_training_steps_under_bf16_mixed_are_finite_fp32_losses_close_to_fp32(data):
    """trainer.precision=bf16-mixed on CPU: the tiny NEST trains, the loss is computed in float32, and the
    losses stay close to the fp32 run's (same weights, batches, masks)."""
    manifest, noise = data
    cfg = tiny_cfg(manifest, noise)
    with open_dict(cfg):
        cfg.train_ds.batch_augmentor.prob = 0.0  # the noise draw is seeded, but keep the comparison about precision
    fp32, bf16 = _fit_losses(cfg, "32-true"), _fit_losses(cfg, "bf16-mixed")
    assert len(fp32) == len(bf16) == 3
    assert all(loss.dtype == torch.float32 and torch.isfinite(loss) for loss in bf16)
    for a, b in zip(fp32, bf16):
        assert abs(a.item() - b.item()) <= 0.05 * abs(a.item()), (fp32, bf16)
