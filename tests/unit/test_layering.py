"""The architecture as imports: contracts never depend on a service, the runtime's modules form no circle,
and the handler API does not reach into the engine."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, TYPE_CHECKING blocks included (a circle hidden there is still a circle)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def test_nothing_in_schemas_imports_services() -> None:
    offenders = {
        f"{p.relative_to(ROOT)}: {m}"
        for p in (ROOT / "schemas").rglob("*.py")
        for m in imports_of(p)
        if m == "services" or m.startswith("services.")
    }
    assert offenders == set()


def common_graph() -> dict[str, set[str]]:
    modules = {p.stem: p for p in (ROOT / "services" / "common").glob("*.py") if p.stem != "__init__"}
    prefix = "services.common."
    return {
        name: {m.removeprefix(prefix).split(".")[0] for m in imports_of(path) if m.startswith(prefix)} & set(modules)
        for name, path in modules.items()
    }


def test_services_common_has_no_import_circle() -> None:
    graph = common_graph()
    circles: list[list[str]] = []

    def walk(node: str, path: list[str]) -> None:
        for dep in sorted(graph[node]):
            if dep in path:
                circles.append([*path[path.index(dep) :], dep])
            else:
                walk(dep, [*path, dep])

    for start in sorted(graph):
        walk(start, [start])
    assert circles == []


def test_the_handler_api_does_not_import_the_engine() -> None:
    graph = common_graph()
    assert graph["api"] <= {"errors"}
    assert "runtime" not in graph["harness"] and "runtime" not in graph["process"]
