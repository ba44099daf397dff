"""Scaled sinusoidal absolute positional encoding of the MossFormer2 mask network.

``encoding[t] = scale * concat(sin(t * inv_freq), cos(t * inv_freq))`` with
``inv_freq[i] = 10000 ** (-2 i / dim)`` and one learned scalar ``scale`` (sines in the first half of the
features, cosines in the second, not interleaved).

Example:
    >>> enc = ScaledSinusoidalEncoding(64)
    >>> enc(100).shape
    torch.Size([100, 64])
"""
import torch
from torch import nn

__all__ = ["ScaledSinusoidalEncoding"]


class ScaledSinusoidalEncoding(nn.Module):
    """``forward(length) -> [length, dim]``; ``inv_freq`` is a saved buffer so checkpoints carry it."""

    def __init__(self, dim: int, base: float = 10000.0):
        super().__init__()
        if dim % 2:
            raise ValueError(f"ScaledSinusoidalEncoding needs an even dim, got {dim}")
        self.scale = nn.Parameter(torch.ones(1))
        self.register_buffer("inv_freq", 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim)))

    def forward(self, length: int) -> torch.Tensor:
        positions = torch.arange(length, device=self.inv_freq.device, dtype=self.inv_freq.dtype)
        angles = positions[:, None] * self.inv_freq[None, :]
        return torch.cat((angles.sin(), angles.cos()), dim=-1) * self.scale
