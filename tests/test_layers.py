"""Imports run one way: kernels and data at the bottom, models, inference, evaluation, top.

Every ``bayes_moe`` import of every module is read from its source (module level and
inside functions; imports under ``if TYPE_CHECKING:`` are not run and are skipped) and
must go to a lower layer or stay in its own part. The one allowed exception is the
late imports inside ``BayesianMoE.fit`` (``fit_svi`` and ``SVIOptions`` from
``inference.svi``, ``MultiHorizonFit``, ``fit_panel`` for ``panel=True``), the
documented shortcut.
"""

import ast
from pathlib import Path

import bayes_moe

PACKAGE = Path(bayes_moe.__file__).parent
#: Rank of each top-level part of the package; an import must go to a lower rank.
#: Parts of rank 0 import nothing from each other; the top parts may import each other.
RANK = {
    "kernels": 0,
    "data": 0,
    "io": 0,
    "_runtime": 0,
    "models": 1,
    "inference": 2,
    "evaluation": 3,
    "plotting": 4,
    "report": 4,
    "panel_report": 4,
    "horizon_report": 4,
    "cli": 4,
    "__init__": 4,
}
TOP = 4
ALLOWED = {  # BayesianMoE.fit's shortcut: SVI, the result of several horizons, panels
    ("models/moe.py", "bayes_moe.inference.svi"),
    ("models/moe.py", "bayes_moe.inference.multi_horizon"),
    ("models/moe.py", "bayes_moe.inference.panel_fit"),
}


def _part(module: str) -> str:
    """The top-level part of a dotted ``bayes_moe`` module name."""
    names = module.split(".")
    return names[1] if len(names) > 1 else "__init__"


def _runtime_imports(tree: ast.AST):
    """``bayes_moe`` modules imported by the code of ``tree``, skipping TYPE_CHECKING blocks."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bayes_moe"):
            yield node.module, node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("bayes_moe"):
                    yield alias.name, node.lineno
        stack.extend(ast.iter_child_nodes(node))


def _violations() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        source = _part("bayes_moe." + relative.removesuffix(".py").replace("/", "."))
        for module, line in _runtime_imports(ast.parse(path.read_text())):
            target = _part(module)
            if target == source or (relative, module) in ALLOWED:
                continue
            if RANK[source] == RANK[target] == TOP or RANK[target] < RANK[source]:
                continue
            found.append(f"{relative}:{line} ({source}) imports {module} ({target})")
    return found


def test_every_part_of_the_package_has_a_layer():
    parts = {p.stem for p in PACKAGE.glob("*.py")}
    parts |= {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert parts <= set(RANK), sorted(parts - set(RANK))


def test_imports_run_one_way():
    assert _violations() == []


def test_the_check_finds_an_upward_import(tmp_path):
    # The oracle can be wrong: a models module importing inference at run time is found,
    # the same import under TYPE_CHECKING is not.
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from bayes_moe.inference.results import MoEFit\n"
        "def f():\n    from bayes_moe.inference.posterior import evaluate_posterior\n"
    )
    assert list(_runtime_imports(tree)) == [("bayes_moe.inference.posterior", 5)]
