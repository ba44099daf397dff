"""Multi-head self-attention for the Conformer: absolute (``abs_pos``) and Transformer-XL relative
(``rel_pos``) variants, holding NeMo's parameter names (``linear_q/k/v/out``, ``linear_pos``,
``pos_bias_u/v``) so NeMo's state dicts load as they are.

Differences from NeMo's implementation (same numbers, less work):

- q, k and v come from one matmul with the three weights concatenated at run time;
- the relative shift is a strided view of the position scores (no padded copy);
- the 1/sqrt(d_k) scale is applied to q once instead of to the [B, H, T, T] scores;
- padding is an additive key bias [B, 1, 1, T] plus a zeroed output for padded queries, instead of a
  [B, T, T] boolean mask filled twice.

Only full context (``att_context_size`` [-1, -1]) is supported, which is what the encoder builds.

Example::

    >>> import torch
    >>> att = RelPositionMultiHeadAttention(n_head=2, n_feat=8, dropout_rate=0.0)
    >>> x, pos = torch.randn(3, 5, 8), torch.randn(1, 9, 8)
    >>> tuple(att(x, pos_emb=pos).shape)
    (3, 5, 8)
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from nemo.utils import avoid_float16_autocast_context

from nest_ext.modules.conformer.dropout import dropout

__all__ = ["MultiHeadAttention", "RelPositionMultiHeadAttention", "padding_bias", "NEG_INF"]

# NeMo fills masked scores with -10000 (not -inf) so fully padded rows stay finite; exp(-10000) is 0 in fp32.
NEG_INF = -10000.0


def padding_bias(valid: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """Additive attention bias from a validity mask [B, T] (True = real frame) -> [B, 1, 1, T]."""
    bias = torch.zeros(valid.shape, dtype=dtype, device=valid.device).masked_fill_(~valid, NEG_INF)
    return bias[:, None, None, :]


def relative_shift(scores: torch.Tensor) -> torch.Tensor:
    """[..., T, 2T-1] scores against distances ``T-1 .. -(T-1)`` -> [..., T, T] scores where entry (i, j)
    belongs to distance ``i - j``, i.e. column ``T-1-i+j``. In the flattened last two dims that element
    sits at ``(T-1) + i*(2T-2) + j``: a slice, a view and a slice, no copy."""
    t = scores.size(-2)
    lead = scores.shape[:-2]
    flat = scores.reshape(*lead, t * (2 * t - 1))
    return flat[..., t - 1 : t - 1 + t * (2 * t - 2)].view(*lead, t, 2 * t - 2)[..., :t]


class MultiHeadAttention(nn.Module):
    """Self-attention with absolute positions (the positions are added to the input beforehand).

    Args:
        n_head: heads; n_feat: model size (divisible by n_head); dropout_rate: dropout on attention weights;
        use_bias: biases on the four projections.

    forward(x [B, T, D], pos_emb=None, key_bias=None [B, 1, 1, T] additive, query_pad=None [B, T, 1] bool)
    -> [B, T, D]
    """

    def __init__(self, n_head, n_feat, dropout_rate, use_bias=True):
        super().__init__()
        if n_feat % n_head:
            raise ValueError(f"d_model={n_feat} is not divisible by n_heads={n_head}")
        self.h = n_head
        self.d_k = n_feat // n_head
        self.dropout_rate = dropout_rate
        self.use_bias = use_bias
        self.linear_q = nn.Linear(n_feat, n_feat, bias=use_bias)
        self.linear_k = nn.Linear(n_feat, n_feat, bias=use_bias)
        self.linear_v = nn.Linear(n_feat, n_feat, bias=use_bias)
        self.linear_out = nn.Linear(n_feat, n_feat, bias=use_bias)

    def _qkv(self, x):
        """One matmul for q, k, v -> three [B, H, T, d_k] views."""
        weight = torch.cat((self.linear_q.weight, self.linear_k.weight, self.linear_v.weight))
        bias = None
        if self.use_bias:
            bias = torch.cat((self.linear_q.bias, self.linear_k.bias, self.linear_v.bias))
        b, t, _ = x.shape
        qkv = F.linear(x, weight, bias).view(b, t, 3, self.h, self.d_k).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]

    def _output(self, context, query_pad):
        """[B, H, T, d_k] -> [B, T, D]; padded queries give zeros before linear_out, as in NeMo."""
        b, _, t, _ = context.shape
        context = context.transpose(1, 2).reshape(b, t, self.h * self.d_k)
        if query_pad is not None:
            context = context.masked_fill(query_pad, 0.0)
        return self.linear_out(context)

    def forward(self, x, pos_emb=None, key_bias=None, query_pad=None):
        # as NeMo: under mixed precision the attention runs in fp32 (bf16 instead of fp16 where possible)
        if torch.is_autocast_enabled():
            x = x.float()
        with avoid_float16_autocast_context():
            q, k, v = self._qkv(x)
            drop = self.dropout_rate if self.training else 0.0
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=key_bias, dropout_p=drop)
            return self._output(context, query_pad)


class RelPositionMultiHeadAttention(MultiHeadAttention):
    """Transformer-XL attention (Dai et al. 2019, Sec. 3.3): score(i, j) =
    ``(q_i + u) . k_j + (q_i + v) . W_pos r_{i-j}``, scaled by 1/sqrt(d_k).

    Args: as MultiHeadAttention, plus ``pos_bias_u``/``pos_bias_v``: shared [H, d_k] parameters when the
    encoder ties them across layers (``untie_biases: false``), else None for per-layer ones (zeros).

    forward(x [B, T, D], pos_emb [1, 2T-1, D], key_bias, query_pad) -> [B, T, D]
    """

    def __init__(self, n_head, n_feat, dropout_rate, pos_bias_u=None, pos_bias_v=None, use_bias=True):
        super().__init__(n_head, n_feat, dropout_rate, use_bias=use_bias)
        self.linear_pos = nn.Linear(n_feat, n_feat, bias=False)
        if pos_bias_u is None or pos_bias_v is None:
            pos_bias_u = nn.Parameter(torch.zeros(self.h, self.d_k))
            pos_bias_v = nn.Parameter(torch.zeros(self.h, self.d_k))
        self.pos_bias_u = pos_bias_u
        self.pos_bias_v = pos_bias_v

    def forward(self, x, pos_emb=None, key_bias=None, query_pad=None):
        # as NeMo: under mixed precision the attention runs in fp32 (bf16 instead of fp16 where possible)
        if torch.is_autocast_enabled():
            x = x.float()
        with avoid_float16_autocast_context():
            return self._attend(x, pos_emb, key_bias, query_pad)

    def _attend(self, x, pos_emb, key_bias, query_pad):
        q, k, v = self._qkv(x)
        b, h, t, d_k = q.shape
        scale = 1.0 / math.sqrt(d_k)
        q = q * scale
        p = self.linear_pos(pos_emb).view(-1, h, d_k).transpose(0, 1)  # [H, 2T-1, d_k]
        # position term (b, d of Transformer-XL), shifted so column j is the distance i - j; the padding
        # bias rides along in the same add, which also makes the strided view contiguous
        bias = relative_shift(torch.matmul(q + (self.pos_bias_v * scale).unsqueeze(1), p.transpose(-2, -1)))
        bias = bias + key_bias if key_bias is not None else bias.contiguous()
        # content term (a, c) accumulated onto it in one batched matmul
        q_u = (q + (self.pos_bias_u * scale).unsqueeze(1)).reshape(b * h, t, d_k)
        scores = torch.baddbmm(bias.reshape(b * h, t, t), q_u, k.reshape(b * h, t, d_k).transpose(1, 2))
        attn = torch.softmax(scores, dim=-1)
        attn = dropout(attn, self.dropout_rate, self.training)
        context = torch.bmm(attn, v.reshape(b * h, t, d_k)).view(b, h, t, d_k)
        return self._output(context, query_pad)
