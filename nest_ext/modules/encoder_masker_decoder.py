"""The one encoder -> masker -> decoder composition of time-domain mask networks (MossFormer2 separation,
the restoration generator), in the pattern of Asteroid's ``BaseEncoderMaskerDecoder``.

Shape legend: ``B`` batch, ``T`` samples, ``N`` encoder channels, ``L`` encoder frames, ``S`` outputs
(speakers for separation, 1 for restoration).

A class mixes :class:`EncoderMaskerDecoder` in and owns three children named ``encoder`` (``[B, T] -> [B, N, L]``,
with ``kernel_size`` and ``stride``), ``masker`` (``[B, N, L] -> [B, S, N, L]``) and ``decoder``
(``[B, S, N, L] -> [B, S, T']``). Being a mixin (no ``__init__``, no parameters of its own), it keeps the
children's state-dict names (``encoder.*``, ``masker.*``, ``decoder.*``) in both a plain ``nn.Module`` and a
NeMo ``ModelPT``. Subclasses change one step by overriding its hook (e.g. a residual output).

Example:
    >>> import torch
    >>> from torch import nn
    >>> class Enc(nn.Module):
    ...     kernel_size, stride = 4, 2
    ...     def forward(self, x): return x.unfold(-1, 4, 2).transpose(1, 2)     # [B, 4, L]
    >>> class Net(EncoderMaskerDecoder, nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.encoder, self.masker = Enc(), nn.Identity()
    ...         self.decoder = lambda m: m[..., 0, :].repeat_interleave(2, -1)   # [B, S, 2L]
    ...     def forward_masker(self, features): return torch.ones_like(features).unsqueeze(1)
    >>> Net().encode_mask_decode(torch.randn(3, 11)).shape
    torch.Size([3, 1, 11])
    >>> fit_length(torch.ones(1, 2, 5), 3).shape, fit_length(torch.ones(1, 2, 5), 7)[0, 0].tolist()
    (torch.Size([1, 2, 3]), [1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0])
"""
import torch
import torch.nn.functional as F

__all__ = ["EncoderMaskerDecoder", "fit_length"]


def fit_length(signal: torch.Tensor, length: int) -> torch.Tensor:
    """Crop ``signal [..., T']`` to ``length`` samples, or pad it with zeros at the end (the one pad/crop rule)."""
    have = signal.shape[-1]
    if have >= length:
        return signal[..., :length]
    return F.pad(signal, (0, length - have))


class EncoderMaskerDecoder:
    """Mixin: ``encode_mask_decode(mixture [B, T]) -> [B, S, T]``; children ``encoder``, ``masker``, ``decoder``."""

    @property
    def min_length(self) -> int:
        """Shortest input in samples: two encoder frames."""
        return int(self.encoder.kernel_size + self.encoder.stride)

    def forward_encoder(self, mixture: torch.Tensor) -> torch.Tensor:
        """``[B, T] -> [B, N, L]``."""
        return self.encoder(mixture)

    def forward_masker(self, features: torch.Tensor) -> torch.Tensor:
        """``[B, N, L] -> masks [B, S, N, L]``."""
        return self.masker(features)

    def apply_masks(self, features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """``[B, N, L] x [B, S, N, L] -> [B, S, N, L]``."""
        return features.unsqueeze(1) * masks

    def forward_decoder(self, masked: torch.Tensor) -> torch.Tensor:
        """``[B, S, N, L] -> [B, S, T']``."""
        return self.decoder(masked)

    def postprocess(self, estimates: torch.Tensor, mixture: torch.Tensor) -> torch.Tensor:
        """Hook on the length-matched ``estimates [B, S, T]`` (identity here; e.g. a residual gate)."""
        return estimates

    def encode_mask_decode(self, mixture: torch.Tensor) -> torch.Tensor:
        """Run the composition on ``mixture [B, T]``; the output is cropped or zero-padded to ``T`` samples."""
        if mixture.dim() != 2:
            raise ValueError(f"expected a mixture [B, T], got shape {tuple(mixture.shape)}")
        if mixture.shape[-1] < self.min_length:
            raise ValueError(
                f"input of {mixture.shape[-1]} samples is too short: the model needs at least "
                f"{self.min_length} (two frames of the encoder)"
            )
        features = self.forward_encoder(mixture)
        masks = self.forward_masker(features)
        estimates = self.forward_decoder(self.apply_masks(features, masks))
        return self.postprocess(fit_length(estimates, mixture.shape[-1]), mixture)
