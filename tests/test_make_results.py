"""scripts/make_results.py: the docs' results tables and figures equal what the committed results give.

The rendering is checked against a table written here by hand (the contract's format), a changed CSV
cell must make ``--check`` fail with a diff and a rerun must restore the page byte for byte; the
committed tree itself must pass ``--check``.
"""

from __future__ import annotations

import csv
import json
import re
import runpy
import shutil
from pathlib import Path

import pytest

from monai_bayes.evaluation.results import (
    check_results,
    regenerate,
    render_page,
    render_table,
    write_benchmark_results,
    write_provenance,
)

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "make_results.py"


def _main() -> object:
    return runpy.run_path(str(SCRIPT))["main"]


def _fixture(root: Path) -> Path:
    """A tiny repository: one results folder, one page with a stale table, one registered figure."""
    exp = root / "results" / "toy"
    exp.mkdir(parents=True)
    with open(exp / "t.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["run", "Dice", "params"], ["a", "0.835 ± 0.151", "1 643 848"], ["b", "0.5", "–"]])
    figure = {"output": "docs/images/toy.png", "function": "monai_bayes.visualize:plot_results_csv"}
    (exp / "figures.json").write_text(json.dumps([{**figure, "inputs": ["results/toy/t.csv"]}]))
    (root / "docs").mkdir()
    page = root / "docs" / "page.md"
    stale = "<!-- results-table: toy/t.csv -->\n| old |\n|---|\n<!-- /results-table -->\n"
    page.write_text(f"# Toy\n\nintro\n\n{stale}\nafter\n")
    (root / "README.md").write_text("no tables here\n")
    return page


def test_render_table_format(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text('run,"GED², S = 16"\nx,"0.1 ± 0.2"\n', encoding="utf-8")
    assert render_table(path) == "| run | GED², S = 16 |\n|---|---|\n| x | 0.1 ± 0.2 |\n"


def test_regenerate_check_and_changed_cell(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    page = _fixture(tmp_path)
    main = _main()
    assert main(["--check", "--root", str(tmp_path)]) == 1  # stale table, missing figure
    out = capsys.readouterr().out
    assert "-| old |" in out and "+| a | 0.835 ± 0.151 | 1 643 848 |" in out and "toy.png is missing" in out
    assert main(["--root", str(tmp_path)]) == 0
    expected = (
        "# Toy\n\nintro\n\n<!-- results-table: toy/t.csv -->\n| run | Dice | params |\n|---|---|---|\n"
        "| a | 0.835 ± 0.151 | 1 643 848 |\n| b | 0.5 | – |\n<!-- /results-table -->\n\nafter\n"
    )
    assert page.read_text(encoding="utf-8") == expected
    figure = tmp_path / "docs" / "images" / "toy.png"
    first = figure.read_bytes()
    assert first[:8] == b"\x89PNG\r\n\x1a\n" and b"Software" not in first
    assert main(["--check", "--root", str(tmp_path)]) == 0
    assert regenerate(tmp_path) == []  # byte-identical regeneration: nothing to rewrite
    assert figure.read_bytes() == first
    # one changed cell: --check fails with a diff naming the row, the rerun restores the page
    csv_path = tmp_path / "results" / "toy" / "t.csv"
    csv_path.write_text(csv_path.read_text(encoding="utf-8").replace("0.835", "0.836"), encoding="utf-8")
    differences = check_results(tmp_path)
    assert {d.path.name for d in differences} == {"page.md", "toy.png"}
    page_diff = next(d.diff for d in differences if d.path.name == "page.md")
    assert "-| a | 0.835 ± 0.151 | 1 643 848 |" in page_diff and "+| a | 0.836 ± 0.151 | 1 643 848 |" in page_diff
    assert main(["--check", "--root", str(tmp_path)]) == 1
    assert main(["--root", str(tmp_path)]) == 0
    assert page.read_text(encoding="utf-8") == expected.replace("0.835", "0.836")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<!-- results-table: toy/t.csv -->\n| x |\n", "never closed"),
        ("<!-- /results-table -->\n", "without an opening"),
        ("<!-- results-table: toy/t.csv -->\n<!-- results-table: toy/t.csv -->\n", "inside the one of line 1"),
        ("<!-- results-table: toy/missing.csv -->\n<!-- /results-table -->\n", "missing.csv does not exist"),
    ],
)
def test_bad_markers(tmp_path: Path, text: str, message: str) -> None:
    _fixture(tmp_path)
    with pytest.raises(ValueError, match=message):
        render_page(text, tmp_path / "results", page="p.md")


def test_ragged_csv_and_bad_figures_json(tmp_path: Path) -> None:
    _fixture(tmp_path)
    (tmp_path / "results" / "toy" / "t.csv").write_text("a,b\n1\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"t.csv, line 2: 1 cells, the header has 2"):
        check_results(tmp_path)
    shutil.rmtree(tmp_path / "docs")
    (tmp_path / "results" / "toy" / "figures.json").write_text('[{"output": "x.png"}]')
    with pytest.raises(ValueError, match=r"figures.json, entry 0: expected"):
        check_results(tmp_path)


def test_provenance_keys(tmp_path: Path) -> None:
    path = write_provenance(tmp_path / "exp", "python x.py --seed 3", 3, "tiny")
    record = json.loads(path.read_text())
    assert list(record) == ["command", "commit", "seed", "machine", "date", "notes"]
    assert record["command"] == "python x.py --seed 3" and record["seed"] == 3 and record["notes"] == "tiny"
    assert record["date"][:2] == "20" and "torch" in record["machine"]


def test_committed_tree_matches_results(capsys: pytest.CaptureFixture[str]) -> None:
    """Every table and figure in the committed docs is what scripts/make_results.py gives."""
    rc = _main()(["--check", "--root", str(REPO)])
    assert rc == 0, capsys.readouterr().out
    for provenance in (REPO / "results").glob("*/provenance.json"):
        assert list(json.loads(provenance.read_text())) == ["command", "commit", "seed", "machine", "date", "notes"]


def test_benchmarks_readme_is_rendered(tmp_path: Path) -> None:
    """A marked table in benchmarks/README.md is checked and re-rendered like the docs pages."""
    _fixture(tmp_path)
    bench = tmp_path / "benchmarks" / "README.md"
    bench.parent.mkdir()
    bench.write_text("# Benchmarks\n\n<!-- results-table: toy/t.csv -->\n| stale |\n<!-- /results-table -->\n")
    differences = check_results(tmp_path)
    bench_diff = next(d.diff for d in differences if d.path == bench)
    assert "benchmarks/README.md (committed)" in bench_diff and "+| b | 0.5 | – |" in bench_diff
    assert bench in regenerate(tmp_path)
    assert bench.read_text(encoding="utf-8") == (
        "# Benchmarks\n\n<!-- results-table: toy/t.csv -->\n| run | Dice | params |\n|---|---|---|\n"
        "| a | 0.835 ± 0.151 | 1 643 848 |\n| b | 0.5 | – |\n<!-- /results-table -->\n"
    )
    assert check_results(tmp_path) == []


def test_write_benchmark_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The benchmark helper writes each table, and a provenance with the retypable command, load and threads."""
    import os

    import torch

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    tables = {"ratios.csv": (["ratio", "measured"], [["a / b", "1.05"], ["c, d", "0.5 (x 2)"]])}
    argv = ["benchmarks/bench_x.py", "--repeats", "3", "--label", "two words"]
    written = write_benchmark_results(tmp_path / "bench_x", tables, "batch 10.", seed=0, argv=argv)
    assert [p.name for p in written] == ["ratios.csv", "provenance.json"]
    with open(written[0], newline="", encoding="utf-8") as f:
        assert list(csv.reader(f)) == [["ratio", "measured"], ["a / b", "1.05"], ["c, d", "0.5 (x 2)"]]
    record = json.loads(written[1].read_text())
    nice = f"nice -n {os.nice(0)} " if os.nice(0) > 0 else ""
    expected = f"OMP_NUM_THREADS=1 {nice}python benchmarks/bench_x.py --repeats 3 --label 'two words'"
    assert record["command"] == expected and record["seed"] == 0
    measured = r"batch 10\. Load average \(1, 5, 15 min\) when written: \d+\.\d, \d+\.\d, \d+\.\d; torch threads: "
    assert re.fullmatch(measured + f"{torch.get_num_threads()}\\.", record["notes"]), record["notes"]
    with pytest.raises(ValueError, match=r"must be a file name ending in \.csv"):
        write_benchmark_results(tmp_path / "bench_y", {"t.txt": (["a"], [])}, "", argv=argv)
