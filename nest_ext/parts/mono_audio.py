"""Single-channel audio batches of NeMo audio-to-audio models: the neural types and the ``[B, 1, T] | [B, T]`` rule.

Example:
    >>> import torch
    >>> as_mono_batch(torch.zeros(2, 1, 5)).shape, as_mono_batch(torch.zeros(2, 5)).shape
    (torch.Size([2, 5]), torch.Size([2, 5]))
    >>> sorted(mono_audio_types(16000, "input"))
    ['input_length', 'input_signal']
"""
from typing import TYPE_CHECKING, Dict

import torch

if TYPE_CHECKING:  # NeMo is imported when the types are asked for, not with this module
    from nemo.core.neural_types import NeuralType

__all__ = ["MonoAudioTypes", "as_mono_batch", "mono_audio_types", "eval_on_batch"]


def mono_audio_types(sample_rate: int, prefix: str) -> Dict[str, "NeuralType"]:
    """``{prefix}_signal`` ``[B, C, T]`` at ``sample_rate`` and optional ``{prefix}_length`` ``[B]``."""
    from nemo.core.neural_types import AudioSignal, LengthsType, NeuralType

    return {
        f"{prefix}_signal": NeuralType(("B", "C", "T"), AudioSignal(freq=sample_rate)),
        f"{prefix}_length": NeuralType(tuple("B"), LengthsType(), optional=True),
    }


class MonoAudioTypes:
    """``input_types`` / ``output_types`` of a single-channel audio-to-audio NeMo model with ``sample_rate``:
    documented, not enforced with ``@typecheck`` (``forward`` also takes ``[B, T]``, see :func:`as_mono_batch`)."""

    @property
    def input_types(self) -> Dict[str, "NeuralType"]:
        return mono_audio_types(self.sample_rate, "input")

    @property
    def output_types(self) -> Dict[str, "NeuralType"]:
        return mono_audio_types(self.sample_rate, "output")


def as_mono_batch(signal: torch.Tensor) -> torch.Tensor:
    """``[B, 1, T]`` or ``[B, T]`` -> ``[B, T]``; anything else raises ``ValueError`` naming the shape."""
    if signal.ndim == 3:
        if signal.size(1) != 1:
            raise ValueError(f"expected single-channel audio [B, 1, T], got {tuple(signal.shape)}")
        return signal[:, 0]
    if signal.ndim != 2:
        raise ValueError(f"expected [B, 1, T] or [B, T], got {tuple(signal.shape)}")
    return signal


def eval_on_batch(model: torch.nn.Module, audio, fn) -> torch.Tensor:
    """``fn(batch)`` for audio ``[T]`` or ``[B, T]`` (tensor or array): the batch as float32 on the model's device,
    the model in eval mode (its mode restored after), the result on the CPU, without the batch axis when the
    input had none. The inference prologue of the separation and restoration models."""
    audio = torch.as_tensor(audio, dtype=torch.float32)
    single = audio.dim() == 1
    batch = audio.unsqueeze(0) if single else audio
    mode = model.training
    model.eval()
    try:
        out = fn(batch.to(next(model.parameters()).device))
    finally:
        model.train(mode)
    out = out.cpu()
    return out[0] if single else out
