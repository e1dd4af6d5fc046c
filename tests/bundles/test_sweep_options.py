"""Sweep options (issue 16): sample counts per method, folds with mean ± std over folds, Fig. 4 r_bayes
values, and the results contract written straight by the sweep."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import numpy as np
import pytest

from monai_bayes.bundle import run_sweep
from monai_bayes.bundle.runner import FIG4_R_BAYES, sweep_results_table, sweep_sample_counts_for
from monai_bayes.evaluation.results import render_table

REPO = Path(__file__).resolve().parents[2]


def test_fig4_values_are_the_sweep_default() -> None:
    assert [round(100 * r) for r in FIG4_R_BAYES] == [1, 10, 20, 40, 80, 100]
    config = json.loads((REPO / "bundles" / "lidc_sparse_bayes" / "configs" / "sweep.json").read_text())
    assert config["r_bayes_values"] == list(FIG4_R_BAYES) and config["sample_counts"] == [1, 4, 8, 16]


@pytest.mark.parametrize(
    ("method", "expected"),
    [("sparse_bayes", [1, 4, 8, 16]), ("full_bayes", [1, 4, 8, 16]), ("mc_dropout", [1, 4, 8, 16]),
     ("deterministic", [1]), ("ensemble", [4, 5])],
)  # fmt: skip
def test_sample_counts_per_method(method: str, expected: list[int]) -> None:
    assert sweep_sample_counts_for(method, [16, 1, 8, 4, 4], ensemble_size=5) == expected
    assert sweep_sample_counts_for(method, None, ensemble_size=5) == [0]  # the configured eval_samples


def test_table_mean_std_over_folds_and_cases() -> None:
    rng = np.random.default_rng(0)
    dice = rng.uniform(0.5, 0.9, size=4)
    rows = [
        {"run": "a", "S": 8, "fold": k, "Dice": float(d), "Dice_std": 0.3, "params_total": 1643848,
         "params_bayesian": 16251, "train_flops_total": 1.63e13, "train_wall_seconds": 100.0 + k}
        for k, d in enumerate(dice)
    ]  # fmt: skip
    rows.append({"run": "b", "S": 1, "fold": 0, "Dice": 0.12345, "Dice_std": 0.0456})
    header, cells = sweep_results_table(rows)
    assert header[:3] == ["run", "S", "Dice"] and header[3:] == [
        "folds", "params", "Bayesian params", "train FLOPs", "train time (s)"
    ]  # fmt: skip
    # several folds: mean ± sample std of the folds' means (numpy, ddof=1), not the per-case std
    assert cells[0][:4] == ["a", "8", f"{dice.mean():.3f} ± {np.std(dice, ddof=1):.3f}", "0, 1, 2, 3"]
    assert cells[0][4:] == ["1 643 848", "16 251", "1.63e+13", f"{statistics.fmean([100, 101, 102, 103]):.0f}"]
    # one fold: mean ± std over the test cases, as the evaluator wrote them
    assert cells[1] == ["b", "1", "0.123 ± 0.0456", "0", "–", "–", "–", "–"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"sample_counts": [0, 4]}, "sample_counts must be null or a non-empty list"),
     ({"folds": [-1]}, "folds must be null or a non-empty list"),
     ({"r_bayes_values": (0.01, 1.5)}, r"r_bayes_values must be a non-empty list of items that are each a number")],
)  # fmt: skip
def test_bad_sweep_settings_fail_before_running(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        run_sweep(REPO / "bundles" / "lidc_sparse_bayes", {"runs_dir": str(tmp_path)}, **kwargs)
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_sweep_sample_counts_folds_and_results_contract(lidc_bundle, tiny, tmp_path) -> None:
    results = tmp_path / "repo" / "results" / "toy_sweep"
    out = run_sweep(
        lidc_bundle,
        dict(tiny, runs_dir=str(tmp_path / "runs"), num_cases=4),
        r_bayes_values=(1.0,),
        baselines=("deterministic",),
        sample_counts=[1, 2],
        folds=[0, 1],
        results_dir=results,
        notes="tiny",
    )
    with open(out / "table.csv", newline="") as f:
        raw = list(csv.DictReader(f))
    got = sorted((r["run"], r["S"], r["fold"]) for r in raw)
    # full Bayes at S = 1, 2 and deterministic at 1, each on both folds (ensembles: test_sample_counts_per_method)
    expected = [
        (run, s, k) for k in "01" for run, s in (("full_bayes", "1"), ("full_bayes", "2"), ("deterministic", "1"))
    ]
    assert got == sorted(expected)
    for k in (0, 1):
        assert (tmp_path / "runs" / f"fold{k}" / "deterministic" / "model.pt").is_file()
    # the table's Dice of full Bayes at S = 2 is mean ± std over the two folds' means
    dice = [float(r["Dice"]) for r in raw if r["run"] == "full_bayes" and r["S"] == "2"]
    with open(results / "methods.csv", newline="") as f:
        table = {(r["run"], r["S"]): r for r in csv.DictReader(f)}
    mean, std = (float(v) for v in table[("full_bayes", "2")]["Dice"].split(" ± "))
    assert mean == pytest.approx(np.mean(dice), abs=1e-3) and std == pytest.approx(np.std(dice, ddof=1), abs=1e-3)
    assert table[("deterministic", "1")]["folds"] == "0, 1"
    assert (out / "table.md").read_text() == render_table(results / "methods.csv")
    provenance = json.loads((results / "provenance.json").read_text())
    assert provenance["notes"] == "tiny" and provenance["seed"] == 0 and "torch" in provenance["machine"]
    figures = json.loads((results / "figures.json").read_text())
    assert figures == [{"output": "docs/images/toy_sweep.png", "function": "monai_bayes.visualize:plot_results_csv",
                        "inputs": ["results/toy_sweep/methods.csv"]}]  # fmt: skip
