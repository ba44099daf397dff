"""MossFormer2 (Zhao et al., ICASSP 2024, arXiv:2312.11825): time-domain masking separation.

``estimates = decoder(encoder(mixture) * masker(encoder(mixture)))``, padded with zeros (or trimmed)
to the input length: the composition of :class:`~nest_ext.modules.encoder_masker_decoder.EncoderMaskerDecoder`,
which :class:`~nest_ext.models.MossFormer2SeparationModel` shares.

Sizes: the full model (embedding 512, sequence 512, 24 layers) has 55,735,410 parameters, MossFormer2-S
(384, 384, 25) 37,755,382 -- the same numbers as the official implementation, whose checkpoints
:mod:`nest_ext.modules.mossformer2.converter` loads.

Example:
    >>> import torch
    >>> model = MossFormer2(num_spks=2, encoder_embedding_dim=32, mossformer_sequence_dim=32,
    ...                     num_mossformer_layer=1, group_size=16, query_key_dim=32, fsmn_inner_dim=16)
    >>> model(torch.randn(2, 803)).shape
    torch.Size([2, 2, 803])
"""
import torch
from torch import nn

from nest_ext.modules.encoder_masker_decoder import EncoderMaskerDecoder
from nest_ext.modules.mossformer2.encoder import MossFormer2Decoder, MossFormer2Encoder
from nest_ext.modules.mossformer2.mask_net import MossFormer2MaskNet

__all__ = ["MossFormer2"]


class MossFormer2(EncoderMaskerDecoder, nn.Module):
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

    def forward(self, mixture: torch.Tensor) -> torch.Tensor:
        return self.encode_mask_decode(mixture)
