"""Per-utterance speech separation metrics: SI-SDR, SI-SDRi, SDR, SDRi, optional PESQ/STOI.

All numbers come from torchmetrics; SI-SDR is the project's one definition (zero-mean,
:mod:`nest_ext.metrics.si_sdr`), the same the separation model logs as ``val_sisdr``/``val_sisdri``.
This module aligns the estimates with the references and forms the improvements over the unprocessed
mixture.

Shapes:
    estimates ``[S, T]`` (S separated sources), references ``[S, T]``, mixture ``[T]``.
    Estimates are first permuted with PIT on SI-SDR (the permutation that maximises the mean
    SI-SDR), and every other metric uses that same permutation, so one row of a result describes
    one consistent assignment of estimates to speakers.

    * ``si_sdr``   mean over speakers of SI-SDR(estimate, reference)            [dB]
    * ``si_sdr_i`` ``si_sdr`` minus mean SI-SDR(mixture, reference)              [dB]
    * ``sdr``      mean BSS-eval style SDR (torchmetrics, filter length 512)    [dB]
    * ``sdr_i``    ``sdr`` minus mean SDR(mixture, reference)                   [dB]
    * ``pesq`` / ``stoi`` mean over speakers, only when the ``pesq`` / ``pystoi`` packages are
      importable (:mod:`nest_ext.metrics.perceptual`; PESQ narrow band at 8 kHz, wide band at 16 kHz).

Example:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> refs = torch.randn(2, 8000, generator=g)
    >>> mix = refs.sum(0)
    >>> est = refs.flip(0) + 0.1 * torch.randn(2, 8000, generator=g)   # swapped order, slightly noisy
    >>> m = separation_metrics(est, refs, mix, sample_rate=8000, extra=False)
    >>> m["perm"], round(m["si_sdr"]) in (19, 20, 21), m["si_sdr_i"] > 15
    ([1, 0], True, True)
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch
from torchmetrics.functional.audio import signal_distortion_ratio

from nest_ext.metrics.perceptual import perceptual_metrics
from nest_ext.metrics.si_sdr import pit_si_sdr_scores

__all__ = ["pit_align", "separation_metrics", "SEPARATION_METRIC_NAMES"]

SEPARATION_METRIC_NAMES = ("si_sdr", "si_sdr_i", "sdr", "sdr_i")


def _check_shapes(estimates: torch.Tensor, references: torch.Tensor) -> None:
    if estimates.ndim != 2 or references.ndim != 2:
        raise ValueError(
            f"expected estimates and references as [S, T]; got {tuple(estimates.shape)} and {tuple(references.shape)}"
        )
    if estimates.shape != references.shape:
        raise ValueError(f"estimates {tuple(estimates.shape)} and references {tuple(references.shape)} differ in shape")


def pit_align(estimates: torch.Tensor, references: torch.Tensor) -> Tuple[torch.Tensor, List[int]]:
    """Reorder ``estimates [S, T]`` to best match ``references [S, T]`` by SI-SDR (torchmetrics PIT).

    Returns the reordered estimates ``[S, T]`` and the permutation: ``aligned[i] = estimates[perm[i]]``.
    """
    _check_shapes(estimates, references)
    perm = pit_si_sdr_scores(estimates[None], references[None]).perm[0].tolist()
    return estimates[perm], perm


def separation_metrics(
    estimates: torch.Tensor,
    references: torch.Tensor,
    mixture: torch.Tensor,
    sample_rate: int,
    extra: bool = True,
    sdr_filter_length: int = 512,
) -> Dict[str, object]:
    """Metrics of one separated utterance (see the module docstring).

    Args:
        estimates: ``[S, T]`` separated signals in any order.
        references: ``[S, T]`` reference sources.
        mixture: ``[T]`` the input mixture (for the improvements).
        sample_rate: in Hz (PESQ/STOI only).
        extra: also compute PESQ/STOI when their packages are importable.

    Returns:
        dict with ``si_sdr``, ``si_sdr_i``, ``sdr``, ``sdr_i`` (floats, dB), ``perm`` (list of ints),
        ``si_sdr_per_source`` (list), and ``pesq``/``stoi`` when computed.
    """
    _check_shapes(estimates, references)
    if mixture.ndim != 1 or mixture.shape[-1] != references.shape[-1]:
        raise ValueError(f"mixture must be [T={references.shape[-1]}], got {tuple(mixture.shape)}")
    # float64: SDR solves a 512x512 Toeplitz system; float32 loses ~0.01 dB there
    est = estimates.detach().double().cpu()
    ref = references.detach().double().cpu()
    mix = mixture.detach().double().cpu()
    scores = pit_si_sdr_scores(est[None], ref[None], mixture=mix[None])
    perm = [int(p) for p in scores.perm[0].tolist()]
    aligned = est[perm]

    sdr = signal_distortion_ratio(aligned, ref, filter_length=sdr_filter_length)
    sdr_mix = signal_distortion_ratio(mix.expand_as(ref), ref, filter_length=sdr_filter_length)
    result: Dict[str, object] = {
        "si_sdr": float(scores.si_sdr.mean()),
        "si_sdr_i": float(scores.improvement.mean()),
        "sdr": float(sdr.mean()),
        "sdr_i": float((sdr - sdr_mix).mean()),
        "perm": perm,
        "si_sdr_per_source": [float(v) for v in scores.si_sdr[0]],
    }
    if extra:
        result.update(perceptual_metrics(aligned, ref, sample_rate))
    return result
