"""Package names that resolve on first use (PEP 562), so importing a package does not import its heavy
dependencies (NeMo, torchmetrics) until one of its names is used.

Example:
    >>> import types
    >>> pkg = types.ModuleType("pkg")
    >>> pkg.__getattr__, pkg.__dir__ = lazy_exports(pkg, {"sqrt": "math"})
    >>> pkg.sqrt(9.0), "sqrt" in dir(pkg)
    (3.0, True)
    >>> pkg.cbrt
    Traceback (most recent call last):
    AttributeError: module 'pkg' has no attribute 'cbrt'
"""
import importlib
import types
from typing import Callable, Dict, List, Mapping, Tuple, Union

__all__ = ["lazy_exports"]


def lazy_exports(
    package: Union[types.ModuleType, Dict[str, object]], exports: Mapping[str, str]
) -> Tuple[Callable[[str], object], Callable[[], List[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` (the module, or its ``globals()``): ``exports`` maps each
    public name to the module that defines it; a resolved name is cached in the package."""
    namespace = vars(package) if isinstance(package, types.ModuleType) else package

    def __getattr__(name: str):
        if name in exports:
            value = getattr(importlib.import_module(exports[name]), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {namespace['__name__']!r} has no attribute {name!r}")

    def __dir__() -> List[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
