"""Every third-party import of the package, train.py and tools/ is declared in setup.py, so they cannot drift apart:
an import that runs when its module is imported needs ``install_requires``; one inside a function (a feature's own
import) may instead be in an extra."""
import ast
import re
import sys
from importlib.metadata import packages_distributions

from conftest import ROOT

LOCAL = {"nest_ext", "train", "conftest"} | {p.stem for p in (ROOT / "tools").glob("*.py")}


def normalise(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(spec):
    return normalise(re.match(r"[A-Za-z0-9_.-]+", spec).group(0))


def setup_requirements():
    """setup.py's install_requires and extras_require, read without running it."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    return {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg in ("install_requires", "extras_require")}


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


def undeclared(paths, required, extras):
    dists = packages_distributions()
    problems = []
    for path in paths:
        for module, line, eager in third_party_imports(path):
            names = {normalise(d) for d in dists.get(module, [module])}
            ok = names & required if eager else names & (required | extras)
            if not ok:
                where = "install_requires" if eager else "install_requires or an extra"
                problems.append(f"{path.relative_to(ROOT)}:{line}: imports {module} ({'/'.join(sorted(names))}), "
                                f"not in setup.py's {where}")
    return problems


def sources():
    return sorted([*(ROOT / "nest_ext").rglob("*.py"), ROOT / "train.py", *(ROOT / "tools").glob("*.py")])


def test_every_third_party_import_is_declared():
    required, extras = declared()
    assert not undeclared(sources(), required, extras)


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
    assert used - {"common"} <= asked, used  # common comes with every collection
