"""Rotary position embedding (RoFormer) on the leading ``dim`` features, adjacent pairs rotated together.

For position ``t`` and pair ``(x[2i], x[2i+1])`` the rotation angle is ``t * freqs[i]``; features beyond
``dim`` pass unchanged (partial rotary, as in GPT-J). MossFormer2 shares one instance across all layers
and stores ``freqs`` in its checkpoints, so ``freqs`` is a non-trainable ``nn.Parameter`` (it counts in
the parameter total the way the official model counts it).

Example:
    >>> import torch
    >>> rope = RotaryEmbedding(32)
    >>> cos, sin = rope.cos_sin(10)
    >>> rotate(torch.randn(2, 10, 128), cos, sin).shape
    torch.Size([2, 10, 128])
"""
from typing import Tuple

import torch
from torch import nn

__all__ = ["RotaryEmbedding", "rotate"]


class RotaryEmbedding(nn.Module):
    """Holds ``freqs [dim // 2]``; ``cos_sin(length)`` gives the ``[length, dim]`` tables for :func:`rotate`."""

    def __init__(self, dim: int = 32, base: float = 10000.0):
        super().__init__()
        if dim % 2:
            raise ValueError(f"RotaryEmbedding needs an even dim, got {dim}")
        self.dim = dim
        freqs = 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))
        self.freqs = nn.Parameter(freqs, requires_grad=False)

    def cos_sin(self, length: int) -> Tuple[torch.Tensor, torch.Tensor]:
        positions = torch.arange(length, device=self.freqs.device, dtype=self.freqs.dtype)
        angles = (positions[:, None] * self.freqs[None, :]).repeat_interleave(2, dim=-1)
        return angles.cos(), angles.sin()


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, seq_dim: int = -2) -> torch.Tensor:
    """Rotate the first ``cos.shape[-1]`` features of ``x``; ``x``'s axis ``seq_dim`` is the position.

    ``cos``/``sin``: ``[L, rot_dim]`` from :meth:`RotaryEmbedding.cos_sin`.
    """
    rot_dim = cos.shape[-1]
    if x.shape[-1] < rot_dim:
        raise ValueError(f"cannot rotate {rot_dim} features of a tensor with {x.shape[-1]}")
    trailing = -1 - seq_dim if seq_dim < 0 else x.dim() - 1 - seq_dim
    shape = (cos.shape[0],) + (1,) * (trailing - 1) + (rot_dim,)
    cos, sin = cos.view(shape), sin.view(shape)
    head, tail = x[..., :rot_dim], x[..., rot_dim:]
    pairs = head.unflatten(-1, (rot_dim // 2, 2))
    swapped = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    return torch.cat((head * cos + swapped * sin, tail), dim=-1)
