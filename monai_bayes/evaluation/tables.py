"""Result tables from evaluation summaries (``summary.json``): one row per run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["metric_table_rows"]


def metric_table_rows(summaries: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> list[dict[str, Any]]:
    """Flatten evaluation summaries into table rows.

    Parameters
    ----------
    summaries : Sequence of Mapping
        ``summary.json`` contents written by :class:`~monai_bayes.handlers.EvaluationReportHandler`.
    metrics : Sequence of str
        Metric names to tabulate (their mean and std over cases).

    Returns
    -------
    list of dict
        One row per summary: run, method, r_bayes, each metric's mean and ``<metric>_std``,
        parameters (total: the sum over members for an ensemble, else the largest count of the
        run's training steps; Bayesian entries), training FLOPs and wall seconds summed over all
        training steps of the run (e.g. deterministic + partial-Bayes); ``None`` where unknown.
    """
    rows = []
    for s in summaries:
        row: dict[str, Any] = {"run": s.get("run"), "method": s.get("method"), "r_bayes": s.get("r_bayes")}
        for m in metrics:
            entry = s.get("metrics", {}).get(m, {})
            row[m] = entry.get("mean")
            row[f"{m}_std"] = entry.get("std")
        costs = s.get("costs", {})
        train_costs = [c for c in costs.values() if isinstance(c, dict)]
        params = [c.get("parameters", {}) for c in train_costs]
        # an ensemble keeps every member; other methods keep their last model (the largest count)
        totals = [p.get("total", 0) for p in params]
        row["params_total"] = (sum(totals) if s.get("method") == "ensemble" else max(totals)) if totals else None
        row["params_bayesian"] = max((p.get("bayesian", 0) for p in params), default=None)
        row["train_flops_total"] = sum(c.get("total_flops") or 0 for c in train_costs) or None
        row["train_wall_seconds"] = sum(c.get("wall_seconds") or 0 for c in train_costs) or None
        rows.append(row)
    return rows
