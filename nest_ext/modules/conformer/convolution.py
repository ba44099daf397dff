"""The Conformer's convolution module: pointwise conv to 2*d_model -> GLU -> depthwise conv ->
batch/layer norm -> SiLU -> pointwise conv back to d_model.

Parameter names and shapes match NeMo's ``ConformerConvolution`` (``pointwise_conv1`` [2D, D, 1],
``depthwise_conv`` [D, 1, K], ``batch_norm`` (a BatchNorm1d or LayerNorm, NeMo's name either way),
``pointwise_conv2`` [D, D, 1]). The pointwise convolutions run as matmuls on the time-major input
[B, T, D], so only the depthwise convolution sees the channel-major layout (two transposes instead of
NeMo's two plus the GLU/mask on the channel-major tensor); the depthwise convolution pads itself.

Example::

    >>> import torch
    >>> conv = ConformerConvolution(d_model=8, kernel_size=3)
    >>> tuple(conv(torch.randn(2, 5, 8)).shape)
    (2, 5, 8)
"""
import torch.nn.functional as F
from torch import nn

__all__ = ["ConformerConvolution"]


class ConformerConvolution(nn.Module):
    """forward(x [B, T, D], pad_mask [B, T] bool, True = padding) -> [B, T, D].

    Args:
        d_model: channels; kernel_size: odd depthwise kernel; norm_type: ``batch_norm`` or ``layer_norm``;
        use_bias: biases on the three convolutions.
    """

    def __init__(self, d_model, kernel_size, norm_type="batch_norm", use_bias=True):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"conv_kernel_size must be odd (symmetric context), got {kernel_size}")
        if norm_type not in ("batch_norm", "layer_norm"):
            raise ValueError(f"conv_norm_type={norm_type!r} is not supported (batch_norm or layer_norm)")
        self.d_model = d_model
        self.kernel_size = kernel_size
        self.norm_type = norm_type
        self.use_bias = use_bias
        self.pointwise_conv1 = nn.Conv1d(d_model, 2 * d_model, kernel_size=1, bias=use_bias)
        self.depthwise_conv = nn.Conv1d(
            d_model, d_model, kernel_size, padding=(kernel_size - 1) // 2, groups=d_model, bias=use_bias
        )
        self.batch_norm = nn.BatchNorm1d(d_model) if norm_type == "batch_norm" else nn.LayerNorm(d_model)
        self.pointwise_conv2 = nn.Conv1d(d_model, d_model, kernel_size=1, bias=use_bias)

    def forward(self, x, pad_mask=None):
        x = F.linear(x, self.pointwise_conv1.weight.squeeze(-1), self.pointwise_conv1.bias)
        x = F.glu(x, dim=-1)
        if pad_mask is not None:
            # padded frames must not leak into valid ones through the depthwise kernel
            x = x.masked_fill(pad_mask.unsqueeze(-1), 0.0)
        x = self.depthwise_conv(x.transpose(1, 2))
        if self.norm_type == "batch_norm":
            x = F.silu(self.batch_norm(x)).transpose(1, 2)
        else:
            x = F.silu(self.batch_norm(x.transpose(1, 2)))
        return F.linear(x, self.pointwise_conv2.weight.squeeze(-1), self.pointwise_conv2.bias)
