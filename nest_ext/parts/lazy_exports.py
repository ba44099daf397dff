"""Lazy package exports: ``from nest_ext.models import X`` imports X's module (and NeMo) only when X is used.

A package ``__init__`` lists its public names and the modules that define them::

    _EXPORTS = {"MultiMLMLoss": "nest_ext.losses.mlm"}
    __all__ = sorted(_EXPORTS)
    __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

Example::

    >>> import types, sys
    >>> pkg = types.ModuleType("demo_pkg"); sys.modules["demo_pkg"] = pkg
    >>> pkg.__getattr__, pkg.__dir__ = lazy_exports("demo_pkg", {"sqrt": "math"})
    >>> pkg.sqrt(9.0), "sqrt" in vars(pkg)          # resolved once, then cached in the package
    (3.0, True)
    >>> pkg.nope
    Traceback (most recent call last):
    ...
    AttributeError: module 'demo_pkg' has no attribute 'nope'
"""
import importlib
import sys
from typing import Callable, Dict, List, Tuple

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: Dict[str, str]) -> Tuple[Callable[[str], object], Callable[[], List[str]]]:
    """Module-level ``__getattr__`` and ``__dir__`` for ``package`` that resolve ``exports`` (name -> module) on use."""

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name]), name)
        setattr(sys.modules[package], name, value)  # the next lookup does not come here
        return value

    def __dir__() -> List[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
