"""MossFormer2's learned filterbank: a strided convolutional encoder and a transposed-conv decoder.

The encoder has ``embedding_dim`` filters of ``kernel_size`` samples with hop ``kernel_size // 2`` and a
ReLU. For ``T`` input samples it gives ``L = (T - kernel_size) // hop + 1`` frames. The decoder maps
``L`` frames back to ``T' = (L - 1) * hop + kernel_size`` samples, so ``T' <= T`` and the
``T - T' < hop`` samples at the end that no whole frame covers are missing; :class:`MossFormer2` pads
them with zeros to give back ``T`` samples.

Under autocast both run in their weights' precision (autocast off): one small convolution each, so the
waveform that losses and files see stays float32 in mixed-precision training and bf16 inference (and
CPUs without native bfloat16 would run them through a slow per-channel fallback).

Example:
    >>> import torch
    >>> enc, dec = MossFormer2Encoder(16, 64), MossFormer2Decoder(16, 64)
    >>> feats = enc(torch.randn(2, 8003))
    >>> feats.shape
    torch.Size([2, 64, 999])
    >>> dec(feats.unsqueeze(1).repeat(1, 3, 1, 1)).shape
    torch.Size([2, 3, 8000])
"""
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MossFormer2Encoder", "MossFormer2Decoder"]


class MossFormer2Encoder(nn.Module):
    """``forward(mixture [B, T]) -> [B, N, L]`` with ``N = embedding_dim``, ``L = (T - K) // (K // 2) + 1``."""

    def __init__(self, kernel_size: int = 16, embedding_dim: int = 512):
        super().__init__()
        if kernel_size < 2:
            raise ValueError(f"kernel_size must be at least 2, got {kernel_size}")
        self.kernel_size = kernel_size
        self.stride = kernel_size // 2
        self.conv = nn.Conv1d(1, embedding_dim, kernel_size, stride=self.stride, bias=False)

    def num_frames(self, num_samples: int) -> int:
        return (num_samples - self.kernel_size) // self.stride + 1

    def forward(self, mixture: torch.Tensor) -> torch.Tensor:
        if mixture.dim() != 2:
            raise ValueError(f"MossFormer2Encoder expects a mixture [B, T], got shape {tuple(mixture.shape)}")
        if mixture.shape[-1] < self.kernel_size:
            raise ValueError(
                f"input of {mixture.shape[-1]} samples is shorter than the encoder kernel ({self.kernel_size})"
            )
        with torch.autocast(mixture.device.type, enabled=False):  # see the module doc: kept in weight precision
            return F.relu(self.conv(mixture.unsqueeze(1).to(self.conv.weight.dtype)))


class MossFormer2Decoder(nn.Module):
    """``forward(masked [B, S, N, L]) -> [B, S, T']`` with ``T' = (L - 1) * (K // 2) + K`` (no padding)."""

    def __init__(self, kernel_size: int = 16, embedding_dim: int = 512):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = kernel_size // 2
        self.deconv = nn.ConvTranspose1d(embedding_dim, 1, kernel_size, stride=self.stride, bias=False)

    def num_samples(self, num_frames: int) -> int:
        return (num_frames - 1) * self.stride + self.kernel_size

    def forward(self, masked: torch.Tensor) -> torch.Tensor:
        if masked.dim() != 4:
            raise ValueError(f"MossFormer2Decoder expects [B, S, N, L], got shape {tuple(masked.shape)}")
        batch, speakers, channels, frames = masked.shape
        with torch.autocast(masked.device.type, enabled=False):
            out = self.deconv(masked.reshape(batch * speakers, channels, frames).to(self.deconv.weight.dtype))
        return out.view(batch, speakers, -1)
