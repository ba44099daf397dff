"""Convolution modules of MossFormer2: depthwise time convolutions and the convolutional feed-forward.

Everything here works channels-last, ``[B, L, C]``, because the surrounding linear layers do.

- :func:`depthwise_conv` : per-channel 1-D convolution along time, zero "same" padding.
- :class:`DepthwiseConvResidual` : ``x + depthwise_conv(x)`` (kernel 17 in MossFormer2).
- :func:`silu_conv_residual` : ``s + depthwise_conv(s)`` with ``s = silu(h)``, saving only ``h`` for backward.
- :class:`ConvFeedForward` : ``dropout(conv_residual(silu(linear(norm(x)))))`` -- the projection used for
  every input/output projection of the attention and of the gated FSMN.
- :func:`parallel_conv_feedforward` : several ``ConvFeedForward`` branches of the same input in one pass
  (one normalisation, one matrix product, one convolution), numerically the same as calling each.
- :class:`FusedConvFeedForward` : the same with the folded weights computed once (inference).

Why not ``nn.Conv1d(groups=C)``: on CPU a depthwise ``conv1d`` runs through a generic path that is ~10-25x
slower than the depthwise ``conv2d`` kernel with a ``1 x K`` filter, which is what we call (measured in
``bench/mossformer2.py``; the official model spends about half of its CPU time in depthwise conv1d).

Example:
    >>> import torch
    >>> ff = ConvFeedForward(16, 32, norm="scale")
    >>> ff(torch.randn(2, 50, 16)).shape
    torch.Size([2, 50, 32])
"""
import copy
from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nest_ext.modules.mossformer2.norms import LayerNorm, ScaleNorm

__all__ = [
    "depthwise_conv", "silu_conv_residual", "DepthwiseConvResidual", "ConvFeedForward", "parallel_conv_feedforward",
    "FusedConvFeedForward",
]


def _needs_float32(x: torch.Tensor) -> bool:
    """CPU convolutions run in float32 with autocast off (see :func:`_conv`)."""
    return x.device.type == "cpu" and (x.dtype != torch.float32 or torch.is_autocast_enabled("cpu"))


def _conv(x: torch.Tensor, weight: torch.Tensor, dilation: int) -> torch.Tensor:
    """Depthwise "same" convolution of ``x [B, C, L]``; the result is a channels-last ``[B, C, L]`` view.

    Runs as a ``1 x K`` depthwise ``conv2d`` on channels-last memory (``[B, L, C]`` underneath), the only
    layout in which oneDNN's depthwise kernel is fast on CPU: a contiguous ``[B, C, 1, L]`` input is ~25x
    slower, and so is a dilated kernel in any layout. A dilation ``d > 1`` is therefore computed without
    one: time is split into ``d`` phases (``t = m * d + r``), each phase convolved with the undilated
    kernel (``y[m d + r] = sum_k w[k] x[(m + k - K // 2) d + r]``), and the phases interleaved again.
    On CPU, half-precision inputs are computed in float32 (oneDNN has no bf16 depthwise kernel without
    AVX512-BF16 and falls back to one slow convolution per channel) and returned in their own dtype.
    """
    if _needs_float32(x):
        with torch.autocast("cpu", enabled=False):
            return _conv(x.float(), weight.float(), dilation).to(x.dtype)
    batch, channels, length = x.shape
    kernel = weight.shape[-1]
    weight = weight.unsqueeze(2)
    if dilation == 1:
        x4 = x.unsqueeze(2).contiguous(memory_format=torch.channels_last)
        return F.conv2d(x4, weight, padding=(0, kernel // 2), groups=channels).squeeze(2)
    frames = -(-length // dilation)
    xt = x.transpose(1, 2)  # [B, L, C]
    if frames * dilation != length:  # zeros at the end: what "same" padding would read there anyway
        xt = F.pad(xt, (0, 0, 0, frames * dilation - length))
    phases = xt.unflatten(1, (frames, dilation)).permute(0, 3, 2, 1)  # [B, C, d, L / d]
    y = F.conv2d(phases.contiguous(memory_format=torch.channels_last), weight, padding=(0, kernel // 2), groups=channels)
    y = y.permute(0, 3, 2, 1).reshape(batch, frames * dilation, channels)  # interleave the phases: [B, L, C]
    return y[:, :length].transpose(1, 2)


# The custom backward functions are CPU speed work; on other devices autograd's own kernels are used.
FAST_BACKWARD = True


def _use_fast_backward(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (FAST_BACKWARD and x.device.type == "cpu" and torch.is_grad_enabled()
            and (x.requires_grad or weight.requires_grad))


def _contiguous_ncl(x: torch.Tensor) -> torch.Tensor:
    """``x.contiguous()`` for ``[B, C, L]``, one ``[C, L]`` matrix at a time.

    A channels-last ``x`` then goes through PyTorch's blocked 2-D transpose copy, ~5x faster on CPU than
    the generic strided copy of the 3-D tensor (which took more time than the convolution it feeds).
    """
    if x.is_contiguous():
        return x
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    for item, source in zip(out, x):
        item.copy_(source)
    return out


def _conv_weight_grad(x: torch.Tensor, grad_out: torch.Tensor, kernel: int, dilation: int) -> torch.Tensor:
    """``grad_w[c, 0, k] = sum_{b, t} grad_out[b, c, t] * x_padded[b, c, t + k * dilation]`` for ``[B, C, L]``.

    Computed as a depthwise convolution whose "kernel" is ``grad_out`` (one group per batch item and
    channel), summed over the batch: it runs on the same fast depthwise kernel as the forward pass.
    Computed in float32 on CPU (see :func:`_conv`); the result is float32 there.
    """
    if _needs_float32(x) or (x.device.type == "cpu" and grad_out.dtype != torch.float32):
        with torch.autocast("cpu", enabled=False):
            return _conv_weight_grad(x.float(), grad_out.float(), kernel, dilation)
    batch, channels, length = x.shape
    pad = dilation * (kernel - 1) // 2
    xp = F.pad(_contiguous_ncl(x), (pad, pad)).reshape(1, batch * channels, 1, length + 2 * pad)
    g = _contiguous_ncl(grad_out).reshape(batch * channels, 1, 1, length)
    grad_w = F.conv2d(xp, g, stride=(1, dilation), groups=batch * channels)
    return grad_w.reshape(batch, channels, kernel).sum(0).unsqueeze(1)


class _DepthwiseConvFunction(torch.autograd.Function):
    """Depthwise conv whose backward also runs on the fast depthwise forward kernel.

    grad_input is the convolution of grad_output with the time-reversed kernel; grad_weight comes from
    :func:`_conv_weight_grad`. (Autograd's own depthwise backward is several times slower on CPU.)
    """

    @staticmethod
    def forward(ctx, x, weight, dilation):
        ctx.save_for_backward(x, weight)
        ctx.dilation = dilation
        return _conv(x, weight, dilation)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = _conv(grad_out, weight.flip(-1), ctx.dilation)
        if ctx.needs_input_grad[1]:
            grad_w = _conv_weight_grad(x, grad_out, weight.shape[-1], ctx.dilation)
        return grad_x, grad_w, None


class _SiluConvResidualFunction(torch.autograd.Function):
    """``s + depthwise_conv(s)`` with ``s = silu(h)``, channels-last ``h [B, L, C]``.

    Saves only ``h`` for backward and recomputes ``s`` there, instead of keeping both (one activation
    of the widest tensor in each block less in training memory).
    """

    @staticmethod
    def forward(ctx, h, weight):
        ctx.save_for_backward(h, weight)
        s = F.silu(h)
        return s + _conv(s.transpose(1, 2), weight, 1).transpose(1, 2)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        h, weight = ctx.saved_tensors
        g = grad_out.transpose(1, 2)
        grad_h = grad_w = None
        if ctx.needs_input_grad[1]:
            s = F.silu(h).transpose(1, 2)
            grad_w = _conv_weight_grad(s, g, weight.shape[-1], 1)
        if ctx.needs_input_grad[0]:
            grad_s = grad_out + _conv(g, weight.flip(-1), 1).transpose(1, 2)
            grad_h = torch.ops.aten.silu_backward(grad_s, h)
        return grad_h, grad_w


def silu_conv_residual(h: torch.Tensor, weight: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """``s + depthwise_conv(s)`` with ``s = silu(h)`` for channels-last ``h [B, L, C]``, ``weight [C, 1, K]``.

    ``inplace``: ``h`` may be overwritten when no gradient is being recorded (saves a pass over memory).
    """
    if _use_fast_backward(h, weight):
        return _SiluConvResidualFunction.apply(h, weight)
    if torch.is_grad_enabled():
        s = F.silu(h)
        return s + _conv(s.transpose(1, 2), weight, 1).transpose(1, 2)
    s = F.silu(h, inplace=inplace)
    return _conv(s.transpose(1, 2), weight, 1).transpose(1, 2).add_(s)  # the conv's output is ours to reuse


def depthwise_conv(x: torch.Tensor, weight: torch.Tensor, dilation: int = 1) -> torch.Tensor:
    """Depthwise convolution along time with "same" zero padding.

    Args:
        x: ``[B, C, L]`` (any strides; a transposed channels-last tensor is fine).
        weight: ``[C, 1, K]`` with odd ``K``.
    Returns:
        ``[B, C, L]``.
    """
    if _use_fast_backward(x, weight):
        return _DepthwiseConvFunction.apply(x, weight, dilation)
    return _conv(x, weight, dilation)


class DepthwiseConvResidual(nn.Module):
    """``x + depthwise_conv(x)`` on channels-last ``[B, L, C]``; ``weight [C, 1, K]``, no bias."""

    def __init__(self, channels: int, kernel_size: int = 17):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd for same padding, got {kernel_size}")
        self.weight = nn.Parameter(torch.empty(channels, 1, kernel_size))
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)  # nn.Conv1d's default initialisation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + depthwise_conv(x.transpose(1, 2), self.weight).transpose(1, 2)


class ConvFeedForward(nn.Module):
    """``[B, L, dim_in] -> [B, L, dim_out]``: norm, linear, SiLU, depthwise conv with residual, dropout.

    ``norm`` is ``"scale"`` (:class:`ScaleNorm`, in the attention) or ``"layer"`` (in the gated FSMN).
    """

    def __init__(self, dim_in: int, dim_out: int, norm: str = "scale", kernel_size: int = 17, dropout: float = 0.1):
        super().__init__()
        if norm == "scale":
            self.norm = ScaleNorm(dim_in)
        elif norm == "layer":
            self.norm = LayerNorm(dim_in)
        else:
            raise ValueError(f"norm must be 'scale' or 'layer', got {norm!r}")
        self.linear = nn.Linear(dim_in, dim_out)
        self.conv = DepthwiseConvResidual(dim_out, kernel_size)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(silu_conv_residual(self.linear(self.norm(x)), self.conv.weight, inplace=True))


def _fold_branches(branches: Sequence[ConvFeedForward]):
    """Concatenated (linear weight, bias, depthwise kernel) of branches with their norm affines folded in."""
    first = branches[0]
    for b in branches[1:]:
        if (type(b.norm) is not type(first.norm) or b.norm.eps != first.norm.eps
                or b.conv.weight.shape[-1] != first.conv.weight.shape[-1] or b.dropout.p != first.dropout.p):
            raise ValueError("parallel_conv_feedforward needs branches with the same norm, kernel and dropout")
    folded = [b.norm.fold_into_linear(b.linear) for b in branches]
    weight = torch.cat([w for w, _ in folded], dim=0)
    bias = torch.cat([bb for _, bb in folded], dim=0)
    kernel = torch.cat([b.conv.weight for b in branches], dim=0)
    return weight, bias, kernel


def parallel_conv_feedforward(branches: Sequence[ConvFeedForward], x: torch.Tensor) -> List[torch.Tensor]:
    """``[branch(x) for branch in branches]`` computed as one wide branch.

    The normalisation's parameter-free part is shared, each branch's affine is folded into its linear
    weights, the weights are concatenated into one matrix product and the depthwise kernels into one
    convolution. All branches must use the same norm type, eps, kernel size and dropout probability.
    """
    weight, bias, kernel = _fold_branches(branches)
    normalized = branches[0].norm.normalize(x)
    h = branches[0].dropout(silu_conv_residual(F.linear(normalized, weight, bias), kernel, inplace=True))
    return list(h.split([b.linear.out_features for b in branches], dim=-1))


class FusedConvFeedForward(nn.Module):
    """Inference form of :func:`parallel_conv_feedforward`: the folded weights computed once.

    ``FusedConvFeedForward(branches)(x)`` equals ``[b(x) for b in branches]`` in eval mode (no dropout).
    Its matrix product is a plain ``nn.Linear``, so inference transforms that act on ``nn.Linear``
    (``torch.ao`` dynamic quantisation) apply to it. Built from trained branches; not for training.
    """

    def __init__(self, branches: Sequence[ConvFeedForward]):
        super().__init__()
        with torch.no_grad():
            weight, bias, kernel = _fold_branches(branches)
        self.norm = copy.deepcopy(branches[0].norm)  # only its parameter-free ``normalize`` is used
        self.linear = nn.Linear(weight.shape[1], weight.shape[0], device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            self.linear.weight.copy_(weight)
            self.linear.bias.copy_(bias)
        self.kernel = nn.Parameter(kernel.detach().clone(), requires_grad=False)
        self.splits = [b.linear.out_features for b in branches]

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        h = silu_conv_residual(self.linear(self.norm.normalize(x)), self.kernel, inplace=True)
        return list(h.split(self.splits, dim=-1))
