"""Speech restoration generator on MossFormer2 blocks: degraded waveform -> restored waveform.

MossFormer2's learned filterbank and mask network with one output (:mod:`nest_ext.modules.mossformer2`), composed
by :class:`~nest_ext.modules.encoder_masker_decoder.EncoderMaskerDecoder`, compute a correction, and the output is a
**residual gate**::

    restored = x + gate * correction          (gate: one learned scalar, initialised to gate_init)

Two ways to form the correction (``output``):

* ``"mapping"`` (the configs' choice): ``correction = decoder(masker(encoder(x)))`` -- the network's last
  projection, without MossFormer2's final ReLU, *is* the decoder's input (features it maps to, not a mask);
* ``"mask"``: ``correction = decoder(encoder(x) * masker(encoder(x)))`` with MossFormer2's non-negative masks.

``decoder_init_scale`` scales the decoder's initial weights, so an untrained generator is ``x`` plus a correction
that small: the losses start at the degraded input's distance, and the gradient reaches every weight at once.

Why (docs/benchmarks.md, "learning"): with ``"mask"`` and full-scale initial weights, the random correction only
adds error, training shrinks it, and the quickest way is to drive the mask's ReLU negative -- the units die, the
correction falls to ~-90 dB and the model is stuck at the identity (the flat SI-SDR of the first measurements).
Masking encoder features is also a poor way to *add* a correction (it can only rescale what the filterbank
shows). The mapping generator with ``decoder_init_scale: 0.01`` (small config) gained 4.1 dB SI-SDR on held-out
degraded speech in 480 CPU steps, where the masking one had stayed at the input's.

Example:
    >>> import torch
    >>> gen = MossFormer2RestorationGenerator(embedding_dim=32, sequence_dim=32, num_layers=1, group_size=16,
    ...                                       query_key_dim=32, fsmn_inner_dim=16, output="mapping",
    ...                                       decoder_init_scale=0.01)
    >>> x = torch.randn(2, 1603)
    >>> y = gen(x)
    >>> tuple(y.shape), float(((y[:, 0] - x) ** 2).sum() / (x ** 2).sum()) < 1e-3    # near the identity
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
        gate_init: initial value of the residual gate (0: exactly the identity).
        output: ``"mask"`` or ``"mapping"`` (see the module docstring).
        decoder_init_scale: factor on the decoder's initial weights (1: PyTorch's default initialisation).
        masknet_kwargs: more :class:`MossFormer2MaskNet` arguments (``group_size``, ``query_key_dim``,
            ``fsmn_inner_dim``, ``dropout``, ...).
    """

    def __init__(
        self,
        kernel_size: int = 16,
        embedding_dim: int = 256,
        sequence_dim: int = 256,
        num_layers: int = 8,
        gate_init: float = 0.1,
        output: str = "mask",
        decoder_init_scale: float = 1.0,
        **masknet_kwargs,
    ):
        super().__init__()
        if output not in ("mask", "mapping"):
            raise ValueError(f"output must be 'mask' or 'mapping', got {output!r}")
        self.mapping = output == "mapping"
        if self.mapping:
            masknet_kwargs.setdefault("output_activation", "none")
        self.encoder = MossFormer2Encoder(kernel_size, embedding_dim)
        self.masker = MossFormer2MaskNet(embedding_dim, sequence_dim, num_layers, num_spks=1, **masknet_kwargs)
        self.decoder = MossFormer2Decoder(kernel_size, embedding_dim)
        with torch.no_grad():
            self.decoder.deconv.weight.mul_(float(decoder_init_scale))
        self.gate = nn.Parameter(torch.tensor(float(gate_init)))

    def apply_masks(self, features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Mask mode: ``features * masks``; mapping mode: the network's output itself."""
        return masks if self.mapping else super().apply_masks(features, masks)

    def postprocess(self, estimates: torch.Tensor, mixture: torch.Tensor) -> torch.Tensor:
        """The residual gate: ``mixture [B, T] + gate * correction [B, 1, T] -> [B, 1, T]``."""
        return mixture.unsqueeze(1) + self.gate * estimates

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.encode_mask_decode(audio)
