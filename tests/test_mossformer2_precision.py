"""MossFormer2 precision: inference preparation (fp32 fused, bf16, int8) and training under bf16 autocast on CPU."""
import time

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf, open_dict
from torch import nn

from conftest import ROOT, speech_like
from nest_ext.losses.pit_sisdr import PermutationInvariantSISDRLoss
from nest_ext.modules.mossformer2 import MossFormer2
from nest_ext.modules.mossformer2.conv_modules import FusedConvFeedForward
from nest_ext.modules.mossformer2.inference import inference_precision, prepare_for_inference

# the tiny config's architecture (config/mossformer2_tiny.yaml), with the official inner widths' ratios
TINY = dict(encoder_embedding_dim=32, mossformer_sequence_dim=32, num_mossformer_layer=1, group_size=16,
            query_key_dim=32, fsmn_inner_dim=16)


def _mixtures(batch=2, seconds=0.5, seed=0):
    """[B, T] mixtures of two speech-like sources and the sources [B, 2, T]."""
    n = int(seconds * 8000)
    sources = torch.tensor(np.stack([
        np.stack([speech_like(seconds, 8000, seed=seed + 10 * b + k)[:n] * (0.6 + 0.4 * k) for k in range(2)])
        for b in range(batch)
    ]), dtype=torch.float32)
    return sources.sum(1), sources


def _trained_looking(model):
    """Move every parameter away from its initialisation (norm affines, gains, kernels), as training does."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.1 * p.abs().mean().clamp(min=0.05) * torch.randn(p.shape, generator=gen))
    return model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return _trained_looking(MossFormer2(num_spks=2, **TINY)).eval()


def test_fp32_preparation_fuses_without_changing_the_output(model):
    mixture, _ = _mixtures()
    keys = set(model.state_dict())
    fast = prepare_for_inference(model, "fp32")
    assert set(model.state_dict()) == keys and model.masker.layers[0].attention.fused_projections is None
    attention, gated = fast.masker.layers[0].attention, fast.masker.layers[0].fsmn_block.gated_fsmn
    assert isinstance(attention.fused_projections, FusedConvFeedForward) and not hasattr(attention, "to_hidden")
    assert isinstance(gated.fused_projections, FusedConvFeedForward) and not hasattr(gated, "to_u")
    with torch.inference_mode():
        torch.testing.assert_close(fast(mixture), model(mixture), atol=1e-5, rtol=1e-5)
    assert prepare_for_inference(fast, "fp32", inplace=True) is fast  # preparing twice is harmless


def _snr_db(estimate, reference):
    return 10 * torch.log10(reference.pow(2).sum() / (estimate - reference).pow(2).sum()).item()


@pytest.mark.parametrize("precision, min_snr_db", [("bf16", 25.0), ("int8", 20.0)])
def test_low_precision_outputs_are_float32_and_close(model, precision, min_snr_db):
    mixture, _ = _mixtures()
    prepared = prepare_for_inference(model, precision)
    if precision == "int8":
        from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

        assert not any(type(m) is nn.Linear for m in prepared.modules())
        assert sum(isinstance(m, DynamicQuantizedLinear) for m in prepared.modules()) == 12  # 7 in the layer, 5 in the mask head
    with torch.inference_mode():
        reference = model(mixture)
        with inference_precision(precision):
            out = prepared(mixture)
    assert out.dtype == torch.float32 and out.shape == reference.shape
    assert not torch.equal(out, reference)  # a different computation ...
    assert _snr_db(out, reference) > min_snr_db  # ... close to fp32


def test_bad_precision_and_uncopyable_modules():
    with pytest.raises(ValueError, match="precision must be one of"):
        prepare_for_inference(nn.Linear(2, 2), "fp16")
    with pytest.raises(ValueError, match="precision must be one of"):
        inference_precision("int4")

    class Uncopyable(nn.Module):
        def __deepcopy__(self, memo):
            raise NotImplementedError("object proxy must define __deepcopy__()")

    with pytest.raises(TypeError, match="inplace=True"):
        prepare_for_inference(Uncopyable(), "fp32")


def _train(model, mixture, sources, steps, bf16):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = PermutationInvariantSISDRLoss()
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            estimates = model(mixture)
            loss = loss_fn(estimate=estimates, target=sources)
        assert estimates.dtype == loss.dtype == torch.float32  # waveforms and the loss stay float32
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_training_steps_under_bf16_autocast_are_finite_fast_and_close_to_fp32():
    """One step used to take minutes (bf16 depthwise convs fell back to one convolution per channel) and the
    custom backward failed on mixed dtypes."""
    mixture, sources = _mixtures()
    torch.manual_seed(0)
    init = MossFormer2(num_spks=2, dropout=0.0, **TINY).state_dict()
    runs = {}
    for bf16 in (False, True):
        torch.manual_seed(0)
        model = MossFormer2(num_spks=2, dropout=0.0, **TINY)
        model.load_state_dict(init)
        start = time.perf_counter()
        runs[bf16] = (_train(model, mixture, sources, steps=4, bf16=bf16), time.perf_counter() - start)
    (fp32, fp32_s), (bf16, bf16_s) = runs[False], runs[True]
    assert np.isfinite(bf16).all()
    np.testing.assert_allclose(bf16, fp32, atol=0.3)  # dB of negative SI-SDR
    assert fp32[-1] < fp32[0] and bf16[-1] < bf16[0]  # both train
    assert bf16_s < 60.0, f"4 bf16 steps took {bf16_s:.1f} s (fp32: {fp32_s:.1f} s)"


@pytest.mark.slow
def test_lightning_bf16_mixed_trains_the_tiny_config(tmp_path):
    """The user's setting: trainer.precision=bf16-mixed on CPU with the tiny config; losses track fp32."""
    from lightning.pytorch import Callback, Trainer, seed_everything

    from nest_ext.models import MossFormer2SeparationModel
    from test_separation_model import _make_set

    train, _ = _make_set(tmp_path / "train", count=6, seconds=[0.5], seed=500)
    val, _ = _make_set(tmp_path / "val", count=2, seconds=[0.5], seed=600)
    full = OmegaConf.load(ROOT / "config" / "mossformer2_tiny.yaml")

    class Losses(Callback):
        def __init__(self):
            self.values = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.values.append(float(outputs["loss"]))

    runs = {}
    for precision in ("32", "bf16-mixed"):
        cfg = full.model.copy()
        with open_dict(cfg):
            cfg.train_ds.manifest_filepath, cfg.validation_ds.manifest_filepath = train, val
            cfg.train_ds.shuffle = False
            cfg.masker.dropout = 0.0
        trainer_cfg = OmegaConf.to_container(full.trainer)
        trainer_cfg.update(max_epochs=1, precision=precision, default_root_dir=str(tmp_path / precision))
        losses = Losses()
        seed_everything(0)
        trainer = Trainer(**trainer_cfg, callbacks=[losses])
        model = MossFormer2SeparationModel(cfg=cfg, trainer=trainer)
        start = time.perf_counter()
        trainer.fit(model)
        runs[precision] = (losses.values, time.perf_counter() - start)
    (fp32, _), (bf16, bf16_s) = runs["32"], runs["bf16-mixed"]
    assert len(bf16) == len(fp32) == 3 and np.isfinite(bf16).all()
    np.testing.assert_allclose(bf16, fp32, atol=0.3)
    assert bf16_s < 120.0, f"3 bf16-mixed steps took {bf16_s:.1f} s"
