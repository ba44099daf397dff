"""The NEST model sizes: the header table of NeMo's NEST config (``examples/asr/conf/ssl/nest/nest_fast-conformer.yaml``).

One row per size: the encoder keys that differ between sizes and ``optim.sched``-independent ``weight_decay``.
``large`` is the default of NeMo's file itself. The configs ``config/nest_fast-conformer_<size>.yaml`` carry the
same rows (``tests/test_configs.py`` checks them against this table and NeMo's parameter counts).

Example::

    >>> NEST_SIZES["small"]["d_model"], encoder_overrides("xlarge")["use_bias"]
    (176, False)
"""
from typing import Dict

__all__ = ["NEST_SIZES", "encoder_overrides"]

_ENCODER_KEYS = ("d_model", "n_heads", "n_layers", "conv_kernel_size", "xscaling", "use_bias")

NEST_SIZES: Dict[str, Dict] = {
    "small": dict(d_model=176, n_heads=4, n_layers=16, conv_kernel_size=9, xscaling=True, use_bias=True, weight_decay=0.0),
    "medium": dict(d_model=256, n_heads=4, n_layers=16, conv_kernel_size=9, xscaling=True, use_bias=True, weight_decay=1e-3),
    "large": dict(d_model=512, n_heads=8, n_layers=17, conv_kernel_size=9, xscaling=True, use_bias=True, weight_decay=1e-3),
    "xlarge": dict(d_model=1024, n_heads=8, n_layers=24, conv_kernel_size=9, xscaling=False, use_bias=False, weight_decay=1e-3),
    "xxlarge": dict(d_model=1024, n_heads=8, n_layers=42, conv_kernel_size=5, xscaling=False, use_bias=False, weight_decay=1e-3),
}


def encoder_overrides(size: str) -> Dict:
    """The encoder keys of ``size`` (``KeyError`` names the known sizes)."""
    if size not in NEST_SIZES:
        raise KeyError(f"unknown NEST size {size!r}; known: {', '.join(NEST_SIZES)}")
    return {k: NEST_SIZES[size][k] for k in _ENCODER_KEYS}
