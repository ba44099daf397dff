"""nest_ext.losses: NEST masked-token prediction losses (NeMo's, with the no-mask and needs_labels fixes) and
the permutation-invariant SI-SDR loss for separation.

Imported lazily so ``import nest_ext.losses`` does not pull NeMo in until a loss is used.
"""
from nest_ext.parts.lazy_exports import lazy_exports

_EXPORTS = {
    "MLMLoss": "nest_ext.losses.mlm",
    "MultiMLMLoss": "nest_ext.losses.mlm",
    "PermutationInvariantSISDRLoss": "nest_ext.losses.pit_sisdr",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
