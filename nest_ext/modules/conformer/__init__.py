"""Our Conformer/FastConformer encoder, state-dict compatible with NeMo's (see encoder.py)."""
from nest_ext.modules.conformer.encoder import ConformerEncoder

__all__ = ["ConformerEncoder"]
