"""Optional dependency groups ("extras" in setup.py) and a clear error when one is missing.

A module that needs an extra calls :func:`require_extra` before importing it, so a missing package surfaces as
:class:`MissingExtraError` naming the ``pip install`` that fixes it (``train.py`` turns that into a message
naming the config), instead of a ``ModuleNotFoundError`` from deep inside a third-party import.

Example::

    >>> EXTRAS["llm"]
    ('peft', 'transformers', 'accelerate')
    >>> print(MissingExtraError("llm", ("peft",)))
    needs `pip install -e '.[llm]'` (not installed: peft)
    >>> missing_packages(["json", "no_such_package_here"])
    ('no_such_package_here',)
"""
import importlib.util
from typing import Iterable, Tuple

EXTRAS = {
    # LLM-based ASR (NeMo's SALM): PEFT LoRA, Hugging Face LLMs; NeMo's speechlm2 collection imports all three
    "llm": ("peft", "transformers", "accelerate"),
}


class MissingExtraError(ImportError):
    """An optional dependency group is not installed; ``extra`` and ``packages`` say which."""

    def __init__(self, extra: str, packages: Tuple[str, ...]):
        self.extra, self.packages = extra, tuple(packages)
        super().__init__(f"needs `pip install -e '.[{extra}]'` (not installed: {', '.join(packages)})",
                         name=packages[0] if packages else None)


def missing_packages(packages: Iterable[str]) -> Tuple[str, ...]:
    """The names in ``packages`` that cannot be imported (not installed, or blocked in ``sys.modules``)."""
    missing = []
    for name in packages:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a None entry in sys.modules, or a broken parent package
            found = False
        if not found:
            missing.append(name)
    return tuple(missing)


def require_extra(extra: str) -> None:
    """Raise :class:`MissingExtraError` unless every package of ``EXTRAS[extra]`` can be imported."""
    missing = missing_packages(EXTRAS[extra])
    if missing:
        raise MissingExtraError(extra, missing)
