"""Samples × widths evaluation of nested (and baseline) segmentation networks, seed 001 §5.2 / Fig. 7.

:func:`evaluate_width_sweep` scores a network on multi-rater data for every width and sample count:
per case, the generalised energy distance (GED, ``d = 1 - IoU``), the Hungarian-matched IoU (HM-IoU) and
the sample diversity ``E[d(S, S')]`` -- all computed by :mod:`monai_bayes.metrics`. Samples are drawn with
:class:`~monai_bayes.inferers.MonteCarloInferer` at each fixed width (weight noise only, see
:mod:`monai_bayes.layers.nested`); the ``S`` of every smaller sample count are the first ``S`` of the
largest, so the sample counts are compared on the same draws. Batch norms can be recalibrated for each
width first (:func:`~monai_bayes.networks.recalibrate_batch_norm`); the network's own statistics, width,
mode and train/eval flag are restored afterwards.

Baselines (deterministic UNet, MC dropout, ensembles) go through the same function with ``widths=None``
(the network as it is). :func:`write_width_sweep_report` writes the table (CSV) and one figure per
metric in the style of seed 001 Fig. 7: a box plot of the per-case values of each width, one panel per
sample count, the mean as a black line in each box and the baselines' means as bold horizontal lines.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.inferers import Inferer, SimpleInferer
from torch import nn

from monai_bayes.inferers.monte_carlo import MonteCarloInferer
from monai_bayes.layers.base import stochastic_layers
from monai_bayes.layers.nested import nested_width, width_layers
from monai_bayes.metrics import PairwiseIoU, compute_pairwise_iou, ged_from_pairwise_iou, hm_iou_from_pairwise_iou
from monai_bayes.metrics.hungarian import check_hm_iou_options
from monai_bayes.networks.batch_norm import batch_norm_layers, recalibrate_batch_norm
from monai_bayes.uncertainty import Activation
from monai_bayes.utils.atomic import atomic_path
from monai_bayes.utils.options import look_up
from monai_bayes.utils.tensors import as_plain_tensor

__all__ = [
    "SWEEP_METRICS",
    "WidthSweepResult",
    "evaluate_width_sweep",
    "plot_width_sweep",
    "rater_masks",
    "write_width_sweep_report",
    "write_width_sweep_table",
]

#: per-case quantities of a sweep
SWEEP_METRICS: tuple[str, ...] = ("ged", "hm_iou", "sample_diversity")
_LABELS = {"ged": "GED (d = 1 - IoU)", "hm_iou": "HM-IoU", "sample_diversity": "sample diversity"}

Key = tuple[int | None, int]  # (width or None for the network as it is, number of samples)


@dataclass
class WidthSweepResult:
    """Per-case GED, HM-IoU and sample diversity of one network over widths × sample counts.

    Attributes
    ----------
    method
        display name (``"BN3"``, ``"MC dropout"``, ...).
    groups
        ``G`` of the nested layers, or ``None`` for a network without them.
    widths
        evaluated widths (``None``: the network as it is).
    num_samples
        evaluated sample counts.
    values
        ``{metric: {(width, S): (N,) float tensor}}`` on the CPU, one value per case.
    """

    method: str
    groups: int | None
    widths: list[int | None]
    num_samples: list[int]
    values: dict[str, dict[Key, torch.Tensor]] = field(default_factory=dict)

    def per_case(self, metric: str, width: int | None, samples: int) -> torch.Tensor:
        """``(N,)`` values of ``metric`` for one width and sample count."""
        if metric not in self.values:
            raise ValueError(f"metric must be one of {sorted(self.values)}, got {metric!r}.")
        try:
            return self.values[metric][(width, samples)]
        except KeyError:
            raise ValueError(
                f"({width}, {samples}) was not evaluated; widths {self.widths}, samples {self.num_samples}."
            ) from None

    def width_fraction(self, width: int | None) -> float:
        """``w / G`` (1.0 for the network as it is)."""
        return 1.0 if width is None or self.groups is None else width / self.groups

    def table(self) -> list[dict[str, Any]]:
        """One row per (width, S): method, width, groups, width_fraction, samples, cases, ``<metric>_mean/_std``."""
        rows = []
        for width in self.widths:
            for samples in self.num_samples:
                row: dict[str, Any] = {
                    "method": self.method,
                    "width": "full" if width is None else width,
                    "groups": "" if self.groups is None else self.groups,
                    "width_fraction": self.width_fraction(width),
                    "samples": samples,
                }
                for metric in SWEEP_METRICS:
                    v = self.per_case(metric, width, samples).double()
                    v = v[~torch.isnan(v)]
                    row["cases"] = int(v.numel())
                    row[f"{metric}_mean"] = float(v.mean()) if v.numel() else math.nan
                    row[f"{metric}_std"] = float(v.std(unbiased=False)) if v.numel() else math.nan
                rows.append(row)
        return rows


def rater_masks(label: torch.Tensor, num_classes: int, pred_dims: int) -> torch.Tensor:
    """Rater labels as ``(B, R, C, *sp)`` binary masks for predictions with ``pred_dims`` dims ``(B, S, C, *sp)``.

    ``label``: ``(B, R, C, *sp)`` (used as is) or ``(B, R, *sp)`` -- the multi-rater stack of the data
    pipeline (raters as channels): binary masks for a one-channel (sigmoid) network, class indices
    (one-hot encoded here) for a ``C``-class softmax network.
    """
    if label.dim() == pred_dims:
        return label
    if label.dim() != pred_dims - 1:
        raise ValueError(
            f"labels must be (B, R, *spatial) or (B, R, C, *spatial) for predictions with {pred_dims} dims, "
            f"got shape {tuple(label.shape)}."
        )
    if num_classes == 1:
        return label.unsqueeze(2)
    onehot = F.one_hot(label.long(), num_classes)  # (B, R, *sp, C)
    return onehot.movedim(-1, 2)


@contextmanager
def _evaluation_state(network: nn.Module) -> Iterator[None]:
    """Eval mode; batch-norm statistics and train flags restored on exit."""
    flags = {m: m.training for m in network.modules()}
    saved = {name: {k: v.clone() for k, v in m.state_dict().items()} for name, m in batch_norm_layers(network)}
    network.eval()
    try:
        yield
    finally:
        modules = dict(network.named_modules())
        for name, state in saved.items():
            modules[name].load_state_dict(state)
        for m, flag in flags.items():
            m.training = flag


def _nested_groups(network: nn.Module) -> int | None:
    groups = {layer.nested_groups for _, layer in width_layers(network)}
    if len(groups) > 1:
        raise ValueError(f"the nested layers use different group counts {sorted(groups)}; widths are ambiguous.")
    return groups.pop() if groups else None


def _check_sweep_args(network: nn.Module, widths: Sequence[int] | None, num_samples: Sequence[int]) -> list:
    if not num_samples or any(not isinstance(s, int) or s < 1 for s in num_samples):
        raise ValueError(f"num_samples must be a non-empty sequence of positive ints, got {num_samples!r}.")
    if widths is None:
        return [None]
    if _nested_groups(network) is None:
        raise ValueError(f"widths={list(widths)} need a nested network (to_nested); use widths=None for baselines.")
    return list(widths)


def evaluate_width_sweep(
    network: nn.Module,
    data: Iterable[Mapping[str, Any]],
    *,
    widths: Sequence[int] | None = None,
    num_samples: Sequence[int] = (1, 4, 8, 16),
    method: str | None = None,
    activation: str = "softmax",
    image_key: str = "image",
    label_key: str = "label",
    inferer: Inferer | None = None,
    chunk_size: int | None = None,
    recalibration_data: Iterable[Any] | None = None,
    recalibration_batches: int | None = None,
    recalibration_mode: str = "sample",
    include_background: bool = False,
    empty_policy: str = "match",
    seed: int | None = 0,
    device: torch.device | str | None = None,
    prepare_recalibration_batch: Callable[..., Any] | None = None,
) -> WidthSweepResult:
    """GED, HM-IoU and sample diversity of ``network`` for every width × sample count (seed 001 Fig. 7).

    Parameters
    ----------
    network
        a nested network (:func:`~monai_bayes.networks.to_nested`) or any baseline.
    data
        evaluation batches, dicts with ``image_key`` ``(B, C_in, *sp)`` and ``label_key`` holding all
        raters (see :func:`rater_masks`).
    widths
        numbers of kept groups to evaluate (e.g. ``[6, 8, 12, 16, 24, 32]``); ``None``: the network
        as it is (baselines; for a nested network: sampled widths).
    num_samples
        sample counts ``S``; ``max(S)`` samples are drawn per case and the first ``S`` used.
    method
        name in the table and figure (default: ``"BN3"`` for a nested network, else the class name).
    activation
        ``"softmax"`` (predictions = argmax, one-hot) or ``"sigmoid"`` (threshold 0.5).
    inferer
        inner inferer of the :class:`~monai_bayes.inferers.MonteCarloInferer` (e.g. sliding window).
    chunk_size
        MC samples per forward pass (memory bound).
    recalibration_data, recalibration_batches, recalibration_mode
        if data are given, batch-norm
        statistics are re-estimated for every width first (:func:`~monai_bayes.networks.recalibrate_batch_norm`).
    include_background, empty_policy
        passed to :func:`~monai_bayes.metrics.compute_ged` /
        :func:`~monai_bayes.metrics.compute_hm_iou`.
    seed
        noise seed; batch ``i`` uses ``seed + i`` so the draws are reproducible but differ per batch
        (the recalibration passes use ``seed``).
    device
        where to run (default: the network's device).
    """
    activation = look_up("activation", activation, Activation).value
    width_list = _check_sweep_args(network, widths, num_samples)
    samples_list = sorted(set(num_samples))
    device = device or next(network.parameters()).device
    binarize: str | float = "argmax" if activation == "softmax" else 0.5
    groups = _nested_groups(network)
    if method is None:
        method = "BN3" if groups is not None else type(network).__name__
    result = WidthSweepResult(method, groups, width_list, samples_list)
    collected: dict[str, dict[Key, list[torch.Tensor]]] = {m: {} for m in SWEEP_METRICS}
    check_hm_iou_options("mean", empty_policy)
    pairwise_kwargs: dict[str, Any] = {
        "include_background": include_background,
        "empty_policy": empty_policy,
        "binarize": binarize,
    }
    for width in width_list:
        with ExitStack() as stack:
            if width is not None:
                stack.enter_context(nested_width(network, width))
            stack.enter_context(_evaluation_state(network))
            if recalibration_data is not None:
                kwargs: dict[str, Any] = (
                    {} if prepare_recalibration_batch is None else {"prepare_batch": prepare_recalibration_batch}
                )
                recalibrate_batch_norm(
                    network, recalibration_data, num_batches=recalibration_batches, mode=recalibration_mode,
                    device=device, seed=seed, **kwargs,
                )  # fmt: skip
            stack.enter_context(torch.no_grad())
            for index, batch in enumerate(data):
                image = as_plain_tensor(torch.as_tensor(batch[image_key])).to(device)
                probs = _draw_samples(
                    network, image, max(samples_list), inferer, chunk_size, activation,
                    None if seed is None else seed + index,
                )  # fmt: skip
                label = as_plain_tensor(torch.as_tensor(batch[label_key])).to(device)
                raters = rater_masks(label, probs.shape[2], probs.dim())
                pairwise = compute_pairwise_iou(probs, raters, **pairwise_kwargs)  # once for the largest S
                for samples in samples_list:
                    values = _sweep_values(pairwise, samples)
                    for metric, v in values.items():
                        collected[metric].setdefault((width, samples), []).append(v.reshape(v.shape[0], -1).mean(1))
    for metric, per_key in collected.items():
        result.values[metric] = {key: torch.cat(parts).float().cpu() for key, parts in per_key.items()}
    if not result.values["ged"]:
        raise ValueError("evaluate_width_sweep: data yielded no batch.")
    return result


def _sweep_values(pairwise: PairwiseIoU, samples: int) -> dict[str, torch.Tensor]:
    """GED, HM-IoU and sample diversity of the first ``samples`` samples from the pairwise IoU of all of them.

    The IoU of a pair does not depend on the other samples, so the first ``S`` samples' IoU are the
    leading ``S`` rows / columns of the matrices computed once for the largest sample count.

    Parameters
    ----------
    pairwise : PairwiseIoU
        ``compute_pairwise_iou(..., within_sets=True)`` of all drawn samples: (B, K, S_max, R),
        (B, K, S_max, S_max) and (B, K, R, R).
    samples : int
        Sample count ``S <= S_max``.

    Returns
    -------
    dict of str to torch.Tensor
        ``{"ged", "hm_iou", "sample_diversity"}``, each (B, K).
    """
    assert pairwise.sample_sample is not None
    subset = PairwiseIoU(
        pairwise.sample_rater[..., :samples, :],
        pairwise.sample_sample[..., :samples, :samples],
        pairwise.rater_rater,
    )
    ged = ged_from_pairwise_iou(subset)
    hm = hm_iou_from_pairwise_iou(subset.sample_rater)
    return {"ged": ged.ged, "hm_iou": hm, "sample_diversity": ged.sample_diversity}


def _draw_samples(
    network: nn.Module,
    x: torch.Tensor,
    num_samples: int,
    inferer: Inferer | None,
    chunk_size: int | None,
    activation: str,
    seed: int | None,
) -> torch.Tensor:
    """``(B, S, C, *sp)`` probabilities; a network without stochastic layers runs once (its samples are identical)."""
    if stochastic_layers(network):
        mc = MonteCarloInferer(num_samples, inferer=inferer, chunk_size=chunk_size, activation=activation, seed=seed)
        return mc(x, network)
    logits = (inferer or SimpleInferer())(x, network)
    probs = torch.softmax(logits, dim=1) if activation == "softmax" else torch.sigmoid(logits)
    return probs.unsqueeze(1).expand(-1, num_samples, *probs.shape[1:])


# ----------------------------------------------------------------------------------------- output
def write_width_sweep_table(results: Sequence[WidthSweepResult], path: str | os.PathLike) -> Path:
    """Write the rows of :meth:`WidthSweepResult.table` of all ``results`` to one CSV file (atomic rename)."""
    rows = [row for r in results for row in r.table()]
    if not rows:
        raise ValueError("results hold no rows to write.")
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def plot_width_sweep(
    result: WidthSweepResult,
    baselines: Sequence[WidthSweepResult] = (),
    metric: str = "ged",
    title: str | None = None,
) -> Any:
    """A figure like seed 001 Fig. 7: per-case ``metric`` of each width as a box plot, one panel per ``S``.

    The mean of each box is a black line; each baseline's mean (its widest evaluated width) for the
    same ``S`` is a bold horizontal line. Returns a :class:`matplotlib.figure.Figure` (no pyplot state).
    """
    from matplotlib.figure import Figure

    if metric not in SWEEP_METRICS:
        raise ValueError(f"metric must be one of {SWEEP_METRICS}, got {metric!r}.")
    panels = result.num_samples
    fig = Figure(figsize=(3.6 * len(panels), 3.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels), sharey=True))
    positions = np.arange(len(result.widths))
    colours = ["tab:red", "tab:blue", "tab:green", "tab:purple", "tab:brown", "tab:olive"]
    for ax, samples in zip(axes, panels):
        data = []
        for width in result.widths:
            v = result.per_case(metric, width, samples).numpy()
            data.append(v[~np.isnan(v)])
        ax.boxplot(
            data, positions=positions, widths=0.6, showmeans=True, meanline=True, showfliers=False,
            patch_artist=True, boxprops={"facecolor": "lightsteelblue", "edgecolor": "dimgray"},
            meanprops={"color": "black", "linestyle": "-", "linewidth": 1.5},
            medianprops={"color": "tab:orange", "linewidth": 1.0},
        )  # fmt: skip
        for i, base in enumerate(baselines):
            if samples not in base.num_samples:
                continue
            mean = float(np.nanmean(base.per_case(metric, base.widths[-1], samples).numpy()))
            ax.axhline(mean, color=colours[i % len(colours)], linewidth=2.5, label=base.method)
        ax.set_xticks(positions, [f"{100 * result.width_fraction(w):.1f}" for w in result.widths], rotation=45)
        ax.set_title(f"{samples} sample{'s' if samples > 1 else ''}")
        ax.set_xlabel("width (%)")
    axes[0].set_ylabel(f"{_LABELS[metric]} -- {result.method}")
    if baselines:
        axes[-1].legend(loc="best", fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


def write_width_sweep_report(
    results: Sequence[WidthSweepResult],
    output_dir: str | os.PathLike,
    *,
    prefix: str = "width_sweep",
    metrics: Sequence[str] = SWEEP_METRICS,
    figure_format: str = "png",
) -> dict[str, Path]:
    """Write ``<prefix>.csv`` (all results) and ``<prefix>_<metric>.<format>`` figures to ``output_dir``.

    The figures show the first result with more than one width as boxes and every other result as a
    baseline line. Returns ``{"table": path, <metric>: path, ...}``.
    """
    if not results:
        raise ValueError("results must hold at least one WidthSweepResult.")
    out = Path(output_dir)
    paths = {"table": write_width_sweep_table(results, out / f"{prefix}.csv")}
    main = next((r for r in results if len(r.widths) > 1), results[0])
    baselines = [r for r in results if r is not main]
    for metric in metrics:
        fig = plot_width_sweep(main, baselines, metric)
        path = out / f"{prefix}_{metric}.{figure_format}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=figure_format, dpi=150)
        paths[metric] = path
    return paths
