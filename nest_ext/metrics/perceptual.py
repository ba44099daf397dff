"""Optional perceptual metrics: PESQ (ITU-T P.862, the ``pesq`` package) and STOI (the ``pystoi`` package).

Neither package is a dependency (``pip install 'nest_ext[eval]'``): :func:`available_perceptual_metrics`
says which are importable, and evaluations report the others as unavailable instead of failing.
Functions take one signal pair (``[T]`` tensors or arrays, estimate first as everywhere in
``nest_ext.metrics``) or, for :func:`perceptual_metrics`, ``[S, T]`` rows already matched to their
references, averaged over rows.

PESQ needs 8 kHz (narrow band only) or 16 kHz (wide or narrow band); it refuses some inputs (silence,
under a quarter second), which give NaN rather than stopping an evaluation hours in.

Example:
    >>> import numpy as np
    >>> sorted(set(available_perceptual_metrics()) - {"pesq", "stoi"})
    []
    >>> pesq_mode(8000), pesq_mode(16000)
    ('nb', 'wb')
"""
import importlib.util
import math
from typing import Dict, List, Optional, Sequence

import numpy as np

__all__ = ["available_perceptual_metrics", "perceptual_metrics", "pesq_mode", "pesq_score", "stoi_score"]

_PACKAGES = {"pesq": "pesq", "stoi": "pystoi"}  # metric name -> package that computes it


def available_perceptual_metrics() -> List[str]:
    """Names of the perceptual metrics whose packages are importable (``pesq``, ``stoi``)."""
    return [name for name, package in _PACKAGES.items() if importlib.util.find_spec(package) is not None]


def _numpy(signal) -> np.ndarray:
    if hasattr(signal, "detach"):
        signal = signal.detach().cpu()
    return np.asarray(signal, dtype=np.float64)


def pesq_mode(sample_rate: int) -> str:
    """PESQ's default band for a sample rate: ``nb`` at 8 kHz, ``wb`` at 16 kHz."""
    modes = {8000: "nb", 16000: "wb"}
    if sample_rate not in modes:
        raise ValueError(f"PESQ needs audio at 8000 or 16000 Hz, got {sample_rate}")
    return modes[sample_rate]


def pesq_score(estimate, reference, sample_rate: int, mode: Optional[str] = None) -> float:
    """PESQ (MOS-LQO) of ``estimate [T]`` against ``reference [T]``; ``mode`` ``nb``/``wb`` (default by rate).

    NaN when PESQ refuses the input (e.g. no utterance found in silence).
    """
    from pesq import pesq

    mode = mode or pesq_mode(sample_rate)
    try:
        return float(pesq(sample_rate, _numpy(reference), _numpy(estimate), mode))
    except Exception:  # the package raises its own error types for unusable input: a missing value, not a crash
        return float("nan")


def stoi_score(estimate, reference, sample_rate: int, extended: bool = False) -> float:
    """STOI (or extended STOI) of ``estimate [T]`` against ``reference [T]``, in [0, 1]."""
    from pystoi import stoi

    return float(stoi(_numpy(reference), _numpy(estimate), sample_rate, extended=extended))


def perceptual_metrics(
    estimates, references, sample_rate: int, names: Optional[Sequence[str]] = None
) -> Dict[str, float]:
    """Mean PESQ and STOI over the rows of ``estimates [S, T]`` vs ``references [S, T]`` (rows matched).

    ``names``: which to compute (default: every available one); PESQ is left out at rates it does not
    support, so the result may lack a requested name.
    """
    names = available_perceptual_metrics() if names is None else list(names)
    est, ref = _numpy(estimates), _numpy(references)
    if est.shape != ref.shape or est.ndim != 2:
        raise ValueError(f"expected estimates and references as [S, T] of one shape, got {est.shape} and {ref.shape}")
    out: Dict[str, float] = {}
    if "pesq" in names and sample_rate in (8000, 16000):
        out["pesq"] = math.fsum(pesq_score(e, r, sample_rate) for e, r in zip(est, ref)) / len(ref)
    if "stoi" in names:
        out["stoi"] = math.fsum(stoi_score(e, r, sample_rate) for e, r in zip(est, ref)) / len(ref)
    return out
