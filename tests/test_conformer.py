"""Parity of nest_ext.modules.ConformerEncoder with NeMo's ConformerEncoder.

Each test builds NeMo's encoder with a seed, perturbs every weight (so zero-initialised biases and
batch-norm statistics matter too), loads NeMo's state dict into ours with strict=True and compares
outputs, lengths and gradients.
"""
import pytest
import torch

nemo_modules = pytest.importorskip("nemo.collections.asr.modules")
from nest_ext.modules import ConformerEncoder  # noqa: E402
from nest_ext.parts.nest_sizes import NEST_SIZES, encoder_overrides  # noqa: E402

BASE = dict(
    feat_in=20,
    n_layers=2,
    d_model=32,
    n_heads=4,
    conv_kernel_size=5,
    subsampling="dw_striding",
    subsampling_factor=8,
    subsampling_conv_channels=16,
    dropout=0.0,
    dropout_pre_encoder=0.0,
    dropout_emb=0.0,
    dropout_att=0.0,
)

CONFIGS = {
    # tiny NEST-like FastConformer (dw_striding x8, rel_pos, batch norm, xscaling, biases, untied)
    "nest_like": {},
    "striding4_layernorm_noscale_nobias_tied": dict(
        subsampling="striding", subsampling_factor=4, conv_norm_type="layer_norm", xscaling=False,
        use_bias=False, untie_biases=False,
    ),
    "dw_striding4_abs_pos_feat_out": dict(subsampling_factor=4, self_attention_model="abs_pos", feat_out=24),
    "striding8_channels_default_tied": dict(subsampling="striding", subsampling_conv_channels=-1, untie_biases=False),
    "dw_striding2_xlarge_like": dict(subsampling_factor=2, xscaling=False, use_bias=False, ff_expansion_factor=2),
    "short_pos_table": dict(subsampling_factor=4, pos_emb_max_len=8),
}


def _perturbed_pair(cfg, seed=0):
    """NeMo's encoder with perturbed weights and ours holding the same state dict."""
    torch.manual_seed(seed)
    nemo = nemo_modules.ConformerEncoder(**cfg)
    state = nemo.state_dict()
    gen = torch.Generator().manual_seed(seed + 1)
    for key, value in state.items():
        if not value.dtype.is_floating_point:
            continue
        noise = 0.2 * torch.randn(value.shape, generator=gen)
        value.copy_((value + noise).abs() + 0.5 if key.endswith("running_var") else value + noise)
    nemo.load_state_dict(state)
    ours = ConformerEncoder(**cfg)
    ours.load_state_dict(nemo.state_dict(), strict=True)
    return nemo, ours


def _batch(cfg, seed=0, frames=83):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(3, cfg["feat_in"], frames, generator=gen)
    lengths = torch.tensor([frames, frames - 30, 17])
    return x, lengths


def _valid(out, lengths):
    return (torch.arange(out.size(-1))[None, :] < lengths[:, None])[:, None, :]


def test_state_dict_keys_and_shapes_equal():
    nemo, ours = _perturbed_pair(BASE)
    assert {k: tuple(v.shape) for k, v in nemo.state_dict().items()} == {
        k: tuple(v.shape) for k, v in ours.state_dict().items()
    }
    assert sum(p.numel() for p in nemo.parameters()) == sum(p.numel() for p in ours.parameters())


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_eval_outputs_match_nemo(name):
    cfg = {**BASE, **CONFIGS[name]}
    nemo, ours = _perturbed_pair(cfg)
    nemo.eval(), ours.eval()
    x, lengths = _batch(cfg)
    with torch.no_grad():
        ref, ref_len = nemo(audio_signal=x, length=lengths)
        out, out_len = ours(audio_signal=x, length=lengths)
    assert out.shape == ref.shape
    assert torch.equal(out_len, ref_len) and out_len.dtype == torch.int64
    mask = _valid(ref, ref_len)
    assert ref.abs().max() > 0.1  # the comparison is not between two near-zero tensors
    assert ((out - ref).abs() * mask).max() < 1e-4


def test_train_mode_gradients_match_nemo():
    cfg = {**BASE, "untie_biases": False}
    nemo, ours = _perturbed_pair(cfg, seed=3)
    nemo.train(), ours.train()  # batch norm uses batch statistics
    x, lengths = _batch(cfg, seed=3)
    weight = torch.randn(1, cfg["d_model"], 1)
    losses = []
    for enc in (nemo, ours):
        out, out_len = enc(audio_signal=x, length=lengths)
        loss = (out * weight * _valid(out, out_len)).sum()
        loss.backward()
        losses.append(loss.detach())
    assert torch.allclose(losses[0], losses[1], rtol=1e-5, atol=1e-3)
    ours_params = dict(ours.named_parameters())
    scale = max(p.grad.abs().max().item() for p in nemo.parameters())
    for name, p in nemo.named_parameters():
        g_ref, g = p.grad, ours_params[name].grad
        assert g is not None and g_ref is not None, name
        # biases feeding a training-mode batch norm get ~0 gradients: compare against the model's scale
        assert torch.allclose(g, g_ref, rtol=1e-3, atol=1e-5 * scale), (name, (g - g_ref).abs().max(), scale)


def test_post_conv_masking_wrapper_and_bypass_pre_encode():
    """NEST's post_conv masking replaces encoder.pre_encode with a wrapper; both encoders must run it alike."""
    from nemo.collections.asr.modules.ssl_modules.masking import ConvFeatureMaksingWrapper

    nemo, ours = _perturbed_pair(BASE, seed=5)
    nemo.eval(), ours.eval()
    x, lengths = _batch(BASE, seed=5)
    results = []
    for enc in (nemo, ours):
        enc.pre_encode = ConvFeatureMaksingWrapper(enc.pre_encode, torch.nn.Identity())
        enc.pre_encode.set_masking_enabled(False)
        with torch.no_grad():
            out, out_len = enc(audio_signal=x, length=lengths)
            feats = enc.pre_encode.get_current_feat()
            bypass, _ = enc(audio_signal=feats, length=out_len, bypass_pre_encode=True)
        results.append((out, out_len, feats, bypass))
    (ref, ref_len, ref_feats, ref_bypass), (out, out_len, feats, bypass) = results
    assert torch.equal(out_len, ref_len)
    mask = _valid(ref, ref_len)
    assert ((out - ref).abs() * mask).max() < 1e-4
    assert ((feats - ref_feats).abs() * mask.transpose(1, 2)).max() < 1e-4
    assert ((bypass - ref_bypass).abs() * mask).max() < 1e-4
    assert "pre_encode.pre_encode.conv.0.weight" in ours.state_dict()


def test_nemo_state_dict_loads_strictly_into_fresh_encoder_and_back():
    nemo, ours = _perturbed_pair(BASE, seed=7)
    torch.manual_seed(0)
    fresh_nemo = nemo_modules.ConformerEncoder(**BASE)
    fresh_nemo.load_state_dict(ours.state_dict(), strict=True)
    for key, value in nemo.state_dict().items():
        assert torch.equal(fresh_nemo.state_dict()[key], value), key


@pytest.mark.parametrize(
    "override, words",
    [
        (dict(causal_downsampling=True), "causal_downsampling"),
        (dict(subsampling="vggnet"), "subsampling"),
        (dict(self_attention_model="rel_pos_local_attn", att_context_size=[4, 4]), "self_attention_model"),
        (dict(att_context_size=[16, 0]), "att_context_size"),
        (dict(att_context_style="chunked_limited"), "att_context_style"),
        (dict(conv_context_size="causal"), "conv_context_size"),
        (dict(conv_norm_type="group_norm2"), "conv_norm_type"),
        (dict(reduction="pooling", reduction_position=-1, reduction_factor=2), "reduction"),
    ],
)
def test_unsupported_options_fail_at_construction(override, words):
    with pytest.raises(ValueError, match=words):
        ConformerEncoder(**{**BASE, **override})


def test_streaming_cache_rejected_at_forward():
    ours = ConformerEncoder(**BASE)
    x, lengths = _batch(BASE)
    cache = torch.zeros(BASE["n_layers"], 3, 4, BASE["d_model"])
    with pytest.raises(NotImplementedError, match="streaming"):
        ours(audio_signal=x, length=lengths, cache_last_channel=cache, cache_last_time=cache.transpose(2, 3),
             cache_last_channel_len=torch.zeros(3, dtype=torch.int64))


@pytest.mark.parametrize("size", list(NEST_SIZES))
def test_parameter_count_equals_nemo_nest_sizes(size):
    """Built on the meta device (no memory), our encoder has NeMo's instantiated encoder count per NEST size."""
    import json

    from omegaconf import OmegaConf

    from conftest import ROOT, shared_reference

    expected = json.loads(shared_reference("nemo", "nest_param_counts.json").read_text())[size]["encoder"]
    cfg = OmegaConf.load(ROOT / "config" / "nest_fast-conformer.yaml").model.encoder
    kwargs = {k: v for k, v in OmegaConf.to_container(cfg).items() if k != "_target_"}
    kwargs.update(feat_in=80, **encoder_overrides(size))
    with torch.device("meta"):
        enc = ConformerEncoder(**kwargs)
    assert sum(p.numel() for p in enc.parameters()) == expected


def _tiny_nest_cfg(mask_position):
    from omegaconf import OmegaConf, open_dict

    from conftest import ROOT

    cfg = OmegaConf.load(ROOT / "config" / "nest_fast-conformer.yaml").model
    with open_dict(cfg):
        cfg.num_classes = 16
        cfg.mask_position = mask_position
        cfg.masking.mask_prob = 0.5  # a 1 s batch has only ~13 frames after subsampling: mask some for sure
        cfg.encoder.update(_target_="nest_ext.modules.ConformerEncoder", d_model=32, n_heads=2, n_layers=1,
                           subsampling_conv_channels=16, dropout=0.0, dropout_pre_encoder=0.0, dropout_att=0.0)
        cfg.train_ds = cfg.validation_ds = None
    return cfg


def _saved_with_ours_restored_with_nemo(tmp_path, monkeypatch, mask_position):
    from nest_ext.models.ssl_models import EncDecDenoiseMaskedTokenPredModel

    monkeypatch.setenv("USE_NEMO_CONFORMER", "false")
    torch.manual_seed(0)
    model = EncDecDenoiseMaskedTokenPredModel(cfg=_tiny_nest_cfg(mask_position))
    assert type(model.encoder) is ConformerEncoder
    path = str(tmp_path / "nest.nemo")
    model.save_to(path)
    monkeypatch.setenv("USE_NEMO_CONFORMER", "true")
    restored = EncDecDenoiseMaskedTokenPredModel.restore_from(path, map_location="cpu")
    assert type(restored.encoder) is nemo_modules.ConformerEncoder
    sd_a, sd_b = model.state_dict(), restored.state_dict()
    assert sd_a.keys() == sd_b.keys() and all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    for m in (model, restored):
        m.train()  # the block masking only masks in training; dropout is 0 in this config
    return model, restored


def _audio_batch():
    gen = torch.Generator().manual_seed(1)
    audio = 0.1 * torch.randn(2, 16000, generator=gen)
    return audio, audio + 0.01 * torch.randn(2, 16000, generator=gen), torch.tensor([16000, 11000])


def test_nemo_file_saved_with_ours_restores_with_nemo_encoder(tmp_path, monkeypatch):
    """NEST .nemo written with our encoder (pre_conv masking), restored under USE_NEMO_CONFORMER=true with
    NeMo's: same state dict, same masked-token loss on one batch."""
    model, restored = _saved_with_ours_restored_with_nemo(tmp_path, monkeypatch, "pre_conv")
    audio, noisy, lens = _audio_batch()
    losses = []
    for m in (model, restored):
        torch.manual_seed(2)  # same masks (and dither) in both
        with torch.no_grad():
            log_probs, enc_len, masks, tokens = m(input_signal=audio, input_signal_length=lens,
                                                  noisy_input_signal=noisy, noisy_input_signal_length=lens,
                                                  apply_mask=True)
            losses.append(m.loss(masks=masks, decoder_outputs=log_probs, targets=tokens, decoder_lengths=enc_len))
        assert masks.sum() > 0
    assert torch.isfinite(losses[0]) and torch.allclose(losses[0], losses[1], atol=1e-4)


def test_post_conv_masking_in_nest_model(tmp_path, monkeypatch):
    """mask_position post_conv: the model wraps encoder.pre_encode in NeMo's masking wrapper; the encoder
    call of NeMo's masked-token path (masking on) gives NeMo's outputs and masks with our encoder too.
    (NeMo 3.0's denoising forward itself fails for post_conv with either encoder: it hands pre_encode
    [B, D, T] features without transposing them; and a restored post_conv model divides the masking
    block size by the subsampling factor a second time, so this test builds both models afresh.)"""
    from nest_ext.models.ssl_models import EncDecDenoiseMaskedTokenPredModel

    models = []
    for toggle in ("false", "true"):
        monkeypatch.setenv("USE_NEMO_CONFORMER", toggle)
        torch.manual_seed(0)
        models.append(EncDecDenoiseMaskedTokenPredModel(cfg=_tiny_nest_cfg("post_conv")).train())
    model, restored = models
    assert type(model.encoder) is ConformerEncoder and type(restored.encoder) is nemo_modules.ConformerEncoder
    restored.load_state_dict(model.state_dict(), strict=True)
    audio, _, lens = _audio_batch()
    results = []
    for m in (model, restored):
        torch.manual_seed(2)
        with torch.no_grad():
            feats, feat_len = m.preprocessor(input_signal=audio, length=lens)
            m.pre_encoder.set_masking_enabled(apply_mask=True)
            encoded, enc_len = m.encoder(audio_signal=feats, length=feat_len)
            results.append((encoded, enc_len, m.pre_encoder.get_current_mask(), m.pre_encoder.get_current_feat()))
    (a, la, ma, fa), (b, lb, mb, fb) = results
    assert torch.equal(la, lb) and torch.equal(ma, mb) and ma.sum() > 0
    valid = _valid(a, la)
    assert ((a - b).abs() * valid).max() < 1e-4
    assert ((fa - fb).abs() * valid.transpose(1, 2)).max() < 1e-4


def test_nemo_ctc_model_runs_with_our_encoder():
    """NeMo's EncDecCTCModel built with our encoder target gives the CTC loss of the same model with NeMo's."""
    from nemo.collections.asr.models import EncDecCTCModel
    from omegaconf import OmegaConf

    import nest_ext.models.ssl_models  # noqa: F401  (lets NeMo instantiate nest_ext targets)

    labels = list(" abcdefghij")
    enc = {**BASE, "feat_in": 16, "subsampling_factor": 4}
    models = []
    for target in ("nest_ext.modules.ConformerEncoder", "nemo.collections.asr.modules.ConformerEncoder"):
        cfg = OmegaConf.create(dict(
            labels=labels, sample_rate=16000, train_ds=None, validation_ds=None,
            preprocessor=dict(_target_="nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
                              features=16, n_fft=512, dither=0.0, pad_to=0),
            encoder=dict(_target_=target, **enc),
            decoder=dict(_target_="nemo.collections.asr.modules.ConvASRDecoder", feat_in=32,
                         num_classes=len(labels), vocabulary=labels),
        ))
        torch.manual_seed(0)
        models.append(EncDecCTCModel(cfg=cfg).eval())
    ours, nemo = models
    assert type(ours.encoder) is ConformerEncoder
    ours.load_state_dict(nemo.state_dict(), strict=True)
    audio = 0.1 * torch.randn(2, 16000, generator=torch.Generator().manual_seed(0))
    lens = torch.tensor([16000, 9000])
    targets, target_lens = torch.tensor([[1, 2, 3], [4, 5, 0]]), torch.tensor([3, 2])
    losses = []
    for m in models:
        with torch.no_grad():
            log_probs, enc_len, _ = m(input_signal=audio, input_signal_length=lens)
            losses.append(m.loss(log_probs=log_probs, targets=targets, input_lengths=enc_len,
                                 target_lengths=target_lens))
    assert torch.isfinite(losses[0]) and torch.allclose(losses[0], losses[1], atol=1e-4)


def test_byte_mask_dropout_statistics_and_gradient():
    from nest_ext.modules.conformer.dropout import dropout

    torch.manual_seed(0)
    x = torch.randn(200, 500, requires_grad=True)
    y = dropout(x, 0.1, training=True)
    kept = y != 0
    assert abs(1 - kept.float().mean().item() - 0.1) < 0.005
    assert torch.allclose(y[kept], x[kept] / 0.9)
    g = torch.randn_like(y)
    y.backward(g)
    assert torch.allclose(x.grad, g * kept / 0.9)
    assert dropout(x, 0.1, training=False) is x


def test_stochastic_depth_matches_nemo_with_same_seed():
    cfg = {**BASE, "n_layers": 4, "stochastic_depth_drop_prob": 0.5}
    nemo, ours = _perturbed_pair(cfg, seed=11)
    nemo.train(), ours.train()
    x, lengths = _batch(cfg, seed=11)
    outs = []
    for seed in range(3):
        torch.manual_seed(seed)
        ref, ref_len = nemo(audio_signal=x, length=lengths)
        torch.manual_seed(seed)
        out, _ = ours(audio_signal=x, length=lengths)
        assert ((out - ref).abs() * _valid(ref, ref_len)).max() < 1e-4
        outs.append(out)
    ours.layer_drop_probs = [0.0] * 4  # the same encoder without stochastic depth
    plain, _ = ours(audio_signal=x, length=lengths)
    assert any((o - plain).abs().max() > 1e-3 for o in outs)  # some layer was really dropped
