"""The seed's figures (seed 002, Fig. 1–3) and sparsity-vs-quality curves from the committed result tables.

Each function has the results contract's signature ``plot(inputs: list[Path], output: Path) -> None``
(``scripts/make_results.py`` calls it from ``results/bmr/figures.json``) and reads the CSV files that
``scripts/bmr_experiment.py`` writes. PNGs are saved without a software tag, so they are byte-stable.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

from matplotlib.figure import Figure

from monai_bayes.utils.atomic import atomic_path

__all__ = ["plot_abs_mean_cdf", "plot_pruned_per_layer", "plot_sparsity_quality", "plot_training_curves"]


def _read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path}: no rows.")
    return rows


def _one_input(inputs: list[Path], what: str) -> list[dict[str, str]]:
    if len(inputs) != 1:
        raise ValueError(f"{what} takes one CSV file, got {len(inputs)}: {inputs}.")
    return _read(Path(inputs[0]))


def _require(rows: list[dict[str, str]], path: Path | str, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in rows[0]]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}; has {list(rows[0])}.")


def _save(fig: Figure, output: Path) -> None:
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(output) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png", metadata={"Software": None})


def plot_training_curves(inputs: list[Path], output: Path) -> None:
    """Fig. 1: Dice, ECE and NLL per epoch for MAP / Flat-FF / Tiered-FF / BMR-S&S (``curves.csv``).

    Parameters
    ----------
    inputs : list of Path
        ``[curves.csv]`` with columns ``method, epoch, Dice, ECE, NLL``.
    output : Path
        The PNG to write.
    """
    rows = _one_input(inputs, "plot_training_curves")
    _require(rows, inputs[0], ("method", "epoch", "Dice", "ECE", "NLL"))
    fig = Figure(figsize=(11, 3.2))
    axes = fig.subplots(1, 3)
    by_method: dict[str, list[dict[str, str]]] = defaultdict(list)
    for r in rows:
        by_method[r["method"]].append(r)
    for ax, metric in zip(axes, ("Dice", "ECE", "NLL")):
        for method, rs in by_method.items():
            ax.plot([int(r["epoch"]) for r in rs], [float(r[metric]) for r in rs], marker="o", ms=3, label=method)
        ax.set_xlabel("epoch")
        ax.set_title(metric)
    axes[0].legend(fontsize=8)
    _save(fig, output)


def plot_pruned_per_layer(inputs: list[Path], output: Path) -> None:
    """Fig. 2: fraction pruned per layer and in total after each BMR pass (``pruned_per_layer.csv``).

    Parameters
    ----------
    inputs : list of Path
        ``[pruned_per_layer.csv]`` with columns ``layer, entries, pass 1, ...`` (last row ``total``).
    output : Path
        The PNG to write.
    """
    rows = _one_input(inputs, "plot_pruned_per_layer")
    _require(rows, inputs[0], ("layer",))
    passes = [c for c in rows[0] if c.startswith("pass ")]
    fig = Figure(figsize=(max(6.0, 0.45 * len(rows)), 3.6))
    ax = fig.subplots()
    width = 0.8 / max(len(passes), 1)
    for k, column in enumerate(passes):
        ax.bar([i + k * width for i in range(len(rows))], [float(r[column]) for r in rows], width, label=column)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(rows))])
    ax.set_xticklabels([r["layer"] for r in rows], rotation=70, ha="right", fontsize=7)
    ax.set_ylabel("fraction pruned")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    _save(fig, output)


def plot_abs_mean_cdf(inputs: list[Path], output: Path) -> None:
    """Fig. 3: per-layer CDF of |posterior mean| for BMR-S&S vs Tiered-FF (``cdf_abs_mean.csv``).

    Parameters
    ----------
    inputs : list of Path
        ``[cdf_abs_mean.csv]`` with columns ``method, layer, threshold, fraction <= threshold``.
    output : Path
        The PNG to write.
    """
    rows = _one_input(inputs, "plot_abs_mean_cdf")
    _require(rows, inputs[0], ("method", "layer", "threshold", "fraction <= threshold"))
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    cols = min(4, len(layers))
    nrows = -(-len(layers) // cols)
    fig = Figure(figsize=(3.0 * cols, 2.4 * nrows))
    axes = fig.subplots(nrows, cols, squeeze=False)
    for ax, layer in zip(axes.flat, layers):
        for method in dict.fromkeys(r["method"] for r in rows):
            rs = [r for r in rows if r["layer"] == layer and r["method"] == method]
            ax.plot([float(r["threshold"]) for r in rs], [float(r["fraction <= threshold"]) for r in rs], label=method)
        ax.set_xscale("log")
        ax.set_title(layer, fontsize=6)
        ax.set_ylim(0, 1)
    for ax in list(axes.flat)[len(layers) :]:
        ax.set_visible(False)
    axes[0][0].legend(fontsize=7)
    axes[0][0].set_ylabel("fraction ≤ |μ|")
    _save(fig, output)


def plot_sparsity_quality(inputs: list[Path], output: Path) -> None:
    """Sparsity vs Dice for BMR vs magnitude / SNR / random pruning (``sparsity_quality.csv``).

    Parameters
    ----------
    inputs : list of Path
        ``[sparsity_quality.csv]`` with columns ``method, pruned, Dice``.
    output : Path
        The PNG to write.
    """
    rows = _one_input(inputs, "plot_sparsity_quality")
    _require(rows, inputs[0], ("method", "pruned", "Dice"))
    fig = Figure(figsize=(5.5, 3.8))
    ax = fig.subplots()
    for method in dict.fromkeys(r["method"] for r in rows):
        rs = sorted((float(r["pruned"]), float(r["Dice"])) for r in rows if r["method"] == method)
        style = "o" if len(rs) == 1 else "o-"
        ax.plot([x for x, _ in rs], [y for _, y in rs], style, ms=4, label=method)
    ax.set_xlabel("fraction of weights pruned")
    ax.set_ylabel("Dice (posterior samples, majority vote)")
    ax.legend(fontsize=8)
    _save(fig, output)
