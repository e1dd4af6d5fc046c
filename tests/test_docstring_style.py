"""One docstring dialect for the whole package: numpydoc blocks, checked on every docstring.

ruff's pydocstyle rules (``ruff.toml``, convention ``numpy``) check the section layout; they accept
``name: text`` lines under ``Parameters``, which numpydoc renders as a parameter called ``name: text``.
This test rejects them: every entry line is ``name`` or ``name : type``, its text indented below it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "monai_bayes"
ENTRY_SECTIONS = ("Parameters", "Other Parameters", "Attributes")
ENTRY = re.compile(r"^\*{0,2}[A-Za-z_]\w*(, \*{0,2}[A-Za-z_]\w*)*( : \S.*)?$")


def _docstrings(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = [tree, *(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef))]
    found = []
    for node in nodes:
        doc = ast.get_docstring(node, clean=True)
        if doc:
            found.append((getattr(node, "lineno", 1), doc))
    return found


def entry_violations(doc: str) -> list[str]:
    """Return the entry lines of ``doc``'s parameter-like sections that are not ``name`` / ``name : type``."""
    lines = doc.splitlines()
    bad: list[str] = []
    in_section = False
    for i, line in enumerate(lines):
        underline = i + 1 < len(lines) and lines[i + 1].strip() and set(lines[i + 1].strip()) == {"-"}
        if underline and not line.startswith(" "):
            in_section = line.strip() in ENTRY_SECTIONS
            continue
        if not in_section or not line.strip() or line.startswith(" ") or set(line.strip()) == {"-"}:
            continue
        if not ENTRY.match(line.strip()):
            bad.append(line.strip())
    return bad


def test_checker_rejects_the_colon_dialect() -> None:
    doc = "Summary.\n\nParameters\n----------\nx: the input.\ny : int\n    fine.\nz\n    fine too.\n"
    assert entry_violations(doc) == ["x: the input."]


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_numpydoc_entries(path: Path) -> None:
    problems = [f"{path.name}:{line}: {bad}" for line, doc in _docstrings(path) for bad in entry_violations(doc)]
    assert not problems, "numpydoc entries must be 'name' or 'name : type':\n" + "\n".join(problems)
