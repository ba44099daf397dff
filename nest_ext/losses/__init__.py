"""nest_ext.losses: NEST masked-token prediction losses (NeMo's, with the no-mask and needs_labels fixes) and
the permutation-invariant SI-SDR loss for separation.

Imported lazily so ``import nest_ext.losses`` does not pull NeMo in until a loss is used.
"""
import importlib

_EXPORTS = {
    "MLMLoss": "nest_ext.losses.mlm",
    "MultiMLMLoss": "nest_ext.losses.mlm",
    "PermutationInvariantSISDRLoss": "nest_ext.losses.pit_sisdr",
}
__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'nest_ext.losses' has no attribute {name!r}")
