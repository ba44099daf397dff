"""nest_ext.metrics: evaluation metrics.

* :mod:`~nest_ext.metrics.error_rate`: word / character error rates with substitution, deletion and insertion
  counts (Kaldi's alignment through ``kaldialign``, as NeMo's WER), and transcript normalisation.

Layer: above ``parts``, ``modules`` and ``losses``, below ``models`` and the command line. Names resolve lazily.

Example::

    >>> from nest_ext.metrics import error_counts
    >>> error_counts(["a b c"], ["a x c d"]).errors
    2
"""
import importlib

_EXPORTS = {
    "ErrorCounts": "nest_ext.metrics.error_rate",
    "error_counts": "nest_ext.metrics.error_rate",
    "normalize_transcript": "nest_ext.metrics.error_rate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
