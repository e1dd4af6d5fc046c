"""The rooms of the package import only downwards and never each other in a cycle (issue 12).

The floors are those of docs/architecture.md, bottom first. The imports are read from the source
(every ``import`` / ``from ... import`` statement, including those inside functions), so a lazy
import cannot hide an upward dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

import monai_bayes

PACKAGE = Path(monai_bayes.__file__).parent

#: rooms by floor, bottom first (docs/architecture.md "Rooms"); a room may import its own floor or below
FLOORS: tuple[tuple[str, ...], ...] = (
    ("_version", "utils"),
    ("layers", "uncertainty"),
    ("networks", "cost", "losses", "inferers", "metrics", "data", "visualize"),
    ("selection", "reduction", "pruning", "mcmc", "export", "distill"),
    ("handlers",),
    ("workflows", "evaluation"),
    ("bundle", "pacs", "cli", "__main__", "__init__"),
)
FLOOR = {room: level for level, rooms in enumerate(FLOORS) for room in rooms}
#: the bottom rooms that must stay free of everything above them (the issue's acceptance point)
BASEMENT = ("utils", "layers", "data")


def _room(module: str) -> str:
    """``monai_bayes.<room>[...]`` → ``<room>`` (``__init__`` for the package itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module_name(path: Path, package_dir: Path) -> tuple[str, str]:
    """(module name, package the module's relative imports start from)."""
    rel = path.relative_to(package_dir.parent).with_suffix("")
    name = ".".join(rel.parts)
    if path.name == "__init__.py":
        name = name.removesuffix(".__init__")
        return name, name
    return name, name.rsplit(".", 1)[0]


def _imported(tree: ast.AST, package: str) -> Iterable[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                yield ".".join(base + ([node.module] if node.module else []))
            elif node.module:
                yield node.module


def room_imports(package_dir: Path = PACKAGE) -> dict[str, dict[str, set[str]]]:
    """``{room: {imported room: {modules of room that import it}}}`` over every ``.py`` file."""
    graph: dict[str, dict[str, set[str]]] = {}
    for path in sorted(package_dir.rglob("*.py")):
        module, package = _module_name(path, package_dir)
        for target in _imported(ast.parse(path.read_text(encoding="utf-8")), package):
            if target == "monai_bayes" or target.startswith("monai_bayes."):
                src, dst = _room(module), _room(target)
                if src != dst:
                    graph.setdefault(src, {}).setdefault(dst, set()).add(module)
    return graph


def upward_imports(graph: Mapping[str, Mapping[str, set[str]]]) -> list[str]:
    """Imports from a room into a room on a higher floor, or into/from a room with no floor."""
    problems = []
    for src, targets in graph.items():
        for dst, modules in targets.items():
            if src not in FLOOR or dst not in FLOOR:
                problems.append(f"{src} -> {dst}: room not on any floor of docs/architecture.md ({sorted(modules)})")
            elif FLOOR[dst] > FLOOR[src]:
                problems.append(f"{src} (floor {FLOOR[src]}) imports {dst} (floor {FLOOR[dst]}): {sorted(modules)}")
    return sorted(problems)


def room_cycles(graph: Mapping[str, Mapping[str, set[str]]]) -> list[list[str]]:
    """Strongly connected groups of two or more rooms (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, {}):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_every_room_has_a_floor():
    rooms = {p.stem for p in PACKAGE.glob("*.py")} | {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert rooms <= set(FLOOR), f"rooms missing from FLOORS / docs/architecture.md: {sorted(rooms - set(FLOOR))}"


def test_no_cycle_between_rooms():
    assert room_cycles(room_imports()) == []


def test_no_upward_import():
    assert upward_imports(room_imports()) == []


@pytest.mark.parametrize("room", BASEMENT)
def test_basement_rooms_import_only_below(room: str):
    allowed = {r for r, level in FLOOR.items() if level <= FLOOR[room]}
    imported = set(room_imports().get(room, {}))
    assert imported <= allowed, f"{room} imports {sorted(imported - allowed)}"


def test_checker_finds_cycles_and_upward_imports(tmp_path: Path):
    """The walker itself: a planted cycle (networks <-> selection) and an upward import are reported."""
    pkg = tmp_path / "monai_bayes"
    for room, source in {
        "networks": "from monai_bayes.selection.topk import select_topk\n",
        "selection": "def f():\n    from ..networks import convert\n",
        "layers": "import monai_bayes.handlers.progress\n",
        "handlers": "",
    }.items():
        (pkg / room).mkdir(parents=True)
        (pkg / room / "__init__.py").write_text(source)
    graph = room_imports(pkg)
    assert room_cycles(graph) == [["networks", "selection"]]
    problems = upward_imports(graph)
    assert any(p.startswith("layers (floor 1) imports handlers (floor 4)") for p in problems), problems
    assert any(p.startswith("networks (floor 2) imports selection (floor 3)") for p in problems), problems
