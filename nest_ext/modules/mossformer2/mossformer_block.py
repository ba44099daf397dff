"""One MossFormer2 layer: gated single-head attention followed by the gated FSMN recurrent block.

Example:
    >>> import torch
    >>> from nest_ext.modules.mossformer2.rotary import RotaryEmbedding
    >>> rope = RotaryEmbedding(32)
    >>> layer = MossFormer2Layer(64, rotary=rope, group_size=16, fsmn_inner_dim=32)
    >>> layer(torch.randn(2, 40, 64), rope.cos_sin(40)).shape
    torch.Size([2, 40, 64])
"""
from typing import Optional, Tuple

import torch
from torch import nn

from nest_ext.modules.mossformer2.attention import GatedSingleHeadAttention
from nest_ext.modules.mossformer2.fsmn import GatedFSMNBlock
from nest_ext.modules.mossformer2.rotary import RotaryEmbedding

__all__ = ["MossFormer2Layer"]


class MossFormer2Layer(nn.Module):
    """``forward(x [B, L, D], rope) -> [B, L, D]``: ``fsmn_block(attention(x))``, each with its residual."""

    def __init__(
        self,
        dim: int,
        rotary: Optional[RotaryEmbedding] = None,
        group_size: int = 256,
        query_key_dim: int = 128,
        expansion_factor: float = 4.0,
        fsmn_inner_dim: int = 256,
        fsmn_lorder: int = 20,
        kernel_size: int = 17,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.attention = GatedSingleHeadAttention(
            dim, rotary, group_size, query_key_dim, expansion_factor, kernel_size, dropout
        )
        self.fsmn_block = GatedFSMNBlock(dim, fsmn_inner_dim, fsmn_lorder, kernel_size, dropout)

    def forward(self, x: torch.Tensor, rope: Optional[Tuple[torch.Tensor, torch.Tensor]] = None) -> torch.Tensor:
        return self.fsmn_block(self.attention(x, rope))
