"""From pruning sweeps to the published tables (results contract) and a Markdown report (seed 003 §3).

:func:`analyze_pruning` runs every statistic of :mod:`monai_bayes.pruning.analysis` on one or more sweeps
(e.g. the deterministic runs and the sparse-Bayes posterior means) and returns :class:`PruningTables`: one list
of rows per CSV, each cell already formatted as the docs show it. :func:`write_pruning_results` writes the CSVs,
``report.md``, ``figures.json`` (the plots of :mod:`monai_bayes.pruning.figures`) and ``provenance.json``.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from monai_bayes.metrics.classification import image_uncertainty
from monai_bayes.pruning.analysis import (
    disease_count_distribution,
    fcd_pairs,
    fcd_regression,
    first_forgotten_k,
    first_significant_k,
    forgettability_curves,
    frequency_correlation,
    per_image_spearman,
    pie_auroc,
    prevalence_ratio,
    select_pies,
    welch_mean_ap,
)
from monai_bayes.pruning.sweep import PruningSweep
from monai_bayes.utils.atomic import atomic_write_json, atomic_write_text

__all__ = ["FIGURES", "PruningTables", "analyze_pruning", "markdown_table", "write_pruning_results"]

Row = dict[str, str]

#: the figures of a results folder: output name → (plotting function, input tables)
FIGURES: dict[str, tuple[str, tuple[str, ...]]] = {
    "pruning_mean_ap.png": ("plot_mean_ap", ("mean_ap.csv", "weight_histogram.csv")),
    "pruning_forgettability.png": ("plot_forgettability", ("forgettability.csv",)),
    "pruning_frequency.png": ("plot_frequency_forgetting", ("classes.csv",)),
    "pruning_fcd.png": ("plot_fcd", ("pairs.csv",)),
    "pruning_pies.png": ("plot_pies", ("pie_classes.csv", "pie_counts.csv")),
    "pruning_pie_uncertainty.png": ("plot_pie_uncertainty", ("pie_uncertainty.csv",)),
}


def _f(x: float, digits: int = 3) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def _p(x: float) -> str:
    return "n/a" if not np.isfinite(x) else f"{x:.2e}" if x < 1e-3 else f"{x:.3f}"


@dataclass
class PruningTables:
    """Rows of every table (cells formatted) plus the headline numbers for the report."""

    tables: dict[str, list[Row]] = field(default_factory=dict)
    headline: dict[str, Any] = field(default_factory=dict)


def analyze_pruning(
    sweeps: Mapping[str, PruningSweep],
    train_labels: np.ndarray,
    class_names: Sequence[str],
    *,
    magnitudes: np.ndarray | None = None,
    uncertainty_samples: Mapping[str, np.ndarray] | None = None,
    reference: str | None = None,
    pie_sparsity: float = 0.9,
    pie_fraction: float = 0.05,
    drop: float = 0.2,
    alpha: float = 0.05,
) -> PruningTables:
    """Every statistic of seed 003 (and uncertainty vs PIEs) as formatted tables.

    Parameters
    ----------
    sweeps : mapping of str to PruningSweep
        ``{model family: sweep}``; all on the same test images and sparsities.
    train_labels : np.ndarray
        ``(N_train, C)`` training labels (class frequency, co-occurrence IoU).
    class_names : sequence of str
        ``C`` names.
    magnitudes : np.ndarray, optional
        Prunable weight magnitudes of one unpruned model (Fig. 1 right).
    uncertainty_samples : mapping of str to np.ndarray, optional
        ``{method: (N, S, C)}`` unpruned test probability samples whose per-image uncertainty is scored against
        the PIEs.
    reference : str, optional
        The family whose per-class curves, FCD and PIEs are reported (default: the first).
    pie_sparsity : float
        The ``k`` of the PIE comparison (seed: 0.9).
    pie_fraction : float
        Bottom fraction that are PIEs (seed: 5 %).
    drop : float
        Relative AP drop that counts as forgotten (seed: 0.2).
    alpha : float
        Significance level of Welch's test.

    Returns
    -------
    PruningTables
        Tables ``mean_ap``, ``forgettability``, ``classes``, ``frequency_correlations``, ``pairs``,
        ``fcd_ols``, ``pie_classes``, ``pie_counts``, ``pie_uncertainty``, ``weight_histogram``.

    Raises
    ------
    ValueError
        If ``pie_sparsity`` is not one of the swept sparsities.
    """
    ref_name = reference or next(iter(sweeps))
    ref = sweeps[ref_name]
    ks = ref.sparsities
    if not np.isclose(ks, pie_sparsity).any():
        raise ValueError(f"pie_sparsity {pie_sparsity} is not a swept sparsity {list(ks)}.")
    out = PruningTables()
    y_train = np.asarray(train_labels).astype(bool)
    freq = y_train.mean(axis=0)
    # Fig. 1 and the sparse-Bayes vs deterministic comparison
    rows: list[Row] = []
    curves_by = {}
    for name, sw in sweeps.items():
        welch = welch_mean_ap(sw.ap, ks)
        curves_by[name] = forgettability_curves(sw.ap)
        rel = np.median((welch.mean_ap - welch.mean_ap[:, :1]) / welch.mean_ap[:, :1], axis=0)
        out.headline[f"first_significant_k[{name}]"] = first_significant_k(welch, alpha)
        for i, k in enumerate(ks):
            rows.append(
                {
                    "model": name,
                    "sparsity": f"{k:.2f}",
                    "mean AP (median of runs)": _f(float(np.median(welch.mean_ap[:, i]))),
                    "relative change": _f(float(rel[i])),
                    "Welch t": _f(float(welch.t[i]), 2),
                    "p": _p(float(welch.p[i])),
                    "sparsity reached": _f(float(sw.reached[:, i].mean()), 4),
                }
            )
    out.tables["mean_ap"] = rows
    curves = curves_by[ref_name]
    out.tables["forgettability"] = [
        {"model": name, "sparsity": f"{k:.2f}", **{c: _f(float(v)) for c, v in zip(class_names, cv[i], strict=True)}}
        for name, cv in curves_by.items()
        for i, k in enumerate(ks)
    ]
    # Fig. 3
    first = first_forgotten_k(curves, ks, drop)
    last = curves[-1]
    ap0 = ref.ap[:, 0].mean(axis=0)
    out.tables["classes"] = [
        {
            "class": c,
            "train count": str(int(y_train[:, j].sum())),
            "train frequency": f"{freq[j]:.4f}",
            "AP unpruned (mean of runs)": _f(float(ap0[j])),
            f"first k with ≥{drop:.0%} drop": f"{first[j]:.2f}",
            f"forgetting at k={ks[-1]:.2f}": _f(float(last[j])),
        }
        for j, c in enumerate(class_names)
    ]
    corr_rows = []
    for label, values in ((f"first k with ≥{drop:.0%} drop", first), (f"forgetting at k={ks[-1]:.2f}", last)):
        r = frequency_correlation(freq, values)
        corr_rows.append(
            {
                "quantity": label,
                "Pearson r (log10 freq)": _f(r.pearson_r),
                "Pearson p": _p(r.pearson_p),
                "Spearman ρ": _f(r.spearman_rho),
                "Spearman p": _p(r.spearman_p),
                "classes": str(r.n),
            }
        )
    out.tables["frequency_correlations"] = corr_rows
    # Fig. 4 / eq. 2
    pairs = fcd_pairs(curves, y_train)
    out.tables["pairs"] = [
        {
            "class a": class_names[a],
            "class b": class_names[b],
            "FCD": f"{f:.6g}",
            "|LogFreqDiff|": f"{d:.6f}",
            "IoU^(1/4)": f"{q:.6f}",
        }
        for a, b, f, d, q in zip(pairs.a, pairs.b, pairs.fcd, pairs.abs_log_freq_diff, pairs.iou_quarter, strict=True)
    ]
    fit = fcd_regression(pairs)
    out.tables["fcd_ols"] = [
        {"term": n, "coefficient": f"{c:.4f}", "SE": f"{s:.4f}", "t": f"{t:.2f}", "p": _p(p)}
        for n, c, s, t, p in zip(fit.names, fit.coef, fit.se, fit.t, fit.p, strict=True)
    ]
    out.headline["fcd_ols_r2"], out.headline["fcd_ols_n"] = fit.r2, fit.n
    # Fig. 5: PIEs of the reference family
    k_index = int(np.flatnonzero(np.isclose(ks, pie_sparsity))[0])
    rho = per_image_spearman(ref.mean_predictions(0), ref.mean_predictions(k_index))
    pies = select_pies(rho, pie_fraction)
    out.headline["num_pies"], out.headline["num_test"] = int(pies.sum()), len(pies)
    y_test = ref.labels.astype(bool)
    ratio = prevalence_ratio(y_test, pies)
    out.tables["pie_classes"] = [
        {
            "class": c,
            "prevalence in PIEs": _f(float(y_test[pies, j].mean())),
            "prevalence in non-PIEs": _f(float(y_test[~pies, j].mean())),
            "ratio": _f(float(ratio[j]), 2),
        }
        for j, c in enumerate(class_names)
    ]
    pie, non, cr = disease_count_distribution(y_test, pies, 4)
    out.tables["pie_counts"] = [
        {"findings": f"{d}" if d < 4 else "4+", "PIEs": _f(pie[d]), "non-PIEs": _f(non[d]), "ratio": _f(cr[d], 2)}
        for d in range(5)
    ]
    # beyond the seed: unpruned uncertainty vs PIEs (the reference runs themselves form an ensemble)
    samples = {f"{ref_name} runs (ensemble of {ref.probs.shape[0]})": np.transpose(ref.probs[:, 0], (1, 0, 2))}
    samples.update(dict(uncertainty_samples or {}))
    unc_rows = []
    for method, s in samples.items():
        scores = image_uncertainty(s)
        if s.shape[1] == 1:
            scores = {"entropy": scores["entropy"]}
        for score, value in pie_auroc(scores, pies).items():
            unc_rows.append({"method": method, "score": score, "AUROC for PIEs": _f(value)})
    out.tables["pie_uncertainty"] = unc_rows
    if magnitudes is not None:
        m = np.asarray(magnitudes, dtype=float)
        edges = np.linspace(-6, 1, 29)
        counts, _ = np.histogram(np.log10(np.clip(m, 1e-6, None)), bins=edges)
        out.tables["weight_histogram"] = [
            {"log10 |w| from": f"{a:.2f}", "log10 |w| to": f"{b:.2f}", "count": str(int(n))}
            for a, b, n in zip(edges[:-1], edges[1:], counts, strict=True)
        ]
        out.headline["fraction_below_0.01"] = float((m < 0.01).mean())
    out.headline["reference"] = ref_name
    out.headline["pie_sparsity"], out.headline["pie_fraction"] = pie_sparsity, pie_fraction
    return out


def markdown_table(rows: Sequence[Row]) -> str:
    """The Markdown rendering of the results contract: header, ``|---|`` rule, one line per row, cells verbatim.

    Parameters
    ----------
    rows : sequence of dict
        Rows with the same keys.

    Returns
    -------
    str
        The table, ending in a newline.
    """
    if not rows:
        return ""
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(r[c] for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _csv_text(rows: Sequence[Row]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_pruning_results(
    tables: PruningTables,
    out_dir: str | os.PathLike[str],
    provenance: Mapping[str, Any],
    *,
    experiment: str | None = None,
    image_dir: str = "docs/images",
    extra_tables: Mapping[str, Sequence[Row]] | None = None,
) -> Path:
    """Write the tables (CSV), ``report.md``, ``figures.json`` and ``provenance.json`` to ``out_dir``.

    Parameters
    ----------
    tables : PruningTables
        From :func:`analyze_pruning`.
    out_dir : str or os.PathLike
        ``results/<experiment>``.
    provenance : mapping
        ``command``, ``commit``, ``seed``, ``machine``, ``date``, ``notes`` (results contract).
    experiment : str, optional
        Name in the report's table markers (default: the folder name).
    image_dir : str
        Where ``figures.json`` says the PNGs go (relative to the repository root).
    extra_tables : mapping of str to rows, optional
        More tables to write and report (e.g. the methods' metrics, timing).

    Returns
    -------
    Path
        ``out_dir``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = experiment or out.name
    all_tables = dict(extra_tables or {})
    all_tables.update(tables.tables)
    for table, rows in all_tables.items():
        if rows:
            atomic_write_text(out / f"{table}.csv", _csv_text(rows))
    atomic_write_json(out / "provenance.json", dict(provenance))
    figures = [
        {
            "output": f"{image_dir}/{fig}",
            "function": f"monai_bayes.pruning.figures:{fn}",
            "inputs": [f"results/{name}/{i}" for i in inputs],
        }
        for fig, (fn, inputs) in FIGURES.items()
        if all(all_tables.get(i.removesuffix(".csv")) for i in inputs)
    ]
    atomic_write_json(out / "figures.json", figures)
    h = tables.headline
    text = [f"# Pruning impact report ({name})", "", f"Command: `{provenance.get('command', '')}`", ""]
    text += [f"Reference model family: {h.get('reference')}; PIEs: bottom {h.get('pie_fraction', 0):.0%} at "]
    text[-1] += f"k = {h.get('pie_sparsity')} ({h.get('num_pies')} of {h.get('num_test')} test images)."
    for key, value in h.items():
        if key.startswith("first_significant_k"):
            text.append(f"- {key}: {_f(value, 2)}")
    text.append(f"- FCD OLS: n = {h.get('fcd_ols_n')}, R² = {_f(h.get('fcd_ols_r2', float('nan')))}")
    if "fraction_below_0.01" in h:
        text.append(f"- fraction of prunable weights with |w| < 0.01: {_f(h['fraction_below_0.01'])}")
    for table, rows in all_tables.items():
        if rows:
            text += ["", f"## {table}", "", f"<!-- results-table: {name}/{table}.csv -->"]
            text += [markdown_table(rows).rstrip("\n"), "<!-- /results-table -->"]
    atomic_write_text(out / "report.md", "\n".join(text) + "\n")
    return out
