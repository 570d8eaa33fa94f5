"""The packages import each other only downwards, along the arrows of the architecture.

Every ``import`` and ``from ... import`` in every module of the project's packages, function-level
ones included, is read with :mod:`ast`; each arrow between two packages must be one of
``ALLOWED``, and ``ALLOWED`` itself has no cycle. The layers, top to bottom::

    bench, demo                      benchmarks and the demo: may use everything below
    jobs -> operators -> models -> udfs
    training -> registry             offline: training, evaluation, the registry's client and CLI
    common                           configuration and Kafka I/O, below jobs, training and registry
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

ALLOWED: dict[str, set[str]] = {
    "udfs": set(),
    "models": {"udfs"},
    "common": {"models", "udfs"},
    "operators": {"common", "models", "udfs"},
    "jobs": {"operators", "common", "models", "udfs"},
    "registry": {"common", "models", "udfs"},
    "training": {"registry", "common", "models", "udfs"},
    "bench": {"jobs", "training", "registry", "operators", "common", "models", "udfs"},
    "demo": {"jobs", "training", "registry", "operators", "common", "models", "udfs"},
}
PACKAGES = set(ALLOWED)


def _imported(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        return [node.module]
    return []


def package_arrows() -> dict[tuple[str, str], set[str]]:
    """(importing package, imported package) -> the ``module -> module`` lines that make the arrow."""
    arrows: dict[tuple[str, str], set[str]] = defaultdict(set)
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                for name in _imported(node):
                    top = name.split(".")[0]
                    if top in PACKAGES and top != pkg:
                        arrows[(pkg, top)].add(f"{module} -> {name}")
    return arrows


def test_every_package_is_in_a_layer():
    found = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file() and p.name != "tests"}
    assert found == PACKAGES


def test_imports_follow_the_allowed_arrows():
    arrows = package_arrows()
    wrong = {k: sorted(v) for k, v in arrows.items() if k[1] not in ALLOWED[k[0]]}
    assert not wrong, f"imports against the layers: {wrong}"
    # the main arrows are really there: the check reads the imports it means to read
    for arrow in (("jobs", "operators"), ("operators", "models"), ("models", "udfs"), ("training", "models"),
                  ("jobs", "common"), ("training", "common"), ("bench", "jobs")):
        assert arrow in arrows, arrow


def test_the_allowed_arrows_have_no_cycle():
    done: set[str] = set()

    def visit(pkg: str, path: tuple[str, ...]) -> None:
        assert pkg not in path, f"cycle: {' -> '.join(path + (pkg,))}"
        if pkg in done:
            return
        for below in ALLOWED[pkg]:
            visit(below, path + (pkg,))
        done.add(pkg)

    for pkg in ALLOWED:
        visit(pkg, ())


def test_jobs_holds_wiring_only():
    names = {p.stem for p in (ROOT / "jobs").glob("*.py")}
    assert not {n for n in names if n.startswith("bench") or n == "demo"}, names
