"""Figures for people who would rather look than read: overlays, uncertainty maps, sweeps.

* :func:`overlay_errors` -- prediction vs reference on the image: true positives green, false
  positives blue, false negatives red (seed 000 Fig. 3 convention);
* :func:`plot_case` -- one row per case: input, rater masks, overlay, uncertainty map (Fig. 3);
* :func:`plot_method_comparison` -- bar charts with error bars per method (Fig. 4);
* :func:`plot_reliability` -- reliability diagram (accuracy vs confidence) per method.

All functions take numpy arrays or tensors (moved to the host here: plotting is not a hot path),
build :class:`matplotlib.figure.Figure` objects directly (no pyplot state, so they leave a
notebook's backend alone) and write PNG files atomically (temporary file, then rename).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from monai_bayes.utils.atomic import atomic_path

__all__ = [
    "display_image",
    "overlay_errors",
    "pareto_front",
    "parse_results_cell",
    "plot_case",
    "plot_cases",
    "plot_deployer_pareto",
    "plot_latent_width_comparison",
    "plot_method_comparison",
    "plot_quality_cost_frontier",
    "plot_reliability",
    "plot_results_csv",
    "save_figure",
]

TP_COLOR = (0.0, 0.8, 0.0)
FP_COLOR = (0.1, 0.3, 1.0)
FN_COLOR = (1.0, 0.0, 0.0)


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def save_figure(
    fig: Figure, path: str | os.PathLike, dpi: int = 120, metadata: dict[str, str | None] | None = None
) -> Path:
    """Save ``fig`` through a temporary file and an atomic rename.

    A PNG is written without the ``Software`` text chunk (matplotlib's version) unless ``metadata`` says
    otherwise, so the same figure gives the same bytes (``scripts/make_results.py --check`` compares figures
    byte for byte).
    """
    if metadata is None and Path(path).suffix.lower() == ".png":
        metadata = {"Software": None}
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", metadata=metadata)
    return Path(path)


def display_image(image: Any) -> np.ndarray:
    """``(H, W)`` grey or ``(H, W, 3)`` RGB in [0, 1] from ``(H, W)``, ``(1, H, W)``, ``(3, H, W)`` or ``(H, W, 3)``."""
    img = _np(image).astype(np.float64)
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
        img = np.moveaxis(img, 0, -1)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[-1] != 3):
        raise ValueError(f"image must be (H, W), (1|3, H, W) or (H, W, 3), got shape {img.shape}.")
    lo, hi = float(img.min()), float(img.max())
    return (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)


def overlay_errors(image: Any, prediction: Any, reference: Any, alpha: float = 0.55) -> np.ndarray:
    """RGB overlay of a binary prediction against a binary reference on the image.

    Parameters
    ----------
    image
        ``(H, W)`` grey or an RGB layout accepted by :func:`display_image` (min-max scaled).
    prediction, reference
        ``(H, W)`` binary masks.

    Returns
    -------
    ``(H, W, 3)`` float RGB in [0, 1]: TP green, FP blue, FN red, elsewhere the image.
    """
    img = display_image(image)
    pred, ref = _np(prediction).astype(bool), _np(reference).astype(bool)
    if not img.shape[:2] == pred.shape == ref.shape or pred.ndim != 2:
        raise ValueError(
            f"image, prediction and reference must be (H, W) of one shape, got {img.shape}, {pred.shape}, {ref.shape}."
        )
    rgb = np.repeat(img[..., None], 3, axis=-1) if img.ndim == 2 else img.copy()
    for mask, color in ((pred & ref, TP_COLOR), (pred & ~ref, FP_COLOR), (~pred & ref, FN_COLOR)):
        rgb[mask] = (1 - alpha) * rgb[mask] + alpha * np.asarray(color)
    return rgb


def rater_title(num_raters: int, num_marked: int) -> str:
    """Title of the rater panel: ``"ground truth"`` for one annotation, else how many raters marked.

    Parameters
    ----------
    num_raters : int
        Rater masks of the case (1 for single-annotation data such as ISIC).
    num_marked : int
        How many of them are non-empty.

    Returns
    -------
    str
        E.g. ``"ground truth"``, ``"ground truth (empty)"``, ``"3 of 4 raters marked"``.
    """
    if num_raters == 1:
        return "ground truth" if num_marked else "ground truth (empty)"
    return f"{num_marked} of {num_raters} raters marked"


def plot_case(
    axes: Sequence[Axes],
    image: Any,
    raters: Any,
    mean_probability: Any,
    uncertainty: Any,
    threshold: float = 0.5,
    uncertainty_max: float | None = None,
) -> None:
    """Fill one row of 4 axes: input | rater masks | prediction overlay | uncertainty map.

    Parameters
    ----------
    axes
        Four matplotlib axes of one row.
    image
        ``(H, W)`` grey or RGB (see :func:`display_image`).
    raters
        ``(R, H, W)`` binary rater masks.
    mean_probability
        ``(H, W)`` foreground probability.
    uncertainty
        ``(H, W)``, e.g. predictive entropy in nats.
    threshold
        Probability above which a pixel counts as predicted foreground.
    uncertainty_max
        Upper end of the uncertainty colour scale (default: the map's maximum).

    Notes
    -----
    The overlay compares the thresholded prediction with the consensus of the raters who marked the
    case (a pixel marked by more than half of them; pylidc's ``consensus(clevel=0.5)``); rater channels
    that are empty everywhere (a reader who did not mark the nodule) do not vote.
    """
    img, rat = display_image(image), _np(raters).astype(bool)
    prob, unc = _np(mean_probability), _np(uncertainty)
    marked = rat.reshape(len(rat), -1).any(axis=1)
    majority = rat[marked].mean(axis=0) > 0.5 if marked.any() else np.zeros(rat.shape[1:], dtype=bool)
    axes[0].imshow(img, cmap="gray")
    axes[0].set_title("input")
    axes[1].imshow(img, cmap="gray")
    colors = colormaps["autumn"](np.linspace(0, 1, max(len(rat), 1)))
    for r, mask in enumerate(rat):
        if mask.any():
            axes[1].contour(mask.astype(float), levels=[0.5], colors=[colors[r]], linewidths=1.0)
    axes[1].set_title(rater_title(len(rat), int(marked.sum())))
    axes[2].imshow(overlay_errors(img, prob > threshold, majority))
    axes[2].set_title("TP green / FP blue / FN red")
    im = axes[3].imshow(unc, cmap="jet", vmin=0.0, vmax=uncertainty_max)
    axes[3].set_title("uncertainty (nats)")
    axes[3].figure.colorbar(im, ax=axes[3], fraction=0.046, pad=0.04)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])


def plot_cases(cases: Sequence[Mapping[str, Any]], path: str | os.PathLike, title: str | None = None) -> Path:
    """A Fig.-3-like grid, one row per case; each case maps ``image``, ``raters``, ``mean``, ``uncertainty``."""
    if not cases:
        raise ValueError("plot_cases needs at least one case.")
    fig = Figure(figsize=(12, 3.1 * len(cases)))
    axes = fig.subplots(len(cases), 4, squeeze=False)
    vmax = max(float(_np(c["uncertainty"]).max()) for c in cases) or None
    for row, case in zip(axes, cases):
        plot_case(row, case["image"], case["raters"], case["mean"], case["uncertainty"], uncertainty_max=vmax)
        if "name" in case:
            row[0].set_ylabel(str(case["name"]), fontsize=8)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_method_comparison(
    summary: Mapping[str, Mapping[str, tuple[float, float] | float]],
    metrics: Sequence[str],
    path: str | os.PathLike,
    labels: Mapping[str, str] | None = None,
    title: str | None = None,
    columns: int = 3,
) -> Path:
    """Fig.-4-like bars: one panel per metric (``columns`` per row), one bar per method, ``mean ± std`` error bars.

    Parameters
    ----------
    summary
        ``{method: {metric: (mean, std) or value}}`` in display order.
    metrics
        metric keys to plot (one panel each).
    labels
        optional display names of the metrics.
    """
    methods = list(summary)
    ncols = min(columns, len(metrics))
    nrows = -(-len(metrics) // ncols)
    fig = Figure(figsize=(3.4 * ncols, 3.4 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False).reshape(-1)
    for ax in axes[len(metrics) :]:
        ax.set_visible(False)
    colors = colormaps["viridis"](np.linspace(0.1, 0.9, len(methods)))
    for ax, metric in zip(axes, metrics):
        means, stds = [], []
        for m in methods:
            value = summary[m].get(metric, float("nan"))
            mean, std = value if isinstance(value, (tuple, list)) else (value, 0.0)
            means.append(float(mean))
            stds.append(float(std))
        ax.bar(range(len(methods)), means, yerr=stds, color=colors, capsize=3)
        ax.set_xticks(range(len(methods)))
        ax.set_xticklabels(methods, rotation=60, ha="right", fontsize=8)
        ax.set_title((labels or {}).get(metric, metric), fontsize=10)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_reliability(
    curves: Mapping[str, tuple[Any, Any]], path: str | os.PathLike, title: str = "reliability"
) -> Path:
    """Reliability diagram: ``{method: (bin confidences, bin accuracies)}`` against the diagonal."""
    fig = Figure(figsize=(4, 4))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], "k--", linewidth=0.8, label="perfect calibration")
    for name, (conf, acc) in curves.items():
        ax.plot(_np(conf), _np(acc), marker="o", markersize=3, label=name)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def plot_quality_cost_frontier(inputs: list[Path], output: Path) -> None:
    """Quality vs Monte-Carlo cost of selection scopes, from ``results/fast_mc/frontier.csv``.

    Two panels share the x axis, the MC cost at S = 8 (time / (8 × one deterministic forward)): Dice (higher
    is better) and GED (lower is better), one numbered point per selection row, the selections in a key
    below the panels. The PNG is byte-stable
    (no software tag), as ``scripts/make_results.py`` expects.

    Parameters
    ----------
    inputs : list of pathlib.Path
        ``[frontier.csv]`` with the columns ``selection``, ``Dice``, ``GED`` and ``MC cost S=8`` (numbers as
        text; ``—`` for a missing value).
    output : pathlib.Path
        Where the PNG is written (atomically).

    Raises
    ------
    ValueError
        If the CSV lacks one of the columns.
    """
    import csv

    with open(inputs[0], newline="") as f:
        rows = list(csv.DictReader(f))
    needed = ("selection", "Dice", "GED", "MC cost S=8")
    missing = [c for c in needed if not rows or c not in rows[0]]
    if missing:
        raise ValueError(f"{inputs[0]} must have the columns {needed}; missing {missing}.")

    def number(text: str) -> float:
        return float("nan") if text.strip() in ("", "—") else float(text)

    cost = [number(r["MC cost S=8"]) for r in rows]
    # points numbered, the selections in a key below the panels (long labels would overlap)
    fig = Figure(figsize=(8, 3.4 + 0.22 * ((len(rows) + 1) // 2)))
    axes = fig.subplots(1, 2)
    for ax, metric, better in ((axes[0], "Dice", "higher"), (axes[1], "GED", "lower")):
        values = [number(r[metric]) for r in rows]
        for i, (r, c, v) in enumerate(zip(rows, cost, values), start=1):
            ax.scatter([c], [v], color="tab:blue", label=f"{i}: {r['selection']}")
            ax.annotate(str(i), (c, v), textcoords="offset points", xytext=(4, 3), fontsize=8)
        ax.set_xlabel("MC cost, S = 8 (× 8 deterministic forwards)")
        ax.set_ylabel(f"{metric} ({better} is better)")
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False, handlelength=0, markerscale=0)
    fig.tight_layout(rect=(0, 0.22 * ((len(rows) + 1) // 2) / fig.get_figheight() + 0.02, 1, 1))
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(output) as tmp:
        fig.savefig(tmp, dpi=110, format="png", metadata={"Software": None})


#: columns of a results CSV that :func:`plot_results_csv` leaves out (counts and costs, not metrics)
RESULTS_CSV_SKIPPED = frozenset({"params", "Bayesian params", "train FLOPs", "train time (s)", "S", "folds"})


def parse_results_cell(cell: str) -> tuple[float, float] | None:
    """``"0.835 ± 0.151"`` → ``(0.835, 0.151)``, ``"0.0022"`` → ``(0.0022, 0.0)``, else ``None``.

    Parameters
    ----------
    cell : str
        A formatted cell of a results CSV (thin / normal spaces inside numbers are removed).

    Returns
    -------
    tuple of (float, float) or None
        Mean and spread, ``None`` for cells that are no number (``"–"``, text).
    """
    parts = [p.replace(" ", "").replace("\u2009", "").replace("−", "-") for p in cell.split("±")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        return None
    if len(values) == 1:
        return values[0], 0.0
    if len(values) == 2:
        return values[0], values[1]
    return None


def plot_results_csv(inputs: Sequence[Path], output: Path) -> None:
    """Fig.-4-like bars from a committed results table (a ``figures.json`` plotting function).

    One panel per metric column of the first CSV in ``inputs`` (first column: the run's label; a
    column is drawn when every cell is ``"mean ± std"`` or a number, except the counts and costs in
    :data:`RESULTS_CSV_SKIPPED`); when the CSV has an ``S`` column, only the rows with the largest
    ``S`` of each run are drawn.

    Parameters
    ----------
    inputs : Sequence of Path
        ``[results/<experiment>/<table>.csv]`` (further inputs are ignored).
    output : Path
        The PNG to write (byte-stable, see :func:`save_figure`).

    Raises
    ------
    ValueError
        If the CSV has no rows or no metric column.
    """
    import csv

    with open(inputs[0], newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{inputs[0]}: no rows to plot.")
    label = next(iter(rows[0]))
    if "S" in rows[0]:
        largest: dict[str, int] = {}
        for row in rows:
            s = int(row["S"]) if row["S"].isdigit() else 0
            largest[row[label]] = max(largest.get(row[label], 0), s)
        rows = [r for r in rows if (int(r["S"]) if r["S"].isdigit() else 0) == largest[r[label]]]
    columns = [
        c
        for c in rows[0]
        if c != label and c not in RESULTS_CSV_SKIPPED and all(parse_results_cell(r[c]) is not None for r in rows)
    ]
    if not columns:
        raise ValueError(f"{inputs[0]}: no column of numbers to plot.")
    summary = {r[label]: {c: parse_results_cell(r[c]) or (float("nan"), 0.0) for c in columns} for r in rows}
    plot_method_comparison(summary, columns, output)


def plot_latent_width_comparison(inputs: Sequence[Path], output: Path) -> None:
    """Seed 001 Fig. 7 on the Prob. U-Net latent: GED² of BN3 per kept latent dims, with the baselines as lines.

    One panel per sample count ``S``: the BN3 Prob. U-Net's mean GED² (± std over cases as a band) at every
    number of kept latent dimensions, and each baseline's mean GED² at the same ``S`` as a horizontal line.

    Parameters
    ----------
    inputs : Sequence of Path
        ``[latent_widths.csv, comparison.csv]`` of ``scripts/latent_width_sweep.py``: columns
        ``latent dims kept`` (``"w/L"``), ``S``, ``GED²``; and ``method``, ``S``, ``GED²``.
    output : Path
        The PNG to write (byte-stable, see :func:`save_figure`).

    Raises
    ------
    ValueError
        If the width table has no rows.
    """
    import csv

    with open(inputs[0], newline="", encoding="utf-8") as f:
        widths = list(csv.DictReader(f))
    with open(inputs[1], newline="", encoding="utf-8") as f:
        baselines = [r for r in csv.DictReader(f) if not r["method"].startswith("BN3 Prob. U-Net (all")]
    if not widths:
        raise ValueError(f"{inputs[0]}: no rows to plot.")
    counts = sorted({int(r["S"]) for r in widths})
    fig = Figure(figsize=(3.4 * len(counts), 3.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(counts), sharey=True))
    styles = ["--", ":", "-.", (0, (5, 1)), (0, (1, 1))]
    for ax, s in zip(axes, counts, strict=True):
        rows = [r for r in widths if int(r["S"]) == s]
        kept = [int(r["latent dims kept"].split("/")[0]) for r in rows]
        ged = np.array([parse_results_cell(r["GED²"]) or (float("nan"), 0.0) for r in rows])
        ax.plot(kept, ged[:, 0], "o-", color="C0", label="BN3 Prob. U-Net, fixed width")
        ax.fill_between(kept, ged[:, 0] - ged[:, 1], ged[:, 0] + ged[:, 1], color="C0", alpha=0.15)
        for i, row in enumerate(r for r in baselines if int(r["S"]) == s):
            mean, _ = parse_results_cell(row["GED²"]) or (float("nan"), 0.0)
            ax.axhline(mean, color=f"C{i + 1}", linestyle=styles[i % len(styles)], label=row["method"])
        ax.set_title(f"S = {s}")
        ax.set_xlabel("latent dimensions kept")
        ax.set_xticks(kept)
    axes[0].set_ylabel("GED² (d = 1 − IoU)")
    axes[-1].legend(fontsize=7, loc="upper right")
    save_figure(fig, output)


def pareto_front(cost: Sequence[float], quality: Sequence[float]) -> list[int]:
    """Indices of the points no other point beats in both (lower ``cost`` and higher ``quality``).

    Parameters
    ----------
    cost : sequence of float
        Lower is better (latency, bytes); NaN points are never on the front.
    quality : sequence of float
        Higher is better (Dice).

    Returns
    -------
    list of int
        Front indices sorted by cost.
    """
    points = [(c, q, i) for i, (c, q) in enumerate(zip(cost, quality)) if np.isfinite(c) and np.isfinite(q)]
    front = [i for c, q, i in points if not any((c2 <= c and q2 >= q) and (c2 < c or q2 > q) for c2, q2, _ in points)]
    return sorted(front, key=lambda i: cost[i])


def plot_deployer_pareto(inputs: list[Path], output: Path) -> None:
    """The deployer's Pareto figure: Dice vs latency per 128² patch and Dice vs bytes on disk (log x).

    One point per row of ``results/deployer/table.csv``, labelled with its row number (the key of numbers and
    method names is printed under the two panels, so that long names of close points do not overlap), error
    bars the sd over patches, the Pareto front (:func:`pareto_front`) joined by a line. Byte-stable PNG.

    Parameters
    ----------
    inputs : list of pathlib.Path
        ``[table.csv]`` with the columns ``method``, ``Dice``, ``ms per 128² patch`` and ``MB on disk``.
    output : pathlib.Path
        Where the PNG is written (atomically).

    Raises
    ------
    ValueError
        If the CSV lacks one of the columns.
    """
    import csv

    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    with open(inputs[0], newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    needed = ("method", "Dice", "ms per 128² patch", "MB on disk")
    missing = [c for c in needed if not rows or c not in rows[0]]
    if missing:
        raise ValueError(f"{inputs[0]} must have the columns {needed}; missing {missing}.")
    dice = [parse_results_cell(r["Dice"]) or (float("nan"), 0.0) for r in rows]
    key_rows = (len(rows) + 1) // 2
    height = 4.2 + 0.17 * key_rows
    fig = Figure(figsize=(11, height))
    axes = fig.subplots(1, 2)
    for ax, column, xlabel in (
        (axes[0], "ms per 128² patch", "latency per 128² patch, batch 1 (ms, log)"),
        (axes[1], "MB on disk", "bytes on disk (MB, log)"),
    ):
        cost = [(parse_results_cell(r[column]) or (float("nan"), 0.0))[0] for r in rows]
        quality = [d[0] for d in dice]
        ax.errorbar(cost, quality, yerr=[d[1] for d in dice], fmt="o", color="tab:blue", ecolor="0.7", capsize=2)
        front = pareto_front(cost, quality)
        ax.plot([cost[i] for i in front], [quality[i] for i in front], "--", color="tab:orange", label="Pareto front")
        for number, (c, q) in enumerate(zip(cost, quality), start=1):
            if np.isfinite(c):
                ax.annotate(str(number), (c, q), textcoords="offset points", xytext=(3, 3), fontsize=7)
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(xlabel)
        ax.set_ylabel("Dice (higher is better)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    key = [f"{number}  {r['method']}" for number, r in enumerate(rows, start=1)]
    key_top = (0.14 * key_rows + 0.05) / height
    for side, entries in enumerate((key[:key_rows], key[key_rows:])):
        fig.text(0.06 + 0.48 * side, key_top, "\n".join(entries), fontsize=7, va="top", ha="left")
    fig.tight_layout(rect=(0.0, key_top + 0.01, 1.0, 1.0))
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(output) as tmp:
        fig.savefig(tmp, dpi=110, format="png", metadata={"Software": None})
