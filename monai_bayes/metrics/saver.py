"""Per-case metric reports (CSV + summary), written atomically.

Same content as MONAI's :class:`~monai.handlers.MetricsSaver` / ``write_metrics_reports`` (per-case rows and a
summary per column), with three differences: all metrics go into one table (one column per metric and
channel), values keep full float precision (``repr``), and every file is written to a temporary file in the
target directory and moved into place with :func:`os.replace`, so a reader never sees a half-written report.
Works for any per-case values, hence for 2D and 3D data alike.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from monai_bayes.utils.atomic import atomic_write_text

__all__ = ["SUMMARY_OPS", "per_case_table", "write_per_case_report"]

SUMMARY_OPS = ("mean", "std", "median", "min", "max", "notnans")


def _as_2d(name: str, values: torch.Tensor | np.ndarray | Sequence[float]) -> np.ndarray:
    """(N,) / (N, K) / (N, K, 1...) values → (N, K) host array, float32 kept as float32, else float64."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    arr = np.asarray(values)
    arr = arr.astype(np.float32 if arr.dtype in (np.float16, np.float32) else np.float64)
    if arr.ndim == 0:
        arr = arr.reshape(1, 1)
    elif arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    elif arr.ndim > 2:
        arr = arr.reshape(arr.shape[0], -1)
    if arr.shape[0] == 0:
        raise ValueError(f"details[{name!r}] has no cases, got shape {arr.shape}.")
    return arr


def _collect(
    details: Mapping[str, torch.Tensor | np.ndarray | Sequence[float]],
) -> tuple[list[str], list[np.ndarray]]:
    """Column names and one (N,) host array per column (native float32 / float64)."""
    if not details:
        raise ValueError("details must contain at least one metric, got an empty mapping.")
    columns: list[str] = []
    data: list[np.ndarray] = []
    num_cases: int | None = None
    for name, values in details.items():
        arr = _as_2d(name, values)
        if num_cases is None:
            num_cases = arr.shape[0]
        elif arr.shape[0] != num_cases:
            raise ValueError(
                f"every metric needs the same number of cases: {num_cases}, got {arr.shape[0]} for {name!r}."
            )
        columns += [name] if arr.shape[1] == 1 else [f"{name}_{k}" for k in range(arr.shape[1])]
        data += [arr[:, k] for k in range(arr.shape[1])]
    return columns, data


def per_case_table(
    details: Mapping[str, torch.Tensor | np.ndarray | Sequence[float]],
) -> tuple[list[str], np.ndarray]:
    """Column names and an (N, total columns) float64 table from ``{metric name: (N,) or (N, K)}``.

    A metric with one channel gives the column ``name``; with K channels ``name_0`` … ``name_{K-1}``.

    Raises
    ------
    ValueError
        If the metrics disagree on the number of cases N.
    """
    columns, data = _collect(details)
    return columns, np.stack([d.astype(np.float64) for d in data], axis=1)


def _summary_value(op: str, column: np.ndarray) -> float:
    finite = column[~np.isnan(column)]
    if op == "notnans":
        return float(finite.size)
    if finite.size == 0:
        return float("nan")
    if op.endswith("percentile"):
        q = float(op[: -len("percentile")])
        if not 0 <= q <= 100:
            raise ValueError(f"percentile op must be '<0..100>percentile', got {op!r}.")
        return float(np.percentile(finite, q))
    funcs: dict[str, Callable[..., Any]] = {
        "mean": np.mean,
        "std": np.std,
        "median": np.median,
        "min": np.min,
        "max": np.max,
    }
    if op not in funcs:
        raise ValueError(f"summary op must be one of {(*funcs, 'notnans', '<q>percentile')}, got {op!r}.")
    return float(funcs[op](finite))


def _fmt(value: float | np.floating) -> str:
    """Shortest text that reads back to the same value in its own precision (float32 stays short)."""
    if isinstance(value, np.float32):
        return str(value)
    return repr(float(value))


def _metric_cells(value: object) -> list[str]:
    """Cells of one aggregated metric: every number of a scalar / array / tensor, else its ``str``."""
    if isinstance(value, torch.Tensor):
        value = value.detach().to("cpu", torch.float64).numpy()
    try:
        arr = np.atleast_1d(np.asarray(value, dtype=np.float64)).ravel()
    except (TypeError, ValueError):
        return [str(value)]
    return [_fmt(v) for v in arr]


def write_per_case_report(
    save_dir: str | os.PathLike,
    details: Mapping[str, torch.Tensor | np.ndarray | Sequence[float]],
    case_ids: Sequence[str] | None = None,
    summary_ops: Sequence[str] | None = SUMMARY_OPS,
    metrics: Mapping[str, float | torch.Tensor] | None = None,
    prefix: str = "",
    delimiter: str = ",",
) -> dict[str, str]:
    """Write ``{prefix}per_case.csv``, ``{prefix}summary.csv`` and (optionally) ``{prefix}metrics.csv``.

    Parameters
    ----------
    save_dir
        Output directory (created if missing).
    details
        ``{metric name: (N,) or (N, K) per-case values}``, e.g. ``metric.get_details()`` or
        ``engine.state.metric_details``.
    case_ids
        N case names (e.g. image file names); defaults to ``0 … N-1``.
    summary_ops
        Statistics per column, NaN skipped: ``"mean"``, ``"std"``, ``"median"``, ``"min"``, ``"max"``,
        ``"notnans"``, ``"<q>percentile"``; None writes no summary.
    metrics
        Optional aggregated values ``{name: scalar}`` written to ``metrics.csv``.
    prefix
        File-name prefix.
    delimiter
        Column delimiter.

    Returns
    -------
    dict of str
        Paths written, keys ``"per_case"``, ``"summary"``, ``"metrics"``.
    """
    columns, data = _collect(details)
    num_cases = data[0].shape[0]
    if case_ids is None:
        case_ids = [str(i) for i in range(num_cases)]
    if len(case_ids) != num_cases:
        raise ValueError(f"case_ids must have one name per case ({num_cases}), got {len(case_ids)}.")
    os.makedirs(save_dir, exist_ok=True)
    paths: dict[str, str] = {}

    lines = [delimiter.join(["case", *columns])]
    lines += [delimiter.join([str(cid), *(_fmt(col[i]) for col in data)]) for i, cid in enumerate(case_ids)]
    paths["per_case"] = os.path.join(save_dir, f"{prefix}per_case.csv")
    atomic_write_text(paths["per_case"], "\n".join(lines) + "\n")

    if summary_ops:
        ops = list(summary_ops)
        lines = [delimiter.join(["metric", *ops])]
        for j, name in enumerate(columns):
            column = data[j].astype(np.float64)
            lines.append(delimiter.join([name, *(_fmt(_summary_value(op, column)) for op in ops)]))
        paths["summary"] = os.path.join(save_dir, f"{prefix}summary.csv")
        atomic_write_text(paths["summary"], "\n".join(lines) + "\n")

    if metrics:
        lines = [delimiter.join([k, *_metric_cells(v)]) for k, v in metrics.items()]
        paths["metrics"] = os.path.join(save_dir, f"{prefix}metrics.csv")
        atomic_write_text(paths["metrics"], "\n".join(lines) + "\n")
    return paths
