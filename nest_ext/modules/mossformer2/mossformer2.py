"""MossFormer2 (Zhao et al., ICASSP 2024, arXiv:2312.11825): time-domain masking separation.

``estimates = decoder(encoder(mixture) * masker(encoder(mixture)))``, padded with zeros (or trimmed)
to the input length.

Sizes: the full model (embedding 512, sequence 512, 24 layers) has 55,735,410 parameters, MossFormer2-S
(384, 384, 25) 37,755,382 -- the same numbers as the official implementation, whose checkpoints
:mod:`nest_ext.parts.mossformer2_converter` loads.

Example:
    >>> import torch
    >>> model = MossFormer2(num_spks=2, encoder_embedding_dim=32, mossformer_sequence_dim=32,
    ...                     num_mossformer_layer=1, group_size=16, query_key_dim=32, fsmn_inner_dim=16)
    >>> model(torch.randn(2, 803)).shape
    torch.Size([2, 2, 803])
"""
import torch
import torch.nn.functional as F
from torch import nn

from nest_ext.modules.mossformer2.encoder import MossFormer2Decoder, MossFormer2Encoder
from nest_ext.modules.mossformer2.mask_net import MossFormer2MaskNet

__all__ = ["MossFormer2"]


class MossFormer2(nn.Module):
    """``forward(mixture [B, T]) -> estimates [B, num_spks, T]``; children ``encoder``, ``masker``, ``decoder``.

    Extra keyword arguments (``group_size``, ``query_key_dim``, ``expansion_factor``, ``fsmn_inner_dim``,
    ``fsmn_lorder``, ``kernel_size``, ``dropout``) go to :class:`MossFormer2MaskNet`; the defaults are the
    official ones.
    """

    def __init__(
        self,
        num_spks: int = 2,
        encoder_kernel_size: int = 16,
        encoder_embedding_dim: int = 512,
        mossformer_sequence_dim: int = 512,
        num_mossformer_layer: int = 24,
        **masknet_kwargs,
    ):
        super().__init__()
        self.num_spks = num_spks
        self.encoder = MossFormer2Encoder(encoder_kernel_size, encoder_embedding_dim)
        self.masker = MossFormer2MaskNet(
            encoder_embedding_dim, mossformer_sequence_dim, num_mossformer_layer, num_spks, **masknet_kwargs
        )
        self.decoder = MossFormer2Decoder(encoder_kernel_size, encoder_embedding_dim)

    @property
    def min_length(self) -> int:
        """Shortest input in samples: two encoder frames."""
        return self.encoder.kernel_size + self.encoder.stride

    def forward(self, mixture: torch.Tensor) -> torch.Tensor:
        if mixture.dim() == 2 and mixture.shape[-1] < self.min_length:
            raise ValueError(
                f"input of {mixture.shape[-1]} samples is too short: MossFormer2 needs at least "
                f"{self.min_length} (two frames of the encoder)"
            )
        features = self.encoder(mixture)
        masks = self.masker(features)
        estimates = self.decoder(features.unsqueeze(1) * masks)
        length = mixture.shape[-1]
        if estimates.shape[-1] < length:
            estimates = F.pad(estimates, (0, length - estimates.shape[-1]))
        return estimates[..., :length]
