"""metric_table_rows: evaluation summaries flattened into one row per run."""

from __future__ import annotations

import math

from monai_bayes.evaluation import metric_table_rows


def _summary(run: str, method: str, costs: dict, dice: float = 0.8) -> dict:
    return {
        "run": run,
        "method": method,
        "r_bayes": 0.01 if method == "sparse_bayes" else None,
        "metrics": {"Dice": {"mean": dice, "std": 0.1, "cases": 4}},
        "costs": costs,
    }


def test_rows_sum_training_steps_and_ensemble_members():
    det = {"parameters": {"total": 100, "bayesian": 0}, "total_flops": 1000, "wall_seconds": 2.0}
    bayes = {"parameters": {"total": 120, "bayesian": 10}, "total_flops": 3000, "wall_seconds": 5.0}
    member = {"parameters": {"total": 100, "bayesian": 0}, "total_flops": 1000, "wall_seconds": 2.0}
    rows = metric_table_rows(
        [
            _summary("sb", "sparse_bayes", {"deterministic": det, "train": bayes}),
            _summary("ens", "ensemble", {"m0": member, "m1": member, "m2": member}, dice=0.85),
        ],
        ["Dice", "GED"],
    )
    sparse, ensemble = rows
    assert sparse["run"] == "sb" and sparse["r_bayes"] == 0.01
    assert sparse["Dice"] == 0.8 and sparse["Dice_std"] == 0.1
    assert sparse["GED"] is None and sparse["GED_std"] is None  # not evaluated
    assert sparse["params_total"] == 120  # the last model of the run, not deterministic + partial-Bayes
    assert sparse["params_bayesian"] == 10
    assert sparse["train_flops_total"] == 4000 and math.isclose(sparse["train_wall_seconds"], 7.0)
    assert ensemble["params_total"] == 300  # every member is kept
    assert ensemble["train_flops_total"] == 3000


def test_rows_without_costs_hold_none():
    (row,) = metric_table_rows([_summary("det", "deterministic", {})], ["Dice"])
    assert row["params_total"] is None and row["params_bayesian"] is None
    assert row["train_flops_total"] is None and row["train_wall_seconds"] is None
