"""SI-SDR: the one definition behind every SI-SDR and SI-SDRi the project reports (validation and test
logs of the separation model, ``evaluate_separation``, the demo, the coming restoration evaluation).

Definition: scale-invariant SDR on **zero-mean** signals (Le Roux et al., 2019, "SDR -- half-baked or well
done?"; the official MossFormer2 and SpeechBrain SI-SNR training objective): estimate and reference each
lose their mean, then ``10 log10(|a s|^2 / |a s - e|^2)`` with ``a = <e, s> / |s|^2``. Computed by
torchmetrics' ``scale_invariant_signal_distortion_ratio(zero_mean=True)``; with speakers, estimates are
matched to references by the permutation of highest mean SI-SDR (torchmetrics' PIT), and with
``input_length`` only each utterance's valid samples count, through the same functions the training loss
uses (:mod:`nest_ext.losses.pit_sisdr`, whose ``zero_mean`` is a training option; the metric's is fixed).

Example:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> refs = torch.randn(1, 2, 4000, generator=g)                    # [B, S, T]
    >>> est = refs[:, [1, 0]] + 0.1 * torch.randn(1, 2, 4000, generator=g)
    >>> scores = pit_si_sdr_scores(est, refs, mixture=refs.sum(1))
    >>> scores.perm.tolist(), bool((scores.si_sdr > 19).all()), bool((scores.improvement > 19).all())
    ([[1, 0]], True, True)
    >>> bool(si_sdr(refs[0, 0] + 5.0, refs[0, 0]) > 100)                # an offset does not count
    True
"""
from typing import NamedTuple, Optional

import torch
from torchmetrics.functional.audio import scale_invariant_signal_distortion_ratio

from nest_ext.losses.pit_sisdr import pit_si_sdr, si_sdr_valid

__all__ = ["ZERO_MEAN", "PitSiSdr", "pit_si_sdr_scores", "si_sdr"]

ZERO_MEAN = True  # the project's SI-SDR convention (see the module docstring)


def si_sdr(estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """SI-SDR in dB of ``estimate [..., T]`` against ``reference [..., T]`` -> ``[...]`` (zero-mean)."""
    return scale_invariant_signal_distortion_ratio(estimate, reference, zero_mean=ZERO_MEAN)


class PitSiSdr(NamedTuple):
    """Per-utterance, per-speaker SI-SDR of the best speaker permutation (all ``[B, S]``)."""

    si_sdr: torch.Tensor  # aligned estimate s vs reference s, dB
    mixture_si_sdr: Optional[torch.Tensor]  # the mixture vs reference s, dB (None without a mixture)
    perm: torch.Tensor  # estimate ``perm[b, s]`` is matched to reference ``s``

    @property
    def improvement(self) -> torch.Tensor:
        """SI-SDRi ``[B, S]``: ``si_sdr - mixture_si_sdr``."""
        if self.mixture_si_sdr is None:
            raise ValueError("SI-SDR improvement needs the mixture: pass mixture= to pit_si_sdr_scores")
        return self.si_sdr - self.mixture_si_sdr


def pit_si_sdr_scores(
    estimates: torch.Tensor,
    references: torch.Tensor,
    mixture: Optional[torch.Tensor] = None,
    input_length: Optional[torch.Tensor] = None,
) -> PitSiSdr:
    """SI-SDR (and, given the mixture, SI-SDRi) of the best permutation of ``estimates``.

    Args:
        estimates: ``[B, S, T]`` separated signals in any speaker order (``S = 1``: restoration).
        references: ``[B, S, T]`` reference sources.
        mixture: ``[B, T]`` or ``[B, 1, T]`` the unprocessed input, the baseline of the improvement.
        input_length: ``[B]`` valid samples per utterance (padding beyond them does not count), or None.
    """
    _, perm = pit_si_sdr(estimates, references, input_length, zero_mean=ZERO_MEAN)
    aligned = torch.gather(estimates, 1, perm.unsqueeze(-1).expand(-1, -1, estimates.shape[-1]))
    scores = si_sdr_valid(aligned, references, input_length, zero_mean=ZERO_MEAN)
    baseline = None
    if mixture is not None:
        if mixture.ndim == 3 and mixture.shape[1] == 1:
            mixture = mixture[:, 0]
        if mixture.ndim != 2 or mixture.shape[0] != references.shape[0]:
            raise ValueError(f"mixture must be [B, T] or [B, 1, T] with B={references.shape[0]}, got {tuple(mixture.shape)}")
        expanded = mixture.unsqueeze(1).expand(-1, references.shape[1], -1)
        baseline = si_sdr_valid(expanded, references, input_length, zero_mean=ZERO_MEAN)
    return PitSiSdr(scores, baseline, perm)
