"""MossFormer2 building blocks (arXiv:2312.11825), written for this project.

Public: :class:`MossFormer2Encoder`, :class:`MossFormer2MaskNet`, :class:`MossFormer2Decoder`,
:class:`MossFormer2` and :func:`separate_chunked` (long inputs). Official checkpoints load through
:mod:`nest_ext.modules.mossformer2.converter`.
"""
from nest_ext.modules.mossformer2.chunked import separate_chunked
from nest_ext.modules.mossformer2.encoder import MossFormer2Decoder, MossFormer2Encoder
from nest_ext.modules.mossformer2.mask_net import MossFormer2MaskNet
from nest_ext.modules.mossformer2.mossformer2 import MossFormer2

__all__ = ["MossFormer2", "MossFormer2Encoder", "MossFormer2MaskNet", "MossFormer2Decoder", "separate_chunked"]
