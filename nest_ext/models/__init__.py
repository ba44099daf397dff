"""nest_ext.models: NeMo models on nest_ext's parts. Names resolve lazily (no NeMo import at package import)."""
import importlib

_EXPORTS = {
    "EncDecDenoiseMaskedTokenPredModel": "nest_ext.models.ssl_models",
    "MossFormer2SeparationModel": "nest_ext.models.mossformer2_separation",
    "RestorationGANModel": "nest_ext.models.restoration_gan",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'nest_ext.models' has no attribute {name!r}")
