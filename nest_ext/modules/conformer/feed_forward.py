"""The Conformer's macaron feed-forward module: Linear -> SiLU (Swish) -> dropout -> Linear.

Parameter names match NeMo's ``ConformerFeedForward`` (``linear1``, ``linear2``).

Example::

    >>> import torch
    >>> ff = ConformerFeedForward(d_model=8, d_ff=32, dropout=0.0)
    >>> tuple(ff(torch.randn(2, 5, 8)).shape)
    (2, 5, 8)
"""
import torch.nn.functional as F
from torch import nn

from nest_ext.modules.conformer.dropout import dropout

__all__ = ["ConformerFeedForward"]


class ConformerFeedForward(nn.Module):
    """forward(x [B, T, d_model]) -> [B, T, d_model]."""

    def __init__(self, d_model, d_ff, dropout, use_bias=True):
        super().__init__()
        self.d_model = d_model
        self.d_ff = d_ff
        self.use_bias = use_bias
        self.linear1 = nn.Linear(d_model, d_ff, bias=use_bias)
        self.dropout = nn.Dropout(p=dropout)
        self.linear2 = nn.Linear(d_ff, d_model, bias=use_bias)

    def forward(self, x):
        return self.linear2(dropout(F.silu(self.linear1(x)), self.dropout.p, self.training))
