"""nest_ext.models: NeMo models on nest_ext's parts. Names resolve lazily (no NeMo import at package import)."""
from nest_ext.parts.lazy_exports import lazy_exports

_EXPORTS = {
    "EncDecCTCModelBPE": "nest_ext.models.ctc_models",
    "EncDecDenoiseMaskedTokenPredModel": "nest_ext.models.ssl_models",
    "MossFormer2SeparationModel": "nest_ext.models.mossformer2_separation",
    "NestSALM": "nest_ext.models.salm_nest",  # needs the llm extra
    "RestorationGANModel": "nest_ext.models.restoration_gan",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
