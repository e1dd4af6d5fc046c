"""The results contract: measured numbers as small committed files, docs rendered from them.

Every number or figure in the docs comes from a committed results folder ``results/<experiment>/``:

* ``provenance.json``: ``{"command", "commit", "seed", "machine", "date", "notes"}`` — the exact
  command line, the git commit, the seed, the machine, the ISO date and free-text notes
  (:func:`write_provenance`);
* ``<table>.csv``: one table, the header row holds the column names as shown in the docs and the
  cells are already formatted as they appear there (:func:`write_results_table`);
* ``figures.json`` (optional): ``[{"output": "docs/images/x.png", "function": "module:plot_fn",
  "inputs": ["results/<experiment>/t.csv", ...]}, ...]``; ``plot_fn(inputs: list[Path], output:
  Path) -> None`` draws the figure from the committed inputs.

In a Markdown page (``docs/*.md``, ``README.md``, ``benchmarks/README.md``) a table sits between the marker lines
``<!-- results-table: <experiment>/<table>.csv -->`` and ``<!-- /results-table -->``; what lies
between them is :func:`render_table` of the CSV (``| col | col |`` header, ``|---|---|`` rule, one row
per CSV row, cells verbatim). ``scripts/make_results.py`` rewrites the pages and figures from the
committed results (:func:`regenerate`) or, with ``--check``, reports where they differ.
"""

from __future__ import annotations

import csv
import datetime
import difflib
import importlib
import io
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monai_bayes.utils.atomic import atomic_path, atomic_write_json, atomic_write_text

__all__ = [
    "MARKER_END",
    "MARKER_START",
    "PROVENANCE_KEYS",
    "Difference",
    "benchmark_command",
    "check_results",
    "describe_machine",
    "git_commit",
    "regenerate",
    "render_page",
    "render_table",
    "write_benchmark_results",
    "write_provenance",
    "write_results_table",
]

#: opening marker line of a rendered table; the group is ``<experiment>/<table>.csv``
MARKER_START = re.compile(r"^<!-- results-table: (?P<source>\S+) -->$")
#: closing marker line
MARKER_END = "<!-- /results-table -->"
#: the keys of ``provenance.json``, in order
PROVENANCE_KEYS = ("command", "commit", "seed", "machine", "date", "notes")


@dataclass(frozen=True)
class Difference:
    """A generated file that differs from what the committed results give.

    Attributes
    ----------
    path : Path
        The page or figure.
    diff : str
        A unified diff (pages) or a one-line reason (figures).
    """

    path: Path
    diff: str


def render_table(csv_path: str | os.PathLike) -> str:
    r"""The Markdown table of a results CSV: header, rule, one row per CSV row, cells verbatim.

    Parameters
    ----------
    csv_path : str or os.PathLike
        ``results/<experiment>/<table>.csv`` (UTF-8, header row first).

    Returns
    -------
    str
        ``"| a | b |\n|---|---|\n| 1 | 2 |\n"`` (every line ends with a newline).

    Raises
    ------
    ValueError
        If the file is missing or empty, a row's length differs from the header's, or a cell
        holds a line break (which a Markdown table cannot show).
    """
    path = Path(csv_path)
    if not path.is_file():
        raise ValueError(f"results table {path} does not exist.")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise ValueError(f"results table {path} is empty; expected a header row of column names.")
    header = rows[0]
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise ValueError(f"{path}, line {number}: {len(row)} cells, the header has {len(header)}.")
    for row in rows:
        for cell in row:
            if "\n" in cell or "\r" in cell:
                raise ValueError(f"{path}: cell {cell!r} holds a line break; a Markdown table cell cannot.")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    return "\n".join(lines) + "\n"


def render_page(text: str, results_dir: str | os.PathLike, page: str = "page") -> str:
    """``text`` with every marked table replaced by :func:`render_table` of its CSV.

    Parameters
    ----------
    text : str
        The Markdown page.
    results_dir : str or os.PathLike
        The ``results/`` folder the markers' ``<experiment>/<table>.csv`` paths are relative to.
    page : str
        The page's name for error messages.

    Returns
    -------
    str
        The page with the content between each pair of marker lines regenerated (the marker lines
        and everything outside them are kept as they are).

    Raises
    ------
    ValueError
        If a marker is not closed, is nested in another, a closing marker has no opening one, or
        a CSV cannot be rendered.
    """
    out: list[str] = []
    source: str | None = None
    start_line = 0
    for number, line in enumerate(text.splitlines(keepends=True), start=1):
        stripped = line.rstrip("\r\n")
        match = MARKER_START.match(stripped)
        if match:
            if source is not None:
                raise ValueError(f"{page}, line {number}: results-table marker inside the one of line {start_line}.")
            source, start_line = match.group("source"), number
            out.append(line if line.endswith("\n") else line + "\n")
            try:
                out.append(render_table(Path(results_dir) / source))
            except ValueError as err:
                raise ValueError(f"{page}, line {number}: {err}") from err
        elif stripped == MARKER_END:
            if source is None:
                raise ValueError(f"{page}, line {number}: {MARKER_END} without an opening results-table marker.")
            source = None
            out.append(line)
        elif source is None:
            out.append(line)
    if source is not None:
        raise ValueError(
            f"{page}, line {start_line}: results-table marker for {source} is never closed by {MARKER_END}."
        )
    return "".join(out)


def _pages(root: Path) -> list[Path]:
    """The Markdown pages that may hold results tables: ``docs/*.md``, ``README.md``, ``benchmarks/README.md``."""
    pages = sorted((root / "docs").glob("*.md"))
    for name in ("README.md", "benchmarks/README.md"):
        if (root / name).is_file():
            pages.append(root / name)
    return pages


def _figure_specs(root: Path) -> list[dict[str, Any]]:
    """Every ``results/*/figures.json`` entry, validated (``ValueError`` naming the file and field)."""
    specs: list[dict[str, Any]] = []
    for path in sorted((root / "results").glob("*/figures.json")):
        try:
            entries = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err}).") from err
        if not isinstance(entries, list):
            raise ValueError(f"{path}: expected a list of {{output, function, inputs}} objects.")
        for i, entry in enumerate(entries):
            ok = (
                isinstance(entry, dict)
                and isinstance(entry.get("output"), str)
                and isinstance(entry.get("function"), str)
                and ":" in entry["function"]
                and isinstance(entry.get("inputs"), list)
                and all(isinstance(p, str) for p in entry["inputs"])
            )
            if not ok:
                raise ValueError(
                    f"{path}, entry {i}: expected {{'output': str, 'function': 'module:function', "
                    f"'inputs': [str, ...]}}, got {entry!r}."
                )
            specs.append({**entry, "figures_json": path})
    return specs


def _plot_function(spec: Mapping[str, Any]) -> Callable[[list[Path], Path], None]:
    """The callable named by a figure entry's ``"module:function"``."""
    module_name, _, name = str(spec["function"]).partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as err:
        raise ValueError(
            f"{spec['figures_json']}: cannot import figure function {spec['function']!r} ({err})."
        ) from err
    if not callable(fn):
        raise ValueError(f"{spec['figures_json']}: {spec['function']!r} is not callable.")
    return fn


def _draw(root: Path, spec: Mapping[str, Any], output: Path) -> None:
    """Draw one registered figure into ``output`` from its inputs under ``root``."""
    inputs = [root / p for p in spec["inputs"]]
    missing = [str(p) for p in inputs if not p.is_file()]
    if missing:
        raise ValueError(f"{spec['figures_json']}: inputs of {spec['output']} do not exist: {', '.join(missing)}.")
    _plot_function(spec)(inputs, output)


def _page_differences(root: Path) -> Iterable[tuple[Path, str, str]]:
    """``(page, current text, regenerated text)`` for every page."""
    for page in _pages(root):
        text = page.read_text(encoding="utf-8")
        yield page, text, render_page(text, root / "results", page=str(page.relative_to(root)))


def check_results(root: str | os.PathLike) -> list[Difference]:
    """Where the docs and figures differ from what the committed results give (nothing is written).

    Parameters
    ----------
    root : str or os.PathLike
        The repository root (holding ``docs/``, ``results/`` and ``README.md``).

    Returns
    -------
    list of Difference
        One entry per page whose tables differ (with a unified diff) and per figure that is
        missing or not byte-identical to a fresh drawing; empty when everything matches.
    """
    base = Path(root)
    found: list[Difference] = []
    for page, text, new in _page_differences(base):
        if new != text:
            rel = str(page.relative_to(base))
            diff = difflib.unified_diff(
                text.splitlines(keepends=True),
                new.splitlines(keepends=True),
                f"{rel} (committed)",
                f"{rel} (from results/)",
            )
            found.append(Difference(page, "".join(diff)))
    for spec in _figure_specs(base):
        output = base / spec["output"]
        with tempfile.TemporaryDirectory() as tmp:
            fresh = Path(tmp) / output.name
            _draw(base, spec, fresh)
            if not output.is_file():
                found.append(Difference(output, f"{spec['output']} is missing (registered in {spec['figures_json']})."))
            elif fresh.read_bytes() != output.read_bytes():
                found.append(
                    Difference(
                        output, f"{spec['output']} differs from {spec['function']} over {', '.join(spec['inputs'])}."
                    )
                )
    return found


def regenerate(root: str | os.PathLike) -> list[Path]:
    """Rewrite the docs' marked tables and the registered figures from the committed results.

    Parameters
    ----------
    root : str or os.PathLike
        The repository root.

    Returns
    -------
    list of Path
        The pages and figures whose content changed (written atomically; unchanged files are not
        touched).
    """
    base = Path(root)
    changed: list[Path] = []
    for page, text, new in _page_differences(base):
        if new != text:
            atomic_write_text(page, new)
            changed.append(page)
    for spec in _figure_specs(base):
        output = base / spec["output"]
        with tempfile.TemporaryDirectory() as tmp:
            fresh = Path(tmp) / output.name
            _draw(base, spec, fresh)
            data = fresh.read_bytes()
        if output.is_file() and output.read_bytes() == data:
            continue
        with atomic_path(output) as target:
            target.write_bytes(data)
        changed.append(output)
    return changed


def write_results_table(path: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """Write one results table (``results/<experiment>/<table>.csv``) atomically.

    Parameters
    ----------
    path : str or os.PathLike
        The CSV file.
    header : Sequence of str
        Column names as shown in the docs.
    rows : Iterable of Sequence
        Rows of cells already formatted as they should appear (converted with ``str``).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        If a row's length differs from the header's.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(list(header))
    for i, row in enumerate(rows):
        if len(row) != len(header):
            raise ValueError(f"{path}: row {i} has {len(row)} cells, the header has {len(header)}.")
        writer.writerow([str(c) for c in row])
    return atomic_write_text(path, buffer.getvalue())


def git_commit(cwd: str | os.PathLike | None = None) -> str:
    """The checked-out commit of the repository holding ``cwd`` (``"+dirty"`` appended when it has
    uncommitted changes), or ``"unknown"`` outside a git checkout.

    Parameters
    ----------
    cwd : str or os.PathLike or None
        A folder inside the checkout (default: the folder of this module).

    Returns
    -------
    str
        The 40-digit commit, possibly with ``+dirty``.
    """
    where = str(cwd if cwd is not None else Path(__file__).parent)
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("+dirty" if status else "")


def describe_machine() -> str:
    """A short description of this machine: CPU count, architecture, torch version and device.

    Returns
    -------
    str
        e.g. ``"2-core x86_64, torch 2.13.0+cpu"`` (``", CUDA <device name>"`` when a GPU is visible).
    """
    import torch

    text = f"{os.cpu_count()}-core {platform.machine()}, torch {torch.__version__}"
    if torch.cuda.is_available():
        text += f", CUDA {torch.cuda.get_device_name(0)}"
    return text


def write_provenance(
    folder: str | os.PathLike,
    command: str,
    seed: int | str | None,
    notes: str = "",
    *,
    commit: str | None = None,
    machine: str | None = None,
    date: str | None = None,
) -> Path:
    """Write ``<folder>/provenance.json`` of a results folder.

    Parameters
    ----------
    folder : str or os.PathLike
        ``results/<experiment>``.
    command : str
        The exact command line that produced the folder.
    seed : int or str or None
        The seed of the run.
    notes : str
        Free text: sizes run, what was hand-edited, caveats.
    commit : str or None
        Git commit (default :func:`git_commit`).
    machine : str or None
        Machine description (default :func:`describe_machine`).
    date : str or None
        ISO date (default: today, UTC).

    Returns
    -------
    Path
        The written ``provenance.json``.
    """
    record = {
        "command": command,
        "commit": commit if commit is not None else git_commit(),
        "seed": seed,
        "machine": machine if machine is not None else describe_machine(),
        "date": date if date is not None else datetime.datetime.now(datetime.timezone.utc).date().isoformat(),
        "notes": notes,
    }
    return atomic_write_json(Path(folder) / "provenance.json", record, indent=2)


#: environment variables that change a benchmark's timings; :func:`benchmark_command` writes those set
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def benchmark_command(argv: Sequence[str] | None = None) -> str:
    """The command line that is running, as one would retype it: thread variables, ``nice``, ``python``.

    Parameters
    ----------
    argv : Sequence of str or None
        The script and its arguments (default ``sys.argv``).

    Returns
    -------
    str
        e.g. ``"OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_core.py --repeats 3"``: the thread
        variables of :data:`THREAD_VARIABLES` that are set, ``nice -n <niceness>`` when this process runs
        with a positive niceness, then the shell-quoted arguments.
    """
    words = [f"{name}={shlex.quote(os.environ[name])}" for name in THREAD_VARIABLES if name in os.environ]
    niceness = os.nice(0) if hasattr(os, "nice") else 0
    if niceness > 0:
        words.append(f"nice -n {niceness}")
    words.append("python " + shlex.join(list(sys.argv if argv is None else argv)))
    return " ".join(words)


def write_benchmark_results(
    folder: str | os.PathLike,
    tables: Mapping[str, tuple[Sequence[str], Sequence[Sequence[Any]]]],
    notes: str,
    seed: int | str | None = 0,
    *,
    argv: Sequence[str] | None = None,
) -> list[Path]:
    """Write a benchmark's tables and ``provenance.json`` (the results contract) into ``folder``.

    The provenance records :func:`benchmark_command` as the command, the commit checked out before the
    tables are written (rewriting a committed table would otherwise mark it ``+dirty``), and appends the
    machine's load averages and torch's intra-op thread count to ``notes`` (timings on a shared machine
    mean little without them).

    Parameters
    ----------
    folder : str or os.PathLike
        ``results/<experiment>``.
    tables : Mapping of str to (header, rows)
        ``{"<table>.csv": (column names, rows of formatted cells)}``, each written by
        :func:`write_results_table`.
    notes : str
        Sizes run and caveats, as for :func:`write_provenance`.
    seed : int or str or None
        The seed of the run.
    argv : Sequence of str or None
        The command's arguments (default ``sys.argv``).

    Returns
    -------
    list of Path
        The written tables, then ``provenance.json``.

    Raises
    ------
    ValueError
        If a table name does not end in ``.csv`` or a row's length differs from its header's.
    """
    import torch

    base = Path(folder)
    commit = git_commit()  # before the tables overwrite committed files, which would mark the checkout dirty
    written: list[Path] = []
    for name, (header, rows) in tables.items():
        if not name.endswith(".csv") or "/" in name:
            raise ValueError(f"{base}: table name {name!r} must be a file name ending in .csv.")
        written.append(write_results_table(base / name, header, rows))
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "unknown"
    measured = f"Load average (1, 5, 15 min) when written: {load}; torch threads: {torch.get_num_threads()}."
    full_notes = f"{notes.rstrip()} {measured}" if notes.strip() else measured
    written.append(write_provenance(base, benchmark_command(argv), seed, full_notes, commit=commit))
    return written
