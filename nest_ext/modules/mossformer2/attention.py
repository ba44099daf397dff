"""Gated single-head attention of MossFormer2 (FLASH-style: quadratic local + linear global attention).

With ``x [B, L, D]``:

1. token shift: the first ``D/2`` features of each frame are replaced by those of the previous frame;
2. ``hidden = [v, u]`` (``2 * E`` features each, ``E = D * expansion / 2``) and ``z`` (``qk_dim``) come
   from two :class:`ConvFeedForward` branches (ScaleNorm);
3. :class:`OffsetScale` makes four per-feature affine copies of ``z``: quadratic ``q, k`` and linear
   ``q, k``; all four get rotary position embeddings on their first 32 features;
4. quadratic attention inside non-overlapping groups of ``group_size`` frames:
   ``relu(q k^T / group_size)^2``; linear attention over the whole sequence:
   ``q (k^T h) / L``; both applied to ``v`` and ``u`` (computed together on ``hidden``);
5. output ``x + out_proj((att_u * v) * sigmoid(att_v * u))`` (out_proj: :class:`ConvFeedForward`).

Example:
    >>> import torch
    >>> from nest_ext.modules.mossformer2.rotary import RotaryEmbedding
    >>> rope = RotaryEmbedding(32)
    >>> att = GatedSingleHeadAttention(64, rotary=rope, group_size=16)
    >>> att(torch.randn(2, 40, 64), rope.cos_sin(40)).shape
    torch.Size([2, 40, 64])
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from nest_ext.modules.mossformer2.conv_modules import ConvFeedForward, FusedConvFeedForward, parallel_conv_feedforward
from nest_ext.modules.mossformer2.rotary import RotaryEmbedding, rotate

__all__ = ["OffsetScale", "GatedSingleHeadAttention"]


class OffsetScale(nn.Module):
    """``[..., d] -> [..., heads, d]``: ``x * gamma[h] + beta[h]`` for each of ``heads`` copies."""

    def __init__(self, dim: int, heads: int = 4):
        super().__init__()
        self.gamma = nn.Parameter(torch.empty(heads, dim))
        self.beta = nn.Parameter(torch.zeros(heads, dim))
        nn.init.normal_(self.gamma, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(-2) * self.gamma + self.beta


class GatedSingleHeadAttention(nn.Module):
    """``forward(x [B, L, D], rope=(cos, sin)) -> [B, L, D]`` (residual included).

    Args:
        dim: model width ``D``.
        rotary: the (shared) :class:`RotaryEmbedding`; its tables come in through ``forward``'s ``rope``.
        group_size: frames per quadratic-attention group.
        query_key_dim: width of queries and keys.
        expansion_factor: ``hidden = dim * expansion_factor`` features, split into ``v`` and ``u``.
        kernel_size, dropout: of the :class:`ConvFeedForward` projections; dropout also on the
            quadratic attention weights.
    """

    def __init__(
        self,
        dim: int,
        rotary: Optional[RotaryEmbedding] = None,
        group_size: int = 256,
        query_key_dim: int = 128,
        expansion_factor: float = 4.0,
        kernel_size: int = 17,
        dropout: float = 0.1,
    ):
        super().__init__()
        hidden = int(dim * expansion_factor)
        self.group_size = group_size
        self.rotary = rotary
        self.to_hidden = ConvFeedForward(dim, hidden, "scale", kernel_size, dropout)
        self.to_qk = ConvFeedForward(dim, query_key_dim, "scale", kernel_size, dropout)
        self.offset_scale = OffsetScale(query_key_dim, heads=4)
        self.to_out = ConvFeedForward(hidden // 2, dim, "scale", kernel_size, dropout)
        self.attn_dropout = nn.Dropout(dropout)
        self.fused_projections = None  # set by fuse_projections()

    def fuse_projections(self):
        """For inference: ``to_hidden`` and ``to_qk`` become one :class:`FusedConvFeedForward` (the state
        dict changes accordingly; a fused module is not for training or for saving)."""
        if self.fused_projections is None:
            self.fused_projections = FusedConvFeedForward((self.to_hidden, self.to_qk))
            del self.to_hidden, self.to_qk

    def forward(self, x: torch.Tensor, rope: Optional[Tuple[torch.Tensor, torch.Tensor]] = None) -> torch.Tensor:
        batch, length, dim = x.shape
        half = dim // 2
        shifted = torch.cat((F.pad(x[..., :half], (0, 0, 1, -1)), x[..., half:]), dim=-1)
        if self.fused_projections is not None:
            hidden, qk = self.fused_projections(shifted)
        else:
            hidden, qk = parallel_conv_feedforward((self.to_hidden, self.to_qk), shifted)
        qk = self.offset_scale(qk)  # [B, L, 4, d]
        if self.rotary is not None:
            if rope is None:
                rope = self.rotary.cos_sin(length)
            qk = rotate(qk, *rope, seq_dim=1)
        quad_q, lin_q, quad_k, lin_k = qk.unbind(dim=-2)

        # linear attention over the whole sequence, then the quadratic attention of each group added onto
        # it in place (no padded copy of `hidden`, no separate sum)
        att = lin_q @ ((lin_k.transpose(-1, -2) @ hidden) / length)
        g = self.group_size
        full = length - length % g
        # whole groups, then the last partial group on its own: the same as zero-padding it, since padded
        # keys add relu(0)^2 = 0 (the scores are divided by group_size either way, as in the official model)
        for start, stop in ((0, full), (full, length)):
            if stop == start:
                continue
            size = min(g, stop - start)
            groups = (stop - start) // size
            q = quad_q[:, start:stop].reshape(batch * groups, size, -1)
            k = quad_k[:, start:stop].reshape(batch * groups, size, -1)
            weights = self.attn_dropout(F.relu(q @ k.transpose(-1, -2) / g) ** 2).unflatten(0, (batch, groups))
            for b in range(batch):  # one batch item at a time, `hidden`'s groups stay views of it
                att[b, start:stop].view(groups, size, -1).baddbmm_(weights[b], hidden[b, start:stop].view(groups, size, -1))

        att_v, att_u = att.chunk(2, dim=-1)
        v, u = hidden.chunk(2, dim=-1)
        if torch.is_grad_enabled():
            gated = (att_u * v) * torch.sigmoid(att_v * u)
        else:  # inference: the same in place, in att's memory
            gated = att_v.mul_(u).sigmoid_().mul_(att_u).mul_(v)
        return x + self.to_out(gated)
