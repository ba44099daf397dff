"""DNSMOS P.835 (Reddy et al. 2022): a non-intrusive estimate of speech quality (no clean reference), 1-5.

Microsoft's ONNX models ship inside the ``speechmos`` wheel and run offline (``pip install 'nest_ext[restoration]'``,
which brings it with ``onnxruntime``); nothing is downloaded. Without the package :func:`dnsmos_available` is
False and evaluations list DNSMOS as not computed instead of failing. Scores: ``dnsmos_ovrl`` (overall),
``dnsmos_sig`` (speech signal), ``dnsmos_bak`` (background noise) and ``dnsmos_p808`` (ITU-T P.808 MOS), on 16 kHz
audio (other rates are resampled); clips shorter than DNSMOS's 9.01 s window are repeated to fill it, as the
reference implementation does.

Example:
    >>> dnsmos_available() in (True, False)
    True
    >>> DNSMOS_NAMES
    ('dnsmos_ovrl', 'dnsmos_sig', 'dnsmos_bak', 'dnsmos_p808')
"""
from __future__ import annotations

import importlib.util
from typing import Dict

import numpy as np

__all__ = ["DNSMOS_NAMES", "dnsmos_available", "dnsmos_scores"]

DNSMOS_NAMES = ("dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak", "dnsmos_p808")
_RATE = 16000
_KEYS = {"dnsmos_ovrl": "ovrl_mos", "dnsmos_sig": "sig_mos", "dnsmos_bak": "bak_mos", "dnsmos_p808": "p808_mos"}


def dnsmos_available() -> bool:
    """Whether ``speechmos`` and ``onnxruntime`` are importable (the models are in the wheel)."""
    return all(importlib.util.find_spec(p) is not None for p in ("speechmos", "onnxruntime", "librosa"))


def dnsmos_scores(audio, sample_rate: int) -> Dict[str, float]:
    """DNSMOS of one utterance ``[T]`` (array or tensor, any rate); NaN scores where the models refuse it."""
    import soxr  # the resampler of nest_ext.data.audio_io (soxr "HQ"), called directly: metrics do not import data
    from speechmos import dnsmos

    if hasattr(audio, "detach"):
        audio = audio.detach().cpu().numpy()
    audio = np.asarray(audio, dtype=np.float32)
    if sample_rate != _RATE:
        audio = soxr.resample(audio, sample_rate, _RATE, quality="HQ").astype(np.float32)
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak > 1.0:  # speechmos refuses samples outside [-1, 1]; the scores do not depend on the level much
        audio = audio / peak
    try:
        result = dnsmos.run(audio.astype(np.float32), _RATE)
    except Exception:  # an utterance the models cannot score: a missing value, not a failed evaluation
        return {name: float("nan") for name in DNSMOS_NAMES}
    return {name: float(result[key]) for name, key in _KEYS.items()}
