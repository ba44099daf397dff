"""Convolutional front-end that shortens the feature sequence by 2, 4 or 8 before the Conformer layers.

``striding``: log2(factor) Conv2d(3x3, stride 2) + ReLU over (time, feature), full convolutions.
``dw_striding`` (FastConformer, Rekesh et al. 2023): a full Conv2d(3x3, stride 2) first, then per step a
depthwise Conv2d(3x3, stride 2) and a pointwise Conv2d(1x1), each step ending in ReLU.
The channels x remaining features are flattened and projected to d_model by ``out``.

Padded frames are zeroed in the input and after every ReLU, so the valid output frames do not depend on
how much padding the batch has (as in NeMo 3.0, which multiplies by a mask before every layer instead).
The activations are kept in channels-last memory, where oneDNN's depthwise kernels run 3-4x faster on
CPU than in NCHW, and the pointwise convolutions become plain matmuls. Parameter names follow NeMo's
``ConvSubsampling``: ``conv.<index>`` with NeMo's indices (ReLUs included) and ``out``.

Example::

    >>> import torch
    >>> sub = ConvSubsampling('dw_striding', 4, feat_in=16, feat_out=8, conv_channels=4)
    >>> y, n = sub(torch.randn(2, 20, 16), torch.tensor([20, 11]))
    >>> tuple(y.shape), n.tolist()
    ((2, 5, 8), [5, 3])
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ConvSubsampling", "subsampled_length"]

# Conv kernels index with int32 on some backends: keep each batch chunk's largest activation below this.
_MAX_ELEMENTS = 2**31 - 1


def subsampled_length(lengths: torch.Tensor, n_steps: int) -> torch.Tensor:
    """Frames left after ``n_steps`` stride-2, kernel-3, padding-1 convolutions: ceil(L / 2) each step."""
    lengths = lengths.to(torch.int64)
    for _ in range(n_steps):
        lengths = torch.div(lengths + 1, 2, rounding_mode="floor")
    return lengths


class ConvSubsampling(nn.Module):
    """forward(x [B, T, feat_in], lengths [B]) -> (x [B, T', feat_out], lengths [B] int64).

    Args:
        subsampling: ``striding`` or ``dw_striding``.
        subsampling_factor: 2, 4 or 8 (a power of two).
        feat_in: input features (e.g. mel bins); feat_out: output size (d_model).
        conv_channels: channels of the convolutions.
        subsampling_conv_chunking_factor: 1 splits the batch only when needed for huge inputs,
            -1 never splits, a power of two splits the batch into that many chunks.
    """

    def __init__(
        self, subsampling, subsampling_factor, feat_in, feat_out, conv_channels, subsampling_conv_chunking_factor=1
    ):
        super().__init__()
        if subsampling not in ("striding", "dw_striding"):
            raise ValueError(f"subsampling={subsampling!r} is not supported (striding, dw_striding)")
        n_steps = int(round(math.log2(subsampling_factor))) if subsampling_factor > 0 else 0
        if subsampling_factor < 2 or 2**n_steps != subsampling_factor:
            raise ValueError(f"subsampling_factor must be a power of two >= 2, got {subsampling_factor}")
        if subsampling_conv_chunking_factor not in (-1, 1) and (
            subsampling_conv_chunking_factor < 1 or subsampling_conv_chunking_factor & (subsampling_conv_chunking_factor - 1)
        ):
            raise ValueError("subsampling_conv_chunking_factor must be -1, 1 or a power of two")
        self._subsampling = subsampling
        self.subsampling_factor = subsampling_factor
        self.subsampling_conv_chunking_factor = subsampling_conv_chunking_factor
        self._sampling_num = n_steps
        self._conv_channels = conv_channels
        self._feat_in = feat_in
        self._feat_out = feat_out

        c = conv_channels
        layers = [nn.Conv2d(1, c, 3, stride=2, padding=1), nn.ReLU(True)]
        for _ in range(n_steps - 1):
            if subsampling == "dw_striding":
                layers += [nn.Conv2d(c, c, 3, stride=2, padding=1, groups=c), nn.Conv2d(c, c, 1)]
            else:
                layers += [nn.Conv2d(c, c, 3, stride=2, padding=1)]
            layers.append(nn.ReLU(True))
        self.conv = nn.Sequential(*layers)
        freq = feat_in
        for _ in range(n_steps):
            freq = (freq - 1) // 2 + 1
        self.out = nn.Linear(c * freq, feat_out)

    def get_sampling_frames(self):
        return [1, self.subsampling_factor]

    def get_streaming_cache_size(self):
        return [0, self.subsampling_factor + 1]

    def _convolve(self, x, lengths):
        """x [B, 1, T, F] -> [B, C, T', F'] (channels-last memory), padded frames zero after every ReLU."""
        if bool((lengths < x.size(2)).any()):
            x = x.masked_fill(~(torch.arange(x.size(2), device=x.device) < lengths[:, None])[:, None, :, None], 0.0)
        first = self.conv[0]
        lengths = subsampled_length(lengths, 1)
        # conv 0 + ReLU 1 as one patch matmul; its output is channels-last, where oneDNN's depthwise
        # kernels are several times faster than in the NCHW layout it would pick for one input channel
        # in float32 with autocast off: a custom Function's backward runs without autocast, so a bf16 forward
        # matmul would meet float32 patches there (bf16-mixed training); the 9-tap conv costs little either way
        with torch.autocast(x.device.type, enabled=False):
            bias = None if first.bias is None else first.bias.float()
            x = _PatchConvReLU.apply(x.float(), first.weight.float(), bias, lengths)
        layers = list(self.conv)[2:]
        i = 0
        while i < len(layers):
            layer = layers[i]
            if layer.kernel_size == (1, 1):
                # pointwise conv + ReLU: a matmul over the channel axis of the channels-last memory
                y = F.linear(x.permute(0, 2, 3, 1), layer.weight.flatten(1), layer.bias)  # [B, T, F, C]
                x = _MaskedReLU.apply(y, lengths, 1).permute(0, 3, 1, 2)
                i += 2
            else:
                x = layer(x)
                lengths = subsampled_length(lengths, 1)
                if i + 1 < len(layers) and isinstance(layers[i + 1], nn.ReLU):
                    x = _MaskedReLU.apply(x, lengths, 2)
                    i += 1
                i += 1
        return x, lengths

    def _n_chunks(self, x):
        if self.subsampling_conv_chunking_factor == -1:
            return 1
        if self.subsampling_conv_chunking_factor > 1:
            return self.subsampling_conv_chunking_factor
        # the first conv output is the largest activation: B * C * T/2 * F/2
        largest = x.numel() * self._conv_channels / 4
        return min(x.size(0), 2 ** math.ceil(math.log2(largest / _MAX_ELEMENTS))) if largest > _MAX_ELEMENTS else 1

    def forward(self, x, lengths):
        lengths = lengths.to(torch.int64)
        x = x.unsqueeze(1)
        n_chunks = self._n_chunks(x)
        if n_chunks > 1:
            parts = [self._convolve(xc, lc) for xc, lc in zip(x.chunk(n_chunks), lengths.chunk(n_chunks))]
            x, lengths = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        else:
            x, lengths = self._convolve(x, lengths)
        b, c, t, f = x.shape
        return self.out(x.transpose(1, 2).reshape(b, t, c * f)), lengths


def _zero_padding_(out, lengths, time_dim):
    """Zero frames ``t >= lengths[b]`` along ``time_dim`` in place (one contiguous block per item when the
    time axis is outermost in memory)."""
    t = out.size(time_dim)
    for b, n in enumerate(lengths.tolist()):
        if n < t:
            out[b].narrow(time_dim - 1, max(n, 0), t - max(n, 0)).zero_()


class _MaskedReLU(torch.autograd.Function):
    """In-place ReLU of a conv output that also zeroes the padded frames (``t >= lengths[b]`` on
    ``time_dim``).

    The conv output is not needed by the conv's backward, so it can be overwritten; ReLU's backward only
    needs the result, whose zeros already stop the gradient at padded frames, so masking costs no extra
    pass over the (large) tensor in either direction.
    """

    @staticmethod
    def forward(ctx, x, lengths, time_dim):
        out = x.clamp_min_(0.0)
        _zero_padding_(out, lengths, time_dim)
        ctx.mark_dirty(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved_tensors
        return torch.ops.aten.threshold_backward(grad, out, 0.0), None, None


class _PatchConvReLU(torch.autograd.Function):
    """Conv2d(1 -> C, 3x3, stride 2, padding 1) + ReLU + zeroed padded frames, as a matmul over unfolded
    3x3 patches. x [B, 1, T, F] -> [B, C, T', F'] backed by channels-last [B, T', F', C] memory."""

    @staticmethod
    def forward(ctx, x, weight, bias, lengths):
        b, _, t, f = x.shape
        c = weight.size(0)
        t_out, f_out = (t - 1) // 2 + 1, (f - 1) // 2 + 1
        patches = F.unfold(x, 3, padding=1, stride=2)  # [B, 9, T'F']
        out = torch.matmul(patches.transpose(1, 2), weight.reshape(c, 9).t())  # [B, T'F', C]
        if bias is not None:
            out += bias
        out.clamp_min_(0.0)
        out = out.view(b, t_out, f_out, c)
        _zero_padding_(out, lengths, 1)
        ctx.save_for_backward(patches, weight, out)
        ctx.input_size = (t, f)
        ctx.has_bias = bias is not None
        return out.permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx, grad):
        patches, weight, out = ctx.saved_tensors
        b, t_out, f_out, c = out.shape
        g = torch.ops.aten.threshold_backward(grad.permute(0, 2, 3, 1), out, 0.0).reshape(b, t_out * f_out, c)
        grad_weight = torch.bmm(patches, g).sum(0).t().reshape(weight.shape)  # [9, C] summed over the batch
        grad_bias = g.sum((0, 1)) if ctx.has_bias else None
        grad_x = None
        if ctx.needs_input_grad[0]:
            cols = torch.matmul(g, weight.reshape(c, 9)).transpose(1, 2)  # [B, 9, T'F']
            grad_x = F.fold(cols, ctx.input_size, 3, padding=1, stride=2)
        return grad_x, grad_weight, grad_bias, None
