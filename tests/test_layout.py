"""The package stays small and layered: no module over 350 lines, no import cycle between
modules, nothing that points outside the repository."""

import ast
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "hebbret"
MODULES = sorted(PACKAGE.rglob("*.py"))


def _name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


NAMES = {_name(p): p for p in MODULES}


def _imports(path: pathlib.Path) -> set[str]:
    """hebbret modules imported at module level (imports inside functions are not cycles)."""
    out = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("hebbret")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("hebbret"):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    out.add(full if full in NAMES else node.module)
    return {m for m in out if m in NAMES and m != _name(path)}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_are_small(path):
    assert len(path.read_text().splitlines()) <= 350


def test_no_import_cycles():
    """Depth-first search for a back edge (a package's __init__ may import its submodules to
    re-export them; a submodule that needs its package __init__ back is a cycle)."""
    graph = {name: _imports(path) for name, path in NAMES.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = trail[trail.index(nxt) :] + [nxt]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


@pytest.mark.parametrize(
    "path",
    [p for p in (ROOT / d for d in ("hebbret", "experiments", "colab", "docs")) if p.exists()],
    ids=lambda p: p.name,
)
def test_nothing_points_outside_the_repository(path):
    files = [f for f in path.rglob("*") if f.suffix in (".py", ".md", ".ipynb")]
    hits = [str(f) for f in files if re.search(r"\.\./shared|shared/data", f.read_text())]
    assert not hits
