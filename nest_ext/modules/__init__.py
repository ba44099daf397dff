"""nest_ext.modules: neural modules. Names resolve lazily so importing the package does not import NeMo."""
import importlib

_EXPORTS = {
    "ConformerEncoder": "nest_ext.modules.conformer",
    "MossFormer2": "nest_ext.modules.mossformer2",
    "RandomProjectionVectorQuantizer": "nest_ext.modules.random_projection_quantizer",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'nest_ext.modules' has no attribute {name!r}")
