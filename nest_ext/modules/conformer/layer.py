"""One Conformer block (Gulati et al. 2020): half-step feed-forward, self-attention, convolution module,
half-step feed-forward, final LayerNorm; every sub-module pre-normed and residual.

Submodule names match NeMo's ``ConformerLayer`` (``norm_feed_forward1``, ``feed_forward1``, ``norm_conv``,
``conv``, ``norm_self_att``, ``self_attn``, ``norm_feed_forward2``, ``feed_forward2``, ``norm_out``).

Example::

    >>> import torch
    >>> layer = ConformerLayer(d_model=8, d_ff=32, n_heads=2, conv_kernel_size=3, dropout=0.0)
    >>> tuple(layer(torch.randn(2, 5, 8), pos_emb=torch.randn(1, 9, 8)).shape)
    (2, 5, 8)
"""
import torch
from torch import nn

from nest_ext.modules.conformer.attention import MultiHeadAttention, RelPositionMultiHeadAttention
from nest_ext.modules.conformer.convolution import ConformerConvolution
from nest_ext.modules.conformer.dropout import dropout
from nest_ext.modules.conformer.feed_forward import ConformerFeedForward

__all__ = ["ConformerLayer"]


class ConformerLayer(nn.Module):
    """forward(x [B, T, D], pos_emb [1, 2T-1, D] (rel_pos) or None, key_bias [B, 1, 1, T] additive,
    query_pad [B, T, 1] bool, pad_mask [B, T] bool) -> [B, T, D]."""

    def __init__(
        self,
        d_model,
        d_ff,
        self_attention_model="rel_pos",
        n_heads=4,
        conv_kernel_size=31,
        conv_norm_type="batch_norm",
        dropout=0.1,
        dropout_att=0.1,
        pos_bias_u=None,
        pos_bias_v=None,
        use_bias=True,
    ):
        super().__init__()
        self.self_attention_model = self_attention_model
        self.n_heads = n_heads
        self.fc_factor = 0.5
        self.norm_feed_forward1 = nn.LayerNorm(d_model)
        self.feed_forward1 = ConformerFeedForward(d_model, d_ff, dropout, use_bias=use_bias)
        self.norm_conv = nn.LayerNorm(d_model)
        self.conv = ConformerConvolution(d_model, conv_kernel_size, norm_type=conv_norm_type, use_bias=use_bias)
        self.norm_self_att = nn.LayerNorm(d_model)
        if self_attention_model == "rel_pos":
            self.self_attn = RelPositionMultiHeadAttention(
                n_heads, d_model, dropout_att, pos_bias_u=pos_bias_u, pos_bias_v=pos_bias_v, use_bias=use_bias
            )
        elif self_attention_model == "abs_pos":
            self.self_attn = MultiHeadAttention(n_heads, d_model, dropout_att, use_bias=use_bias)
        else:
            raise ValueError(f"self_attention_model={self_attention_model!r} is not supported (rel_pos, abs_pos)")
        self.norm_feed_forward2 = nn.LayerNorm(d_model)
        self.feed_forward2 = ConformerFeedForward(d_model, d_ff, dropout, use_bias=use_bias)
        self.dropout = nn.Dropout(dropout)
        self.norm_out = nn.LayerNorm(d_model)

    def _drop(self, x):
        return dropout(x, self.dropout.p, self.training)

    def forward(self, x, pos_emb=None, key_bias=None, query_pad=None, pad_mask=None):
        # torch.add(..., alpha=) fuses the half-step scaling into the residual add
        x = torch.add(x, self._drop(self.feed_forward1(self.norm_feed_forward1(x))), alpha=self.fc_factor)
        x = x + self._drop(self.self_attn(self.norm_self_att(x), pos_emb, key_bias, query_pad))
        x = x + self._drop(self.conv(self.norm_conv(x), pad_mask))
        x = torch.add(x, self._drop(self.feed_forward2(self.norm_feed_forward2(x))), alpha=self.fc_factor)
        return self.norm_out(x)
