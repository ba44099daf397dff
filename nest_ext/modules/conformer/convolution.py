"""The Conformer's convolution module: pointwise conv to 2*d_model -> GLU -> depthwise conv ->
batch/layer norm -> SiLU -> pointwise conv back to d_model.

Parameter names and shapes match NeMo's ``ConformerConvolution`` (``pointwise_conv1`` [2D, D, 1],
``depthwise_conv`` [D, 1, K], ``batch_norm`` (a BatchNorm1d or LayerNorm, NeMo's name either way),
``pointwise_conv2`` [D, D, 1]). The pointwise convolutions run as matmuls on the time-major input
[B, T, D] and the depthwise convolution treats that same memory as a channels-last [B, D, T, 1] image, so
no transposed copy or padded copy is made (NeMo makes four); the depthwise convolution pads itself.

Example::

    >>> import torch
    >>> conv = ConformerConvolution(d_model=8, kernel_size=3)
    >>> tuple(conv(torch.randn(2, 5, 8)).shape)
    (2, 5, 8)
"""
import torch.nn.functional as F
from torch import nn

__all__ = ["ConformerConvolution"]


class _BatchNorm1dAny(nn.BatchNorm1d):
    """BatchNorm1d (same state dict) that also takes the [B, C, T, 1] channels-last view used below."""

    def _check_input_dim(self, input):
        if input.dim() not in (2, 3, 4):
            raise ValueError(f"expected 2D, 3D or 4D input (got {input.dim()}D input)")


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
        self.batch_norm = _BatchNorm1dAny(d_model) if norm_type == "batch_norm" else nn.LayerNorm(d_model)
        self.pointwise_conv2 = nn.Conv1d(d_model, d_model, kernel_size=1, bias=use_bias)

    def forward(self, x, pad_mask=None):
        x = F.linear(x, self.pointwise_conv1.weight.squeeze(-1), self.pointwise_conv1.bias)
        x = F.glu(x, dim=-1)
        if pad_mask is not None:
            # padded frames must not leak into valid ones through the depthwise kernel
            x = x.masked_fill(pad_mask.unsqueeze(-1), 0.0)
        b, t, d = x.shape
        # [B, T, D] seen as a channels-last [B, D, T, 1] image: oneDNN runs the depthwise kernel (K x 1)
        # and batch norm in that layout, so no transposed copies are made
        x = x.view(b, t, 1, d).permute(0, 3, 1, 2)
        x = F.conv2d(x, self.depthwise_conv.weight.unsqueeze(-1), self.depthwise_conv.bias,
                     padding=(self.kernel_size // 2, 0), groups=d)
        if self.norm_type == "batch_norm":
            x = self.batch_norm(x)
        x = x.permute(0, 2, 3, 1).reshape(b, t, d)
        if self.norm_type == "layer_norm":
            x = self.batch_norm(x)
        return F.linear(F.silu(x), self.pointwise_conv2.weight.squeeze(-1), self.pointwise_conv2.bias)
