"""Speech restoration networks: :class:`MossFormer2RestorationGenerator` (the discriminators are NeMo's)."""
from nest_ext.modules.restoration.generator import MossFormer2RestorationGenerator

__all__ = ["MossFormer2RestorationGenerator"]
