"""Every third-party import of the package, train.py and tools/ is declared in setup.py, so they cannot drift apart:
an import that runs when its module is imported needs ``install_requires``; one inside a function (a feature's own
import) may instead be in an extra."""
import ast
import re
import sys
from importlib.metadata import packages_distributions

from conftest import ROOT

LOCAL = {"nest_ext", "train", "conftest"} | {p.stem for p in (ROOT / "tools").glob("*.py")}
# modules of an optional feature: imports at their top may come from that feature's extra
FEATURE_MODULES = {"nest_ext/models/salm_nest.py": "llm"}
# NeMo collections used without asking for nemo_toolkit's extra of that name, and why
NEMO_COLLECTIONS_WITHOUT_EXTRA = {
    "common": "comes with every collection",
    "tts": "only the restoration discriminators, whose imports nemo_toolkit[asr,audio] covers",
    "speechlm2": "LLM-based ASR: its packages are nest_ext's llm extra (nemo_toolkit[speechlm2] adds more)",
}


def normalise(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(spec):
    return normalise(re.match(r"[A-Za-z0-9_.-]+", spec).group(0))


def setup_requirements():
    """setup.py's install_requires and extras_require: setup.py run with setuptools.setup only recording them."""
    import contextlib
    import runpy
    from unittest import mock

    import setuptools

    seen = {}
    with contextlib.chdir(ROOT), mock.patch.object(setuptools, "setup", lambda **kw: seen.update(kw)):
        runpy.run_path(str(ROOT / "setup.py"), run_name="__main__")
    return {"install_requires": seen["install_requires"], "extras_require": seen.get("extras_require", {})}


def declared():
    """(install_requires names, extras names) of setup.py."""
    kw = setup_requirements()
    required = {requirement_name(s) for s in kw["install_requires"]}
    extras = {requirement_name(s) for specs in kw.get("extras_require", {}).values() for s in specs}
    return required, extras


def third_party_imports(path):
    """(top-level module, line, eager) for each absolute import of a module outside the standard library and this
    project; eager when it runs at import time (not inside a function)."""
    found = []

    class Visitor(ast.NodeVisitor):
        depth = 0

        def visit_FunctionDef(self, node):
            self.depth += 1
            self.generic_visit(node)
            self.depth -= 1

        visit_AsyncFunctionDef = visit_FunctionDef

        def visit_Import(self, node):
            for alias in node.names:
                self.add(alias.name, node)

        def visit_ImportFrom(self, node):
            if node.level == 0 and node.module:
                self.add(node.module, node)

        def add(self, module, node):
            top = module.split(".")[0]
            if top not in sys.stdlib_module_names and top not in LOCAL and top != "__future__":
                found.append((top, node.lineno, self.depth == 0))

    Visitor().visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    return found


def undeclared(paths, required, extras, feature_extras=None):
    """``feature_extras``: module path -> its feature's extra (a set of names), for FEATURE_MODULES."""
    dists = packages_distributions()
    problems = []
    for path in paths:
        feature = (feature_extras or {}).get(path.relative_to(ROOT).as_posix(), set())
        for module, line, eager in third_party_imports(path):
            names = {normalise(d) for d in dists.get(module, [module])}
            ok = names & (required | feature) if eager else names & (required | extras)
            if not ok:
                where = "install_requires" if eager else "install_requires or an extra"
                problems.append(f"{path.relative_to(ROOT)}:{line}: imports {module} ({'/'.join(sorted(names))}), "
                                f"not in setup.py's {where}")
    return problems


def sources():
    return sorted([*(ROOT / "nest_ext").rglob("*.py"), ROOT / "train.py", *(ROOT / "tools").glob("*.py")])


def test_every_third_party_import_is_declared():
    required, extras = declared()
    by_extra = setup_requirements()["extras_require"]
    feature_extras = {path: {requirement_name(s) for s in by_extra[extra]} for path, extra in FEATURE_MODULES.items()}
    assert not undeclared(sources(), required, extras, feature_extras)


def test_the_check_sees_an_undeclared_or_misplaced_import(tmp_path, monkeypatch):
    source = tmp_path / "module.py"
    source.write_text("import numpy\nimport yaml\nfrom torch import nn\n\ndef report():\n    import matplotlib\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    problems = undeclared([source], required={"numpy", "torch"}, extras={"matplotlib"})
    assert len(problems) == 1 and "module.py:2: imports yaml" in problems[0]
    problems = undeclared([source], required={"numpy", "pyyaml"}, extras={"matplotlib", "torch"})
    assert problems == ["module.py:3: imports torch (torch), not in setup.py's install_requires"]


def test_nemo_collections_in_use_are_the_declared_extras():
    """nemo.collections.X imported anywhere -> nemo_toolkit's X extra is asked for."""
    spec = next(s for s in setup_requirements()["install_requires"] if s.startswith("nemo_toolkit"))
    asked = set(re.search(r"\[(.*?)\]", spec).group(1).split(","))
    used = set()
    for path in sources():
        used |= set(re.findall(r"nemo\.collections\.(\w+)", path.read_text(encoding="utf-8")))
    assert used - set(NEMO_COLLECTIONS_WITHOUT_EXTRA) <= asked, used
