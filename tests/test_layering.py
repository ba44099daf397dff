"""The package's layers hold: a module imports only from lower layers (or its own sub-package), and long files
say why they are long. See docs/architecture.md."""
import ast
from pathlib import Path

import pytest

from conftest import ROOT

# lowest first; a sub-package may import its own modules and any sub-package of a strictly lower layer
LAYERS = {"parts": 0, "modules": 1, "losses": 1, "data": 2, "metrics": 2, "models": 3, "cli": 4}
MAX_LINES = 400
LONG_FILE_MARK = "Long file:"  # a file over MAX_LINES says "Long file: <reason>" near its top

PACKAGE_FILES = sorted((ROOT / "nest_ext").rglob("*.py"))


def _subpackage(path: Path) -> str:
    parts = path.relative_to(ROOT / "nest_ext").parts
    return parts[0] if len(parts) > 1 else ""


def _nest_ext_imports(path: Path):
    """(line, sub-package) of every absolute ``nest_ext.<sub>`` import, at top level or inside functions."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names if node.module == "nest_ext"]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            bits = name.split(".")
            if bits[0] == "nest_ext" and len(bits) > 1 and bits[1] in LAYERS:
                yield node.lineno, bits[1]


def test_every_subpackage_has_a_layer():
    subs = {p.name for p in (ROOT / "nest_ext").iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert subs <= set(LAYERS), f"sub-packages without a layer in LAYERS: {sorted(subs - set(LAYERS))}"


@pytest.mark.parametrize("path", PACKAGE_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_go_down_the_layers(path):
    own = _subpackage(path)
    if own not in LAYERS:  # nest_ext/__init__.py
        return
    upward = [
        f"{path.relative_to(ROOT)}:{line} imports nest_ext.{target} (layer {LAYERS[target]}) from layer {LAYERS[own]}"
        for line, target in _nest_ext_imports(path)
        if target != own and LAYERS[target] >= LAYERS[own]
    ]
    assert not upward, "\n".join(upward)


def test_a_layering_violation_is_caught(tmp_path):
    """The check above can fail: an upward import (even inside a function) is found with its line."""
    probe = tmp_path / "probe.py"
    probe.write_text("import os\nfrom nest_ext.parts import atomic_io\n\ndef f():\n    from nest_ext.models import X\n")
    assert list(_nest_ext_imports(probe)) == [(2, "parts"), (5, "models")]


# (no sys.path edits / loading by file path: tests/test_cli.py::test_no_path_hacks_left)


@pytest.mark.parametrize("path", PACKAGE_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_long_files_say_why(path):
    lines = path.read_text(encoding="utf-8").splitlines()
    if len(lines) > MAX_LINES:
        head = "\n".join(lines[:40])
        assert LONG_FILE_MARK in head, (
            f"{path.relative_to(ROOT)} has {len(lines)} lines (> {MAX_LINES}): split it along its seams or say "
            f"'{LONG_FILE_MARK} <reason>' in its docstring"
        )
