"""Speech restoration generator on MossFormer2 blocks: degraded waveform -> restored waveform.

``correction = decoder(encoder(x) * masker(encoder(x)))`` with MossFormer2's learned filterbank and its mask
network with one output (:mod:`nest_ext.modules.mossformer2`), composed by
:class:`~nest_ext.modules.encoder_masker_decoder.EncoderMaskerDecoder`. The output is a **residual gate**::

    restored = x + gate * correction

with ``gate`` one learned scalar, initialised to ``gate_init`` (0 by default, as in ReZero, Bachlechner et al.
2020): an untrained generator is the identity, so the reconstruction losses start at the degraded input's
distance instead of at a random network's, and the GAN never sees noise from the generator. The gradient
reaches the gate at once, the rest of the network as soon as the gate has moved.

Example:
    >>> import torch
    >>> gen = MossFormer2RestorationGenerator(embedding_dim=32, sequence_dim=32, num_layers=1,
    ...                                       group_size=16, query_key_dim=32, fsmn_inner_dim=16)
    >>> x = torch.randn(2, 1603)
    >>> y = gen(x)
    >>> tuple(y.shape), bool(torch.equal(y[:, 0], x))     # identity until trained
    ((2, 1, 1603), True)
"""
import torch
from torch import nn

from nest_ext.modules.encoder_masker_decoder import EncoderMaskerDecoder
from nest_ext.modules.mossformer2.encoder import MossFormer2Decoder, MossFormer2Encoder
from nest_ext.modules.mossformer2.mask_net import MossFormer2MaskNet

__all__ = ["MossFormer2RestorationGenerator"]


class MossFormer2RestorationGenerator(EncoderMaskerDecoder, nn.Module):
    """``forward(audio [B, T]) -> restored [B, 1, T]``; children ``encoder``, ``masker``, ``decoder``, and ``gate``.

    Args:
        kernel_size: encoder/decoder filter length in samples (hop ``kernel_size // 2``).
        embedding_dim: encoder filters ``N``.
        sequence_dim: width ``D`` of the MossFormer2 layers.
        num_layers: number of MossFormer2 layers.
        gate_init: initial value of the residual gate (0: the identity).
        masknet_kwargs: more :class:`MossFormer2MaskNet` arguments (``group_size``, ``query_key_dim``,
            ``fsmn_inner_dim``, ``dropout``, ...).
    """

    def __init__(
        self,
        kernel_size: int = 16,
        embedding_dim: int = 256,
        sequence_dim: int = 256,
        num_layers: int = 8,
        gate_init: float = 0.0,
        **masknet_kwargs,
    ):
        super().__init__()
        self.encoder = MossFormer2Encoder(kernel_size, embedding_dim)
        self.masker = MossFormer2MaskNet(embedding_dim, sequence_dim, num_layers, num_spks=1, **masknet_kwargs)
        self.decoder = MossFormer2Decoder(kernel_size, embedding_dim)
        self.gate = nn.Parameter(torch.tensor(float(gate_init)))

    def postprocess(self, estimates: torch.Tensor, mixture: torch.Tensor) -> torch.Tensor:
        """The residual gate: ``mixture [B, T] + gate * correction [B, 1, T] -> [B, 1, T]``."""
        return mixture.unsqueeze(1) + self.gate * estimates

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.encode_mask_decode(audio)
