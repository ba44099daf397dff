"""nest_ext.losses: NEST masked-token prediction losses (NeMo's, with the no-mask and needs_labels fixes).

Imported lazily so ``import nest_ext.losses`` does not pull NeMo in until a loss is used.
"""
__all__ = ["MLMLoss", "MultiMLMLoss"]


def __getattr__(name):
    if name in __all__:
        from nest_ext.losses import mlm

        return getattr(mlm, name)
    raise AttributeError(f"module 'nest_ext.losses' has no attribute {name!r}")
