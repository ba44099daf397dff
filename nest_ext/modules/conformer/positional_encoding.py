"""Sinusoidal position tables for the Conformer: absolute (added to the input) and relative (Transformer-XL).

State-dict compatible with NeMo: the tables are non-persistent buffers named ``pe``, so neither
encoder stores them in its state dict.

Example::

    >>> import torch
    >>> enc = RelPositionalEncoding(d_model=8, dropout_rate=0.0, max_len=10)
    >>> x, pos = enc(torch.zeros(2, 5, 8))
    >>> tuple(x.shape), tuple(pos.shape)
    ((2, 5, 8), (1, 9, 8))
"""
import math

import torch
from torch import nn

from nest_ext.modules.conformer.dropout import dropout

__all__ = ["PositionalEncoding", "RelPositionalEncoding", "sinusoid_table"]


def sinusoid_table(positions: torch.Tensor, d_model: int, dtype=torch.float32) -> torch.Tensor:
    """Sinusoids for the given (float) positions [L] -> [1, L, d_model]: even columns sin, odd cos,
    wavelengths growing geometrically up to 10000 * 2 pi (Vaswani et al. 2017)."""
    inv_freq = torch.exp(
        torch.arange(0, d_model, 2, dtype=torch.float32, device=positions.device) * (-math.log(10000.0) / d_model)
    )
    angles = positions.to(torch.float32).unsqueeze(1) * inv_freq  # [L, d_model/2]
    table = torch.stack((torch.sin(angles), torch.cos(angles)), dim=-1).reshape(positions.numel(), -1)
    return table[:, :d_model].unsqueeze(0).to(dtype)


class PositionalEncoding(nn.Module):
    """Absolute positions: ``x * xscale + pe[:T]`` followed by dropout.

    Args:
        d_model: feature size.
        dropout_rate: dropout on the sum.
        max_len: initial table length; ``extend_pe`` grows it when longer inputs come.
        xscale: factor on the input (``sqrt(d_model)`` when xscaling is on) or None.
        dropout_rate_emb: dropout on the table itself (0 disables).

    forward(x [B, T, D], cache_len=0) -> (x [B, T, D], pos_emb [1, T, D])
    """

    def __init__(self, d_model, dropout_rate, max_len=5000, xscale=None, dropout_rate_emb=0.0):
        super().__init__()
        self.d_model = d_model
        self.xscale = xscale
        self.max_len = max_len
        self.dropout = nn.Dropout(p=dropout_rate)
        self.dropout_emb = nn.Dropout(dropout_rate_emb) if dropout_rate_emb > 0 else None
        self.register_buffer("pe", torch.zeros(1, 0, d_model), persistent=False)

    def _positions(self, length, device):
        return torch.arange(0, length, dtype=torch.float32, device=device)

    def _table_size(self, length):
        return length

    def extend_pe(self, length, device, dtype):
        """Recompute the table when it is shorter than ``length`` frames need."""
        if self.pe.size(1) >= self._table_size(length):
            return
        self.pe = sinusoid_table(self._positions(length, device), self.d_model, dtype)

    def _scale(self, x):
        return x * self.xscale if self.xscale else x

    def forward(self, x, cache_len=0):
        self.extend_pe(x.size(1) + cache_len, x.device, x.dtype)  # no-op once the encoder has sized it
        x = self._scale(x)
        pos_emb = self.pe[:, : x.size(1) + cache_len]
        if self.dropout_emb is not None:
            pos_emb = self.dropout_emb(pos_emb)
        return dropout(x + pos_emb, self.dropout.p, self.training), pos_emb


class RelPositionalEncoding(PositionalEncoding):
    """Relative positions (Transformer-XL, Dai et al. 2019, App. B): the table holds distances from
    ``+(L-1)`` down to ``-(L-1)``; for an input of T frames the 2T-1 rows of distances ``T-1 .. -(T-1)``
    are returned, so row ``T-1-i+j`` is the distance ``i-j`` between query i and key j.

    forward(x [B, T, D], cache_len=0) -> (x [B, T, D] scaled and dropped out, pos_emb [1, 2T-1, D])
    """

    def _positions(self, length, device):
        return torch.arange(length - 1, -length, -1, dtype=torch.float32, device=device)

    def _table_size(self, length):
        return 2 * length - 1

    def forward(self, x, cache_len=0):
        n = x.size(1) + cache_len
        self.extend_pe(n, x.device, x.dtype)  # no-op once the encoder has sized it
        x = self._scale(x)
        zero = self.pe.size(1) // 2  # row of distance 0
        pos_emb = self.pe[:, zero - n + 1 : zero + n]
        if self.dropout_emb is not None:
            pos_emb = self.dropout_emb(pos_emb)
        return dropout(x, self.dropout.p, self.training), pos_emb
