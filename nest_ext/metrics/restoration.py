"""Per-utterance speech restoration metrics, for the restored output and for the degraded input it came from.

For each metric ``m`` a row has ``m`` (the output against the clean reference) and ``m_input`` (the degraded
input against the same reference), so the gain of the model over doing nothing is ``m - m_input`` (or
``m_input - m`` for distances), utterance by utterance:

* ``si_sdr`` (dB, higher is better): the project's one SI-SDR (zero-mean, :mod:`nest_ext.metrics.si_sdr`), and
  ``si_sdr_i`` = ``si_sdr - si_sdr_input``;
* ``lsd`` (lower is better): log-spectral distance (:mod:`nest_ext.metrics.spectral_distance`);
* ``mr_stft`` (lower is better): multi-resolution STFT distance, the training loss's spectral term at fixed
  (Parallel WaveGAN) resolutions;
* ``pesq`` / ``stoi`` when ``pesq`` / ``pystoi`` are installed (:mod:`nest_ext.metrics.perceptual`; PESQ wide band
  at 16 kHz, narrow band at 8 kHz, not computed at other rates);
* ``dnsmos_ovrl`` ... (:mod:`nest_ext.metrics.dnsmos`) when ``speechmos`` is installed: non-intrusive, the
  reference is not used.

Example:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> clean = torch.randn(16000, generator=g)
    >>> degraded = clean + 0.5 * torch.randn(16000, generator=g)
    >>> m = restoration_metrics(0.5 * (clean + degraded), clean, degraded, 16000, extra=())
    >>> m["si_sdr_i"] > 3, m["lsd"] < m["lsd_input"], m["mr_stft"] < m["mr_stft_input"]
    (True, True, True)
    >>> list(m)
    ['si_sdr', 'si_sdr_input', 'si_sdr_i', 'lsd', 'lsd_input', 'mr_stft', 'mr_stft_input']
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch

from nest_ext.metrics.dnsmos import DNSMOS_NAMES, dnsmos_available, dnsmos_scores
from nest_ext.metrics.perceptual import available_perceptual_metrics, perceptual_metrics
from nest_ext.metrics.si_sdr import si_sdr
from nest_ext.metrics.spectral_distance import log_spectral_distance, multi_resolution_stft_distance

__all__ = ["RESTORATION_LABELS", "available_restoration_extras", "restoration_metric_names", "restoration_metrics"]

BASE_METRICS = ("si_sdr", "lsd", "mr_stft")
# Headings for the report (nest_ext.metrics.report takes them as labels)
RESTORATION_LABELS = {
    "si_sdr_input": "SI-SDR input (dB)", "lsd": "LSD", "lsd_input": "LSD input", "mr_stft": "MR-STFT dist.",
    "mr_stft_input": "MR-STFT dist. input", "pesq_input": "PESQ input", "stoi_input": "STOI input",
    **{n: f"DNSMOS {n[7:].upper()}" for n in DNSMOS_NAMES},
    **{f"{n}_input": f"DNSMOS {n[7:].upper()} input" for n in DNSMOS_NAMES},
}


def available_restoration_extras() -> List[str]:
    """The optional metrics whose packages are installed: ``pesq``, ``stoi``, ``dnsmos``."""
    return available_perceptual_metrics() + (["dnsmos"] if dnsmos_available() else [])


def restoration_metric_names(extras: Sequence[str], sample_rate: int) -> List[str]:
    """The columns :func:`restoration_metrics` gives with ``extras`` at ``sample_rate``, in order."""
    bases = list(BASE_METRICS)
    if "pesq" in extras and sample_rate in (8000, 16000):
        bases.append("pesq")
    if "stoi" in extras:
        bases.append("stoi")
    if "dnsmos" in extras:
        bases += list(DNSMOS_NAMES)
    names = []
    for base in bases:
        names += [base, f"{base}_input"] + (["si_sdr_i"] if base == "si_sdr" else [])
    return names


@torch.no_grad()
def restoration_metrics(output, clean, degraded, sample_rate: int,
                        extra: Optional[Sequence[str]] = None) -> Dict[str, float]:
    """Metrics of one restored utterance: ``output``, ``clean`` and ``degraded`` ``[T]`` (tensors or arrays, same
    length) at ``sample_rate``; ``extra``: the optional metrics to add (default: every installed one)."""
    extra = available_restoration_extras() if extra is None else list(extra)
    signals = {"": torch.as_tensor(output).float(), "_input": torch.as_tensor(degraded).float()}
    ref = torch.as_tensor(clean).float()
    for x in signals.values():
        if x.dim() != 1 or x.shape != ref.shape:
            raise ValueError(f"expected output, clean and degraded as [T] of one length, got {tuple(x.shape)} and "
                             f"{tuple(ref.shape)}")
    out: Dict[str, float] = {}
    for suffix, x in signals.items():
        out[f"si_sdr{suffix}"] = float(si_sdr(x.double(), ref.double()))
    out["si_sdr_i"] = out["si_sdr"] - out["si_sdr_input"]
    for suffix, x in signals.items():
        out[f"lsd{suffix}"] = log_spectral_distance(x, ref)
    for suffix, x in signals.items():
        out[f"mr_stft{suffix}"] = multi_resolution_stft_distance(x, ref)
    perceptual = [n for n in ("pesq", "stoi") if n in extra]
    if perceptual:
        for suffix, x in signals.items():
            out.update({f"{k}{suffix}": v for k, v in perceptual_metrics(x[None], ref[None], sample_rate, perceptual).items()})
    if "dnsmos" in extra:
        for suffix, x in signals.items():
            out.update({f"{k}{suffix}": v for k, v in dnsmos_scores(x, sample_rate).items()})
    names = restoration_metric_names(extra, sample_rate)
    return {k: out[k] for k in names if k in out}
