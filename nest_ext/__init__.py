"""nest_ext: NEST SSL pretraining and MossFormer2 speech separation on top of NVIDIA NeMo.

Sub-packages follow NeMo's collection layout: ``data``, ``losses``, ``modules``, ``models``, ``parts``.
Heavy imports (NeMo, Lightning) happen only when a sub-package is used.
"""

__version__ = "0.1.0"
