"""Normalisations used by MossFormer2.

- :class:`GlobalLayerNorm`: one mean and variance over channels and time of each example
  (the "gLN" of Conv-TasNet), with a per-channel affine. Input ``[B, C, L]``.
- :class:`ScaleNorm`: ``g * x / (||x||_2 / sqrt(dim))`` over the last axis with a single learned gain
  (Nguyen & Salazar 2019). Input ``[..., dim]``.

Both expose ``normalize`` (the parameter-free part) and ``fold_into_linear`` (the affine part folded
into the weights of a following ``nn.Linear``), so that several branches that normalise the same input
can share one normalisation and one matrix product (see
:func:`nest_ext.modules.mossformer2.conv_modules.parallel_conv_feedforward`).

Example:
    >>> import torch
    >>> GlobalLayerNorm(8)(torch.randn(2, 8, 50)).shape
    torch.Size([2, 8, 50])
    >>> ScaleNorm(8)(torch.randn(2, 50, 8)).shape
    torch.Size([2, 50, 8])
"""
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GlobalLayerNorm", "ScaleNorm", "LayerNorm"]


class GlobalLayerNorm(nn.GroupNorm):
    """Normalise ``[B, C, L]`` over ``C`` and ``L`` jointly (a one-group GroupNorm), affine per channel."""

    def __init__(self, num_channels: int, eps: float = 1e-8):
        super().__init__(num_groups=1, num_channels=num_channels, eps=eps)


class ScaleNorm(nn.Module):
    """``x * g / max(||x||_2 * dim**-0.5, eps)`` over the last axis; one learned scalar gain ``g``."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.dim = dim
        self.eps = eps
        self.g = nn.Parameter(torch.ones(1))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True) * self.dim ** -0.5
        return x / norm.clamp(min=self.eps)

    def fold_into_linear(self, linear: nn.Linear):
        """Weight and bias of ``linear(g * n)`` written as a linear map of the normalised ``n``."""
        return linear.weight * self.g, linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalize(x) * self.g


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` over the last axis, plus the normalise/fold split used for shared branches."""

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.normalized_shape, None, None, self.eps)

    def fold_into_linear(self, linear: nn.Linear):
        """``W (n * w + b) + c == (W * w) n + (W b + c)``."""
        weight = linear.weight * self.weight
        bias = linear.weight @ self.bias
        if linear.bias is not None:
            bias = bias + linear.bias
        return weight, bias
