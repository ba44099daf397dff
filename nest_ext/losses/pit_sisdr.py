"""Permutation-invariant negative SI-SDR, the MossFormer2 separation training loss.

The metric and the permutation search are torchmetrics' (`scale_invariant_signal_distortion_ratio`,
`permutation_invariant_training`); this file adds what a training batch needs on top: per-utterance
valid lengths (padding must not change the loss) and NeMo's typed `Loss` interface, so the loss is built
from a config `_target_` like NeMo's own audio losses.

`zero_mean` (default True, SI-SNR as the official MossFormer2 recipe trains) is a training option here; every
reported SI-SDR uses these functions with `zero_mean=True` fixed (`nest_ext.metrics.si_sdr`, the project's one
definition), so with the default loss `val_loss == -val_sisdr`.

Example:
    >>> import torch
    >>> loss = PermutationInvariantSISDRLoss()
    >>> target = torch.randn(2, 3, 800)                  # [B, S, T]
    >>> estimate = target[:, [2, 0, 1]] + 0.01 * torch.randn(2, 3, 800)
    >>> bool(loss(estimate=estimate, target=target, input_length=torch.tensor([800, 640])) < -30)
    True
"""
import functools
from typing import Optional, Tuple

import torch
from torchmetrics.functional.audio import permutation_invariant_training, scale_invariant_signal_distortion_ratio

from nemo.core.classes import Loss, Typing, typecheck
from nemo.core.neural_types import AudioSignal, LengthsType, LossType, NeuralType

__all__ = ["PermutationInvariantSISDRLoss", "pit_si_sdr", "si_sdr_valid"]


def _length_groups(input_length: Optional[torch.Tensor], batch: int, time: int, device):
    """Yield (batch indices, valid length) for each distinct length in the batch.

    Grouping by length keeps the common case (all segments equally long) one vectorised call, while an
    utterance's zero-mean and energy terms are still computed over its own valid samples only.
    """
    if input_length is None:
        yield torch.arange(batch, device=device), time
        return
    lengths = input_length.clamp(max=time)
    for length in torch.unique(lengths).tolist():
        if length <= 0:
            raise ValueError(f"input_length has a non-positive entry ({length}); cannot compute SI-SDR")
        yield torch.nonzero(lengths == length, as_tuple=True)[0], int(length)


def _at_least_float32(fn):
    """Run ``fn(estimate, target, ...)`` in at least float32 with autocast off.

    Under bf16 autocast a model's estimates can be bfloat16; SI-SDR computed in bfloat16 moves in steps
    of 0.125 dB near 20 dB (8-bit mantissa), too coarse for a loss or a metric.
    """

    @functools.wraps(fn)
    def wrapper(estimate: torch.Tensor, target: torch.Tensor, *args, **kwargs):
        dtype = torch.promote_types(torch.promote_types(estimate.dtype, target.dtype), torch.float32)
        with torch.autocast(estimate.device.type, enabled=False):
            return fn(estimate.to(dtype), target.to(dtype), *args, **kwargs)

    return wrapper


def _aligned(estimate: torch.Tensor, target: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    if estimate.ndim != 3 or target.ndim != 3:
        raise ValueError(f"expected [B, S, T] tensors, got estimate {tuple(estimate.shape)}, target {tuple(target.shape)}")
    if estimate.shape[:2] != target.shape[:2]:
        raise ValueError(
            f"estimate {tuple(estimate.shape)} and target {tuple(target.shape)} differ in batch or speaker count"
        )
    time = min(estimate.shape[-1], target.shape[-1])
    return estimate[..., :time], target[..., :time]


@_at_least_float32
def pit_si_sdr(
    estimate: torch.Tensor,
    target: torch.Tensor,
    input_length: Optional[torch.Tensor] = None,
    zero_mean: bool = True,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """SI-SDR of the best speaker permutation, per utterance, on valid samples only.

    Args:
        estimate: [B, S, T] separated signals.
        target: [B, S, T] reference sources (T may differ from the estimate's; the shorter is used).
        input_length: [B] valid samples per utterance, or None for all.
        zero_mean: remove each signal's mean (over its valid samples) first, as in SI-SNR training.

    Computed in float32 (or float64 for float64 inputs) with autocast off, whatever the inputs' dtype.

    Returns:
        (si_sdr [B] in dB, averaged over speakers for the best permutation;
         permutation [B, S]: estimate channel `permutation[b, s]` is matched to target speaker s).

    Example:
        >>> t = torch.randn(1, 2, 400)
        >>> sdr, perm = pit_si_sdr(t[:, [1, 0]], t)
        >>> perm.tolist()
        [[1, 0]]
    """
    estimate, target = _aligned(estimate, target)
    batch, speakers, time = estimate.shape
    best = estimate.new_zeros(batch)
    perm = torch.zeros(batch, speakers, dtype=torch.long, device=estimate.device)
    for idx, length in _length_groups(input_length, batch, time, estimate.device):
        metric, p = permutation_invariant_training(
            estimate[idx, :, :length],
            target[idx, :, :length],
            scale_invariant_signal_distortion_ratio,
            mode="speaker-wise",
            eval_func="max",
            zero_mean=zero_mean,
        )
        # index_copy is out-of-place here, so gradients flow to every group
        best = best.index_copy(0, idx, metric.to(best.dtype))
        perm = perm.index_copy(0, idx, p.to(perm.dtype))
    return best, perm


@_at_least_float32
def si_sdr_valid(
    estimate: torch.Tensor,
    target: torch.Tensor,
    input_length: Optional[torch.Tensor] = None,
    zero_mean: bool = True,
) -> torch.Tensor:
    """SI-SDR of each channel against the same channel, on valid samples only: [B, S, T] x2 -> [B, S] dB.

    Used for the mixture baseline of SI-SDRi (the mixture broadcast to every speaker).

    Example:
        >>> t = torch.randn(2, 2, 400)
        >>> si_sdr_valid(t, t).shape
        torch.Size([2, 2])
    """
    estimate, target = _aligned(estimate, target)
    batch, speakers, time = estimate.shape
    out = estimate.new_zeros(batch, speakers)
    for idx, length in _length_groups(input_length, batch, time, estimate.device):
        value = scale_invariant_signal_distortion_ratio(
            estimate[idx, :, :length], target[idx, :, :length], zero_mean=zero_mean
        )
        out = out.index_copy(0, idx, value.to(out.dtype))
    return out


class PermutationInvariantSISDRLoss(Loss, Typing):
    """Negative SI-SDR of the best speaker permutation, averaged over speakers and utterances.

    Works for any speaker count (2-3 in practice; torchmetrics solves the assignment). Padding beyond
    `input_length` is ignored, so a padded batch gives the same loss as its utterances one by one.

    Args:
        zero_mean: subtract each signal's mean before SI-SDR (SI-SNR as the official recipe trains).

    Shapes: estimate [B, S, T], target [B, S, T], input_length [B] -> scalar loss.
    """

    def __init__(self, zero_mean: bool = True):
        super().__init__()
        self.zero_mean = zero_mean

    @property
    def input_types(self):
        return {
            "estimate": NeuralType(("B", "C", "T"), AudioSignal()),
            "target": NeuralType(("B", "C", "T"), AudioSignal()),
            "input_length": NeuralType(tuple("B"), LengthsType(), optional=True),
        }

    @property
    def output_types(self):
        return {"loss": NeuralType(elements_type=LossType())}

    @typecheck()
    def forward(self, estimate, target, input_length=None):
        sdr, _ = pit_si_sdr(estimate, target, input_length=input_length, zero_mean=self.zero_mean)
        return -sdr.mean()
