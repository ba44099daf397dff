"""nest_ext.modules: neural modules. Names resolve lazily so importing the package does not import NeMo."""
from nest_ext.parts.lazy_exports import lazy_exports

_EXPORTS = {
    "ConformerEncoder": "nest_ext.modules.conformer",
    "FrameStackingConnector": "nest_ext.modules.frame_stacking_connector",
    "MossFormer2": "nest_ext.modules.mossformer2",
    "RandomProjectionVectorQuantizer": "nest_ext.modules.random_projection_quantizer",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
