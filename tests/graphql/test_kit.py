"""app/graphql is a kit below the rooms: the rooms import it, it imports no room. The
schema composition (app/schema.py) is the one module above them all."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROOMS = ("app.requests", "app.models", "app.users", "app.credits", "app.schema")


def runtime_imports(path: Path) -> set[str]:
    """The modules `path` imports when it runs: everywhere but `if TYPE_CHECKING:`."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def test_the_graphql_kit_imports_no_room() -> None:
    offenders = {
        f"{path.name}: {module}"
        for path in sorted((ROOT / "app" / "graphql").glob("*.py"))
        for module in runtime_imports(path)
        if module.startswith(ROOMS)
    }
    assert offenders == set()


def test_each_rooms_loaders_live_in_the_room() -> None:
    for room in ("requests", "models", "users"):
        assert (ROOT / "app" / room / "loaders.py").exists(), room


def test_the_model_types_reach_the_request_types_only_lazily() -> None:
    models = runtime_imports(ROOT / "app" / "models" / "types.py")
    assert not any(module.startswith("app.requests") for module in models), models
