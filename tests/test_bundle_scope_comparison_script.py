"""scripts/bundle_scope_comparison.py: rows read back from the runs' summaries, in the results-contract format."""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bundle_scope_comparison.py"


@pytest.fixture(scope="module")
def comparison():
    spec = importlib.util.spec_from_file_location("bundle_scope_comparison", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake_run(folder: Path, dice: float, bayesian: int, cost: float) -> None:
    run = folder / "lidc_sparse_bayes" / "runs" / "sparse_bayes_r0.01"
    (run / "eval").mkdir(parents=True)
    metrics = {"Dice": dice, "GED": 0.7, "GED_hm_iou": 0.4, "ECE": 0.00381, "GED_sample_diversity": 0.08}
    summary = {
        "metrics": {k: {"mean": v, "std": 0.1} for k, v in metrics.items()},
        "costs": {"train": {"parameters": {"total": 1000, "bayesian": bayesian, "deterministic": 1000 - bayesian}}},
    }
    (run / "eval" / "summary.json").write_text(json.dumps(summary))
    (run / "selection_summary.json").write_text(json.dumps({"predicted_mc_cost": cost}))


def test_reused_runs_are_tabulated_with_their_overrides(comparison, tmp_path):
    _fake_run(tmp_path / "work" / "0-seed0", 0.7151, 10, 1.0)
    _fake_run(tmp_path / "work" / "1-seed0", 0.7, 1, 0.2449)
    out = tmp_path / "out"
    argv = ["--row", "global=", "--row", "skip-free=--selection_region decoder_skipfree --sigma_init 0.02"]
    assert comparison.main([*argv, "--reuse", "--work", str(tmp_path / "work"), "--out", str(out)]) == 0
    rows = list(csv.reader((out / "comparison.csv").open()))
    assert rows[0] == list(comparison.HEADER)
    assert rows[1][:5] == ["global", "(defaults)", "0", "0.715", "0.700"]
    assert rows[1][6] == "0.0038" and rows[1][8] == "1.000 %" and rows[1][9] == "1.000" and rows[1][10] == "—"
    assert rows[2][1] == "--selection_region decoder_skipfree --sigma_init 0.02"
    assert rows[2][8] == "0.100 %" and rows[2][9] == "0.245"
    assert json.loads((out / "provenance.json").read_text())["seed"] == "0"


def test_seeds_are_averaged_per_row(comparison, tmp_path):
    _fake_run(tmp_path / "work" / "0-seed0", 0.70, 10, 1.0)
    _fake_run(tmp_path / "work" / "0-seed3", 0.61, 30, 1.0)
    out = tmp_path / "out"
    argv = ["--row", "global=", "--seeds", "3", "0", "--reuse", "--work", str(tmp_path / "work"), "--out", str(out)]
    assert comparison.main(argv) == 0
    rows = list(csv.reader((out / "comparison.csv").open()))
    assert [row[2] for row in rows[1:]] == ["0", "3"]
    means = list(csv.reader((out / "comparison_mean.csv").open()))
    assert means[0] == list(comparison.MEAN_HEADER)
    assert means[1][:4] == ["global", "(defaults)", "0 3", "0.655"]
    assert means[1][8] == "2.000 %" and means[1][9] == "1.000"


def test_missing_run_names_its_summary(comparison, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"0-seed0.*summary\.json"):
        comparison.main(["--row", "global=", "--reuse", "--work", str(tmp_path / "work"), "--out", str(tmp_path)])


def test_row_needs_a_label(comparison):
    assert comparison.parse_row("a=--x 1") == ("a", ["--x", "1"])
    with pytest.raises(argparse.ArgumentTypeError, match="label=overrides"):
        comparison.parse_row("--selection_region decoder")
