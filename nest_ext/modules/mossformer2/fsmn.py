"""The RNN-free recurrent module of MossFormer2: gated FSMN with dilated, densely connected memory.

- :class:`DenseDilatedMemory` : ``depth`` layers of per-channel time convolutions (kernel
  ``2 * lorder - 1``, dilation ``2**i``), each followed by instance norm (over time, per channel) and a
  per-channel PReLU. Layer ``i`` reads the concatenation ``[out_{i-1}, ..., out_0, x]`` (dense
  connections) as a grouped convolution: output channel ``c`` reads input channels
  ``(i+1) c ... (i+1) c + i`` of that concatenation. Returns the last layer's output.
- :class:`FSMNMemory` : ``x + memory(project(relu(linear(x))))``.
- :class:`GatedFSMN` : ``v * fsmn(u) + x`` with ``u``/``v`` from two :class:`ConvFeedForward`
  branches (LayerNorm).
- :class:`GatedFSMNBlock` : ``x + out_proj(norm(gated_fsmn(norm(prelu(in_proj(x))))))`` with a fixed
  inner width (256 in MossFormer2) whatever the model width.

All take and return channels-last ``[B, L, C]``.

Example:
    >>> import torch
    >>> GatedFSMNBlock(64, inner_dim=32)(torch.randn(2, 30, 64)).shape
    torch.Size([2, 30, 64])
"""
import functools

import torch
import torch.nn.functional as F
from torch import nn

from nest_ext.modules.mossformer2.conv_modules import (
    ConvFeedForward,
    FusedConvFeedForward,
    depthwise_conv,
    parallel_conv_feedforward,
)
from nest_ext.modules.mossformer2.norms import LayerNorm

__all__ = ["DenseDilatedLayer", "DenseDilatedMemory", "FSMNMemory", "GatedFSMN", "GatedFSMNBlock"]


class DenseDilatedLayer(nn.Module):
    """Grouped time convolution (``in_per_channel`` inputs per output channel), instance norm, PReLU.

    ``forward(x [B, C * in_per_channel, L]) -> [B, C, L]``.
    """

    def __init__(self, channels: int, in_per_channel: int, kernel_size: int, dilation: int):
        super().__init__()
        self.dilation = dilation
        self.weight = nn.Parameter(torch.empty(channels, in_per_channel, kernel_size))
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)
        self.norm = nn.InstanceNorm1d(channels, affine=True)
        self.act = nn.PReLU(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels, per_channel, kernel = self.weight.shape
        # a grouped conv with several inputs per group is computed as a depthwise conv over all inputs
        # followed by a sum over each group's inputs: the depthwise kernel is much faster on CPU
        y = depthwise_conv(x, self.weight.reshape(channels * per_channel, 1, kernel), self.dilation)
        if per_channel > 1:
            # summed slice by slice: y is channels-last, where .sum over adjacent channels is ~8x slower
            y = functools.reduce(torch.add, y.unflatten(1, (channels, per_channel)).unbind(2))
        return self.act(self.norm(y))


class DenseDilatedMemory(nn.Module):
    """``[B, C, L] -> [B, C, L]``; layer ``i`` has dilation ``2**i`` and sees all earlier outputs."""

    def __init__(self, channels: int, lorder: int = 20, depth: int = 2):
        super().__init__()
        self.layers = nn.ModuleList(
            DenseDilatedLayer(channels, i + 1, 2 * lorder - 1, 2 ** i) for i in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x
        for layer in self.layers[:-1]:
            out = layer(skip)
            # concatenated in channels-last memory ([B, L, C] underneath), where the convolutions are fast
            skip = torch.cat((out.transpose(1, 2), skip.transpose(1, 2)), dim=-1).transpose(1, 2)
        return self.layers[-1](skip)


class FSMNMemory(nn.Module):
    """``x + memory(project(relu(linear(x))))`` on ``[B, L, C]``."""

    def __init__(self, dim: int, hidden_dim: int, lorder: int = 20, depth: int = 2):
        super().__init__()
        self.linear = nn.Linear(dim, hidden_dim)
        self.project = nn.Linear(hidden_dim, dim, bias=False)
        self.memory = DenseDilatedMemory(dim, lorder, depth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.project(F.relu(self.linear(x)))
        return x + self.memory(p.transpose(1, 2)).transpose(1, 2)


class GatedFSMN(nn.Module):
    """``v * fsmn(u) + x`` with ``u, v`` the two :class:`ConvFeedForward` projections of ``x``."""

    def __init__(self, dim: int, lorder: int = 20, kernel_size: int = 17, dropout: float = 0.1):
        super().__init__()
        self.to_u = ConvFeedForward(dim, dim, "layer", kernel_size, dropout)
        self.to_v = ConvFeedForward(dim, dim, "layer", kernel_size, dropout)
        self.fsmn = FSMNMemory(dim, dim, lorder)
        self.fused_projections = None  # set by fuse_projections()

    def fuse_projections(self):
        """For inference: ``to_u`` and ``to_v`` become one :class:`FusedConvFeedForward` (see
        :meth:`GatedSingleHeadAttention.fuse_projections`)."""
        if self.fused_projections is None:
            self.fused_projections = FusedConvFeedForward((self.to_u, self.to_v))
            del self.to_u, self.to_v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused_projections is not None:
            u, v = self.fused_projections(x)
        else:
            u, v = parallel_conv_feedforward((self.to_u, self.to_v), x)
        if torch.is_grad_enabled():
            return v * self.fsmn(u) + x
        return self.fsmn(u).mul_(v).add_(x)  # inference: in place in fsmn's fresh output


class GatedFSMNBlock(nn.Module):
    """``[B, L, dim] -> [B, L, dim]``: bottleneck to ``inner_dim``, gated FSMN, back, residual."""

    def __init__(self, dim: int, inner_dim: int = 256, lorder: int = 20, kernel_size: int = 17, dropout: float = 0.1):
        super().__init__()
        self.in_proj = nn.Linear(dim, inner_dim)
        self.in_act = nn.PReLU()
        self.in_norm = LayerNorm(inner_dim)
        self.gated_fsmn = GatedFSMN(inner_dim, lorder, kernel_size, dropout)
        self.out_norm = LayerNorm(inner_dim)
        self.out_proj = nn.Linear(inner_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.in_norm(self.in_act(self.in_proj(x)))
        h = self.gated_fsmn(h)
        return x + self.out_proj(self.out_norm(h))
