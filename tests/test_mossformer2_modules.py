"""MossFormer2 building blocks: shapes, lengths, fused/fast paths against plain PyTorch, chunked inference."""
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from nest_ext.modules.mossformer2 import MossFormer2, MossFormer2Decoder, MossFormer2Encoder, MossFormer2MaskNet
from nest_ext.modules.mossformer2.chunked import chunk_starts, separate_chunked
from nest_ext.modules.mossformer2.conv_modules import (
    ConvFeedForward,
    depthwise_conv,
    parallel_conv_feedforward,
    silu_conv_residual,
)
from nest_ext.modules.mossformer2.attention import GatedSingleHeadAttention
from nest_ext.modules.mossformer2.fsmn import DenseDilatedLayer, DenseDilatedMemory
from nest_ext.modules.mossformer2.norms import GlobalLayerNorm, ScaleNorm
from nest_ext.modules.mossformer2.positional_encoding import ScaledSinusoidalEncoding
from nest_ext.modules.mossformer2.rotary import RotaryEmbedding, rotate

TINY = dict(encoder_embedding_dim=16, mossformer_sequence_dim=16, num_mossformer_layer=1,
            group_size=16, query_key_dim=32, fsmn_inner_dim=16)


def tiny_model(num_spks=2, seed=0, **kw):
    torch.manual_seed(seed)
    return MossFormer2(num_spks=num_spks, **{**TINY, **kw}).eval()


@pytest.mark.parametrize("length", [24, 25, 31, 1001])
def test_output_has_input_length_for_any_length(length):
    model = tiny_model()
    with torch.no_grad():
        out = model(torch.randn(2, length))
    assert out.shape == (2, 2, length)
    assert torch.isfinite(out).all()


def test_encoder_decoder_frame_and_sample_counts():
    enc, dec = MossFormer2Encoder(16, 8), MossFormer2Decoder(16, 8)
    for length in (16, 23, 24, 801):
        feats = enc(torch.randn(1, length))
        frames = (length - 16) // 8 + 1
        assert feats.shape == (1, 8, frames) and enc.num_frames(length) == frames
        out = dec(feats.unsqueeze(1).expand(1, 3, 8, frames))
        assert out.shape == (1, 3, (frames - 1) * 8 + 16) and out.shape[-1] == dec.num_samples(frames)
        assert 0 <= length - out.shape[-1] < 8
    assert (enc(torch.randn(2, 100)) >= 0).all()  # ReLU filterbank


def test_bad_input_shapes_raise_clear_errors():
    model = tiny_model()
    with pytest.raises(ValueError, match="too short"):
        model(torch.randn(1, 23))
    with pytest.raises(ValueError, match="shorter than the encoder kernel"):
        model.encoder(torch.randn(1, 15))
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        model(torch.randn(1, 1, 100))
    with pytest.raises(ValueError, match="at least one layer"):
        MossFormer2MaskNet(8, 8, num_layers=0)


def test_three_speakers_and_nonnegative_masks():
    model = tiny_model(num_spks=3)
    mix = torch.randn(2, 801)
    with torch.no_grad():
        masks = model.masker(model.encoder(mix))
        out = model(mix)
    assert masks.shape == (2, 3, 16, 99) and (masks >= 0).all()
    assert out.shape == (2, 3, 801)
    assert not torch.allclose(out[:, 0], out[:, 1])


def test_batch_items_are_independent():
    model = tiny_model()
    mix = torch.randn(3, 900)
    with torch.no_grad():
        together = model(mix)
        alone = model(mix[1:2])
    torch.testing.assert_close(together[1:2], alone, atol=1e-5, rtol=1e-4)


def test_training_mode_dropout_and_gradients():
    model = tiny_model().train()
    mix = torch.randn(2, 400)
    out = model(mix)
    assert not torch.equal(out, model(mix))  # dropout active
    out.pow(2).mean().backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # the rotary frequencies are stored in checkpoints but not trained
    rot = model.masker.rotary.freqs
    assert not rot.requires_grad and rot.grad is None
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(mix), model(mix))


def test_depthwise_conv_equals_grouped_conv1d():
    x = torch.randn(2, 6, 50)
    for kernel, dilation in ((17, 1), (39, 2), (3, 4), (5, 3)):
        w = torch.randn(6, 1, kernel)
        ref = F.conv1d(x, w, padding=dilation * (kernel - 1) // 2, dilation=dilation, groups=6)
        torch.testing.assert_close(depthwise_conv(x, w, dilation), ref, atol=1e-5, rtol=1e-5)
    # channels-last input seen through a transpose
    xl = torch.randn(2, 50, 6)
    w = torch.randn(6, 1, 5)
    torch.testing.assert_close(depthwise_conv(xl.transpose(1, 2), w), F.conv1d(xl.transpose(1, 2).contiguous(), w, padding=2, groups=6))


@pytest.mark.parametrize("batch,kernel,dilation", [(1, 17, 1), (3, 7, 2)])
def test_depthwise_conv_gradients_equal_conv1d_gradients(batch, kernel, dilation):
    x = torch.randn(batch, 5, 40, requires_grad=True)
    w = torch.randn(5, 1, kernel, requires_grad=True)
    g = torch.randn(batch, 5, 40)
    ours = torch.autograd.grad(depthwise_conv(x, w, dilation), (x, w), g)
    ref = torch.autograd.grad(
        F.conv1d(x, w, padding=dilation * (kernel - 1) // 2, dilation=dilation, groups=5), (x, w), g)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    # only the weight needs a gradient (first layer of a branch fed by a constant)
    (gw,) = torch.autograd.grad(depthwise_conv(x.detach(), w, dilation), (w,), g)
    torch.testing.assert_close(gw, ref[1], atol=1e-4, rtol=1e-4)


def test_silu_conv_residual_values_and_gradients():
    h = torch.randn(2, 30, 6, requires_grad=True)
    w = torch.randn(6, 1, 5, requires_grad=True)
    s = F.silu(h)
    ref = s + F.conv1d(s.transpose(1, 2), w, padding=2, groups=6).transpose(1, 2)
    out = silu_conv_residual(h, w)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, (h, w), g), torch.autograd.grad(ref, (h, w), g)):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(silu_conv_residual(h, w), ref, atol=1e-5, rtol=1e-5)


def test_dense_dilated_layer_equals_grouped_conv_with_instance_norm():
    torch.manual_seed(0)
    layer = DenseDilatedLayer(channels=4, in_per_channel=2, kernel_size=7, dilation=2)
    with torch.no_grad():
        layer.norm.weight.uniform_(0.5, 1.5)
        layer.norm.bias.uniform_(-0.5, 0.5)
        layer.act.weight.uniform_(0.0, 0.5)
    x = torch.randn(3, 8, 40, requires_grad=True)
    conv = F.conv1d(x, layer.weight, padding=6, dilation=2, groups=4)  # 2 inputs per group
    ref = F.prelu(F.instance_norm(conv, weight=layer.norm.weight, bias=layer.norm.bias), layer.act.weight)
    out = layer(x)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, (x, layer.weight), g), torch.autograd.grad(ref, (x, layer.weight), g)):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert DenseDilatedMemory(4, lorder=5, depth=3)(torch.randn(2, 4, 30)).shape == (2, 4, 30)


@pytest.mark.parametrize("norm", ["scale", "layer"])
def test_parallel_conv_feedforward_equals_separate_branches(norm):
    torch.manual_seed(0)
    branches = [ConvFeedForward(12, 20, norm), ConvFeedForward(12, 7, norm)]
    with torch.no_grad():
        for b in branches:  # move the norm affines away from their identity initialisation
            for p in b.norm.parameters():
                p.uniform_(0.5, 1.5)
    for b in branches:
        b.eval()
    x = torch.randn(2, 30, 12)
    fused = parallel_conv_feedforward(branches, x)
    for b, y in zip(branches, fused):
        torch.testing.assert_close(y, b(x), atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError):
        parallel_conv_feedforward([ConvFeedForward(12, 4, "scale"), ConvFeedForward(12, 4, "layer")], x)


def _attention_reference(att, x, rope):
    """GatedSingleHeadAttention written plainly: every branch on its own, the last group zero-padded."""
    batch, length, dim = x.shape
    shifted = torch.cat((F.pad(x[..., : dim // 2], (0, 0, 1, -1)), x[..., dim // 2:]), dim=-1)
    hidden, qk = att.to_hidden(shifted), att.to_qk(shifted)
    quad_q, lin_q, quad_k, lin_k = rotate(att.offset_scale(qk), *rope, seq_dim=1).unbind(-2)
    g = att.group_size
    pad = (-length) % g
    padded = [F.pad(t, (0, 0, 0, pad)).unflatten(1, (-1, g)) for t in (quad_q, quad_k, hidden)]
    weights = F.relu(padded[0] @ padded[1].transpose(-1, -2) / g) ** 2
    quad = (weights @ padded[2]).flatten(1, 2)[:, :length]
    lin = lin_q @ (lin_k.transpose(-1, -2) @ hidden) / length
    att_v, att_u = (quad + lin).chunk(2, dim=-1)
    v, u = hidden.chunk(2, dim=-1)
    return x + att.to_out((att_u * v) * torch.sigmoid(att_v * u))


@pytest.mark.parametrize("length", [40, 48, 7])  # whole groups and a partial one, whole groups only, one partial group
def test_attention_equals_plain_padded_reference(length):
    torch.manual_seed(0)
    rope = RotaryEmbedding(8)
    att = GatedSingleHeadAttention(12, rotary=rope, group_size=16, query_key_dim=16, expansion_factor=2, kernel_size=5,
                                   dropout=0.0)
    with torch.no_grad():
        att.offset_scale.gamma.normal_()  # larger than the 0.02 init, so the attention weights matter
    x = torch.randn(3, length, 12, requires_grad=True)
    cs = rope.cos_sin(length)
    out, ref = att(x, cs), _attention_reference(att, x, cs)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(out)
    params = [x] + [p for p in att.parameters() if p.requires_grad]
    for a, b in zip(torch.autograd.grad(out, params, g), torch.autograd.grad(ref, params, g)):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    with torch.inference_mode():  # the in-place inference path
        torch.testing.assert_close(att(x.detach(), cs), ref.detach(), atol=1e-5, rtol=1e-5)


def test_norms():
    x = torch.randn(2, 5, 30) * 3 + 1
    y = GlobalLayerNorm(5)(x)
    assert torch.allclose(y.mean((1, 2)), torch.zeros(2), atol=1e-5)
    assert torch.allclose(y.var((1, 2), unbiased=False), torch.ones(2), atol=1e-4)
    sn = ScaleNorm(8)
    z = sn(torch.randn(4, 8) * 10)
    torch.testing.assert_close(z.norm(dim=-1), torch.full((4,), math.sqrt(8)))


def test_positional_encoding_values():
    enc = ScaledSinusoidalEncoding(8)
    with torch.no_grad():
        enc.scale.fill_(2.0)
    e = enc(5)
    assert e.shape == (5, 8)
    t, i = 3, 1
    freq = 10000 ** (-2 * i / 8)
    assert e[t, i].item() == pytest.approx(2 * math.sin(t * freq), abs=1e-6)
    assert e[t, 4 + i].item() == pytest.approx(2 * math.cos(t * freq), abs=1e-6)


def test_rotary_is_a_relative_rotation_of_leading_features():
    rope = RotaryEmbedding(8)
    cos, sin = rope.cos_sin(12)
    q, k = torch.randn(12, 10), torch.randn(12, 10)
    rq, rk = rotate(q, cos, sin), rotate(k, cos, sin)
    torch.testing.assert_close(rq[:, 8:], q[:, 8:])  # partial rotary
    torch.testing.assert_close(rq[0], q[0])  # position 0 is not rotated
    torch.testing.assert_close(rq[:, :8].unflatten(-1, (4, 2)).norm(dim=-1), q[:, :8].unflatten(-1, (4, 2)).norm(dim=-1))
    # same vectors at positions (m, n) and (m + s, n + s): same dot product
    same_q, same_k = q[2].expand(12, 10), k[5].expand(12, 10)
    a, b = rotate(same_q, cos, sin), rotate(same_k, cos, sin)
    torch.testing.assert_close(a[2, :8] @ b[5, :8], a[6, :8] @ b[9, :8], atol=1e-4, rtol=1e-4)
    # the sequence axis can be any axis
    x = torch.randn(2, 12, 4, 10)
    torch.testing.assert_close(rotate(x, cos, sin, seq_dim=1), rotate(x.transpose(1, 2), cos, sin).transpose(1, 2))


def test_chunk_starts_cover_the_input():
    assert chunk_starts(100, 100, 50) == [0]
    starts = chunk_starts(1000, 300, 200)
    assert starts[0] == 0 and starts[-1] == 700
    assert all(b - a <= 200 for a, b in zip(starts, starts[1:]))


def test_chunked_equals_full_for_a_local_model_with_shuffled_speakers():
    gen = torch.Generator().manual_seed(0)

    def local_model(x):  # a per-sample "separation" whose speaker order changes at random per call
        y = torch.stack([0.5 * x, -x * x, torch.tanh(x)], dim=1)
        for b in range(x.shape[0]):
            perm = list(itertools.permutations(range(3)))[int(torch.randint(6, (1,), generator=gen))]
            y[b] = y[b, list(perm)]
        return y

    x = torch.randn(2, 30001)
    ref = torch.stack([0.5 * x, -x * x, torch.tanh(x)], dim=1)
    out = separate_chunked(local_model, x, chunk_seconds=1.0, overlap_seconds=0.25, sample_rate=8000)
    assert out.shape == (2, 3, 30001)
    for b in range(2):  # equal up to one global speaker order
        errs = [(out[b, list(p)] - ref[b]).abs().max() for p in itertools.permutations(range(3))]
        assert min(errs) < 1e-5


def test_chunked_with_the_model():
    model = tiny_model()
    x = torch.randn(1, 3000)
    with torch.no_grad():
        full = model(x)
    # one window covering everything is exactly one-pass inference
    torch.testing.assert_close(separate_chunked(model, x, 1.0, 0.2, 3000), full)
    out = separate_chunked(model, x[0], chunk_seconds=0.25, overlap_seconds=0.05, sample_rate=4000)
    assert out.shape == (2, 3000) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="overlap"):
        separate_chunked(model, x, 1.0, 1.0, 8000)
