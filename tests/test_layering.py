"""The layout's rules, checked on the source: one-way layers, no import circles, rooms of a livable size.

See docs/architecture.md. Every import counts, including those inside functions and under
``TYPE_CHECKING``: a lazy import still ties the two modules together.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("features", "models", "serving", "pipelines")
# features <- models <- serving; pipelines wires them; nothing imports pipelines.
ALLOWED = {
    "features": {"features"},
    "models": {"features", "models"},
    "serving": {"features", "models", "serving"},
    "pipelines": {"features", "models", "serving", "pipelines"},
}
MAX_LINES = 800  # a module past this is asking to be split by responsibility
# Kept for models logged before the models/ subpackages existed (their MLflow entry file imports it).
COMPAT_MODULES = {"models.bundle"}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The project modules ``name`` imports (resolved to modules, not to names inside them)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _without_parents(name: str, deps: set[str]) -> set[str]:
    # A package's __init__ importing its own submodules (re-exports) and a submodule importing its parent
    # package's name are not edges between rooms.
    return {d for d in deps if not name.startswith(d + ".") and not d.startswith(name + ".")}


def test_layers_point_one_way() -> None:
    wrong = sorted(
        f"{name} imports {dep}"
        for name, deps in GRAPH.items()
        for dep in deps
        if dep.split(".")[0] not in ALLOWED[name.split(".")[0]]
    )
    assert wrong == []


def test_there_are_no_import_circles() -> None:
    graph = {n: _without_parents(n, d) for n, d in GRAPH.items()}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append([*stack[stack.index(dep) :], dep])
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert cycles == []


def test_the_circle_check_finds_a_circle(tmp_path: Path) -> None:
    """The check above would see a lazy import closing a circle (guards against a check that passes vacuously)."""
    assert "models.package.bundle" in GRAPH["models.package.tracking"]
    assert "features.errors" in GRAPH["features.io"]
    fake = tmp_path / "x.py"
    fake.write_text("def f():\n    from models.package.tracking import configure_mlflow\n", encoding="utf-8")
    assert _imports("models.package.bundle", fake) == {"models.package.tracking"}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_fit_in_a_room(name: str) -> None:
    lines = len(MODULES[name].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{MODULES[name].relative_to(REPO)} has {lines} lines; split it by responsibility"


def test_nothing_uses_the_compatibility_modules() -> None:
    users = sorted(f"{n} imports {d}" for n, deps in GRAPH.items() for d in deps if d in COMPAT_MODULES)
    assert users == []
