"""The seed 003 figures (Fig. 1–5 equivalents, plus uncertainty vs PIEs), drawn from the committed CSV tables.

Every function has the results-contract signature ``plot(inputs: list[Path], output: Path) -> None``
(``scripts/make_results.py`` calls it from ``results/<experiment>/figures.json``) and saves a byte-stable PNG
(no ``Software`` metadata).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from monai_bayes.visualize import save_figure

__all__ = [
    "plot_fcd",
    "plot_forgettability",
    "plot_frequency_forgetting",
    "plot_mean_ap",
    "plot_pie_uncertainty",
    "plot_pies",
    "plot_size_bin_forgettability",
]

_META: dict[str, str | None] = {"Software": None}


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _num(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return float("nan")


def _column(rows: list[dict[str, str]], startswith: str) -> str:
    return next(k for k in rows[0] if k.startswith(startswith))


def plot_mean_ap(inputs: list[Path], output: Path) -> None:
    """Fig. 1: mean AP (median of runs) against sparsity per model family; log-magnitude weight histogram.

    Parameters
    ----------
    inputs : list of Path
        ``mean_ap.csv`` and optionally ``weight_histogram.csv``.
    output : Path
        PNG to write.
    """
    rows = _rows(inputs[0])
    fig = Figure(figsize=(10, 3.6))
    ax = fig.add_subplot(1, 2, 1)
    for model in dict.fromkeys(r["model"] for r in rows):
        sub = [r for r in rows if r["model"] == model]
        k = [_num(r["sparsity"]) for r in sub]
        ax.plot(k, [_num(r["mean AP (median of runs)"]) for r in sub], marker="o", ms=3, label=model)
        sig = [r for r in sub if _num(r["p"]) < 0.05 and _num(r["Welch t"]) < 0]
        if sig:
            ax.axvline(_num(sig[0]["sparsity"]), ls=":", lw=1, color=ax.lines[-1].get_color())
    ax.set(xlabel="sparsity k", ylabel="mean AP over classes", title="Mean AP (dotted: first significant drop)")
    ax.legend(fontsize=8)
    if len(inputs) > 1:
        hist = _rows(inputs[1])
        ax2 = fig.add_subplot(1, 2, 2)
        lo = [_num(r["log10 |w| from"]) for r in hist]
        hi = [_num(r["log10 |w| to"]) for r in hist]
        ax2.bar(lo, [_num(r["count"]) for r in hist], width=np.subtract(hi, lo), align="edge")
        ax2.set(xlabel="log10 |w|", ylabel="count", title="Weight magnitudes (one unpruned run)", yscale="log")
    save_figure(fig, output, metadata=_META)


def plot_forgettability(inputs: list[Path], output: Path) -> None:
    """Fig. 2: forgettability curves (median relative AP change) of every class, one panel per model family.

    Parameters
    ----------
    inputs : list of Path
        ``forgettability.csv``.
    output : Path
        PNG to write.
    """
    rows = _rows(inputs[0])
    models = list(dict.fromkeys(r["model"] for r in rows))
    classes = [c for c in rows[0] if c not in ("model", "sparsity")]
    fig = Figure(figsize=(5 * len(models), 3.8))
    for i, model in enumerate(models):
        ax = fig.add_subplot(1, len(models), i + 1)
        sub = [r for r in rows if r["model"] == model]
        k = [_num(r["sparsity"]) for r in sub]
        for c in classes:
            ax.plot(k, [_num(r[c]) for r in sub], lw=1, label=c)
        ax.set(xlabel="sparsity k", ylabel="relative change in AP (median of runs)", title=model)
        ax.axhline(0, color="k", lw=0.5)
    ax.legend(fontsize=6, ncol=2)
    save_figure(fig, output, metadata=_META)


def plot_frequency_forgetting(inputs: list[Path], output: Path) -> None:
    """Fig. 3: training class frequency vs the first forgetting sparsity and vs the forgetting at the largest k.

    Parameters
    ----------
    inputs : list of Path
        ``classes.csv``.
    output : Path
        PNG to write.
    """
    rows = _rows(inputs[0])
    f = np.array([_num(r["train frequency"]) for r in rows])
    first_col, last_col = _column(rows, "first k"), _column(rows, "forgetting at")
    fig = Figure(figsize=(10, 3.6))
    for i, col in enumerate((first_col, last_col)):
        ax = fig.add_subplot(1, 2, i + 1)
        v = [_num(r[col]) for r in rows]
        ax.scatter(f, v, s=14)
        for r, x, y in zip(rows, f, v, strict=True):
            ax.annotate(r["class"], (x, y), fontsize=6)
        ax.set(xscale="log", xlabel="training frequency", ylabel=col)
    save_figure(fig, output, metadata=_META)


def plot_fcd(inputs: list[Path], output: Path) -> None:
    """Fig. 4: FCD of every class pair against ``|Δ log frequency|`` and against ``IoU^(1/4)``.

    Parameters
    ----------
    inputs : list of Path
        ``pairs.csv``.
    output : Path
        PNG to write.
    """
    rows = _rows(inputs[0])
    fcd = [_num(r["FCD"]) for r in rows]
    fig = Figure(figsize=(10, 3.6))
    for i, col in enumerate(("|LogFreqDiff|", "IoU^(1/4)")):
        ax = fig.add_subplot(1, 2, i + 1)
        ax.scatter([_num(r[col]) for r in rows], fcd, s=10)
        ax.set(xlabel=col, ylabel="FCD (MSE between forgettability curves)")
    save_figure(fig, output, metadata=_META)


def plot_pies(inputs: list[Path], output: Path) -> None:
    """Fig. 5: class prevalence ratio and number-of-findings ratio, PIEs vs non-PIEs (1:1 dotted).

    Parameters
    ----------
    inputs : list of Path
        ``pie_classes.csv`` and ``pie_counts.csv``.
    output : Path
        PNG to write.
    """
    classes, counts = _rows(inputs[0]), _rows(inputs[1])
    fig = Figure(figsize=(10, 3.6))
    for i, (rows, key) in enumerate(((classes, "class"), (counts, "findings"))):
        ax = fig.add_subplot(1, 2, i + 1)
        ax.bar([r[key] for r in rows], [np.nan_to_num(_num(r["ratio"])) for r in rows])
        ax.axhline(1, ls=":", color="k")
        ax.set(ylabel="PIE / non-PIE ratio", xlabel=key)
        ax.tick_params(axis="x", labelrotation=60 if i == 0 else 0, labelsize=7)
    save_figure(fig, output, metadata=_META)


def plot_pie_uncertainty(inputs: list[Path], output: Path) -> None:
    """AUROC of each unpruned model's uncertainty score for flagging PIEs (0.5 dotted = chance).

    Parameters
    ----------
    inputs : list of Path
        ``pie_uncertainty.csv``.
    output : Path
        PNG to write.
    """
    rows = _rows(inputs[0])
    fig = Figure(figsize=(8, 3.6))
    ax = fig.add_subplot(1, 1, 1)
    labels = [f"{r['method']}\n{r['score']}" for r in rows]
    ax.barh(labels, [_num(r["AUROC for PIEs"]) for r in rows])
    ax.axvline(0.5, ls=":", color="k")
    ax.set(xlabel="AUROC (PIE vs non-PIE)", xlim=(0, 1))
    ax.tick_params(axis="y", labelsize=6)
    save_figure(fig, output, metadata=_META)


def plot_size_bin_forgettability(inputs: list[Path], output: Path) -> None:
    """Segmentation: forgettability curve per structure-size bin, and each run's per-bin mean Dice.

    Parameters
    ----------
    inputs : list of Path
        ``forgettability.csv`` (columns ``model``, ``sparsity``, one per bin) and optionally
        ``per_bin_dice.csv`` (columns ``run``, ``sparsity``, one per bin).
    output : Path
        PNG to write.
    """
    rows = _rows(inputs[0])
    bins = [c for c in rows[0] if c not in ("model", "sparsity")]
    fig = Figure(figsize=(10 if len(inputs) > 1 else 5, 3.8))
    ax = fig.add_subplot(1, len(inputs[:2]), 1)
    k = [_num(r["sparsity"]) for r in rows]
    for b in bins:
        ax.plot(k, [_num(r[b]) for r in rows], marker="o", ms=3, label=b)
    ax.axhline(0, color="k", lw=0.5)
    ax.axhline(-0.2, color="k", lw=0.5, ls=":")
    ax.set(
        xlabel="sparsity k", ylabel="relative change in mean Dice (median of runs)", title="Forgettability per size bin"
    )
    ax.legend(fontsize=7, title="equivalent diameter", title_fontsize=7)
    if len(inputs) > 1:
        dice = _rows(inputs[1])
        ax2 = fig.add_subplot(1, 2, 2)
        for j, b in enumerate(bins):
            color = f"C{j}"
            for run in dict.fromkeys(r["run"] for r in dice):
                sub = [r for r in dice if r["run"] == run]
                ax2.plot([_num(r["sparsity"]) for r in sub], [_num(r[b]) for r in sub], color=color, lw=1, alpha=0.7)
        ax2.set(xlabel="sparsity k", ylabel="mean Dice over the bin's test patches")
        ax2.set_title("Per-bin Dice, each run (colours as left)")
    save_figure(fig, output, metadata=_META)
