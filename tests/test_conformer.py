"""Parity of nest_ext.modules.ConformerEncoder with NeMo's ConformerEncoder.

Each test builds NeMo's encoder with a seed, perturbs every weight (so zero-initialised biases and
batch-norm statistics matter too), loads NeMo's state dict into ours with strict=True and compares
outputs, lengths and gradients.
"""
import pytest
import torch

nemo_modules = pytest.importorskip("nemo.collections.asr.modules")
from nest_ext.modules import ConformerEncoder  # noqa: E402

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
