"""Inference precision for MossFormer2: ``fp32``, ``bf16`` or ``int8``.

- :func:`prepare_for_inference` puts a module that contains MossFormer2 blocks (:class:`MossFormer2`, a
  separation model, ...) in eval mode and fuses the parallel projections of every attention and gated
  FSMN once (:class:`~nest_ext.modules.mossformer2.conv_modules.FusedConvFeedForward`); for ``int8`` it
  then replaces every ``nn.Linear`` by a dynamically quantised one (``torch.ao`` dynamic quantisation:
  int8 weights per output channel, activations quantised per call, float32 in and out). Depthwise
  convolutions, attention products, norms, the encoder and the decoder stay float32.
- :func:`inference_precision` is the context to run such a module in: bf16 autocast for ``bf16``
  (matrix products in bfloat16, the rest as autocast decides; the encoder, the decoder and the
  depthwise convolutions compute in float32, so the waveforms come out float32), nothing otherwise.

A prepared module is for inference only: its state dict no longer has the checkpoint layout (save the
original, not the prepared copy). What each precision costs in SI-SDRi and gains in speed is measured by
``bench/separation_precision.py`` (numbers in docs/benchmarks.md): on CPUs without native bfloat16
(AVX2 only) bf16 matrix products are emulated and much slower than fp32.

Example:
    >>> import torch
    >>> from nest_ext.modules.mossformer2 import MossFormer2
    >>> model = MossFormer2(encoder_embedding_dim=32, mossformer_sequence_dim=32, num_mossformer_layer=1,
    ...                     group_size=16, query_key_dim=32, fsmn_inner_dim=16).eval()
    >>> mixture = torch.randn(1, 800)
    >>> fast = prepare_for_inference(model, "fp32")
    >>> with torch.inference_mode(), inference_precision("fp32"):
    ...     bool(torch.allclose(fast(mixture), model(mixture), atol=1e-5))
    True
"""
import contextlib
import copy
import warnings

import torch
from torch import nn

from nest_ext.modules.mossformer2.attention import GatedSingleHeadAttention
from nest_ext.modules.mossformer2.fsmn import GatedFSMN

__all__ = ["PRECISIONS", "prepare_for_inference", "inference_precision"]

PRECISIONS = ("fp32", "bf16", "int8")


def _check(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def prepare_for_inference(module: nn.Module, precision: str = "fp32", inplace: bool = False) -> nn.Module:
    """``module`` (or a copy of it, unless ``inplace``) in eval mode, fused, and quantised for ``int8``.

    Run the result under ``torch.inference_mode()`` (or ``no_grad``) and :func:`inference_precision`.
    ``int8`` runs on CPU only (``torch.ao`` dynamic quantisation has no GPU kernels).
    """
    _check(precision)
    if not inplace:
        try:
            module = copy.deepcopy(module)
        except Exception as err:  # e.g. NeMo models hold proxies that cannot be copied
            raise TypeError(f"cannot copy {type(module).__name__} ({err}); pass inplace=True to prepare it in place") from err
    module.eval()
    for sub in list(module.modules()):
        if isinstance(sub, (GatedSingleHeadAttention, GatedFSMN)):
            sub.fuse_projections()
    if precision == "int8":
        if any(p.device.type != "cpu" for p in module.parameters()):
            raise ValueError("int8 inference (torch.ao dynamic quantisation) runs on CPU only")
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        with warnings.catch_warnings():  # torch.ao's deprecation notices (moving to torchao), once per layer
            warnings.simplefilter("ignore")
            quantize_dynamic(module, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=True)
    return module


def inference_precision(precision: str, device_type: str = "cpu"):
    """Context for running a prepared module: bf16 autocast for ``bf16``, nothing for ``fp32``/``int8``."""
    if _check(precision) == "bf16":
        return torch.autocast(device_type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
