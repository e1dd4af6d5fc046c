"""Ignite handlers for the ``monai_bayes.metrics`` metrics (MONAI ``IgniteMetricHandler`` wrappers).

Every handler reads ``(y_pred, y) = output_transform(engine.state.output)`` once per iteration, with

* ``y_pred``: Monte Carlo prediction samples, (B, S, C, *spatial) (or a list of (S, C, *spatial) tensors);
  binary masks for GED / HM-IoU (or probabilities with ``binarize=``), probabilities for the others;
* ``y``: **all** rater masks of the case, (B, R, C, *spatial); unused by :class:`EntropyVolume`.

For example ``output_transform=monai.handlers.from_engine(["pred_samples", "label_raters"])``.

A handler stores its main value under its attach name in ``engine.state.metrics`` and, with
``report_all=True`` (default), every further quantity under ``f"{name}_{quantity}"`` (e.g. ``GED_sample_diversity``).
With ``save_details=True`` the per-case values go to ``engine.state.metric_details`` under the same keys, as
(N, K) tensors, so MONAI's :class:`~monai.handlers.MetricsSaver` or :class:`PerCaseMetricsSaver` can write them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from ignite.engine import Engine
from ignite.metrics.metric import reinit__is_reduced
from monai.handlers import IgniteMetricHandler, MetricsSaver
from monai.metrics import CumulativeIterationMetric
from monai.utils import MetricReduction, string_list_all_gather

from monai_bayes.metrics import (
    BrierScoreMetric,
    EntropyVolumeMetric,
    GeneralizedEnergyDistanceMetric,
    HungarianMatchedIoUMetric,
    MultiQuantityMetric,
    MultiRaterMetric,
    NegativeLogLikelihoodMetric,
    SoftDiceMetric,
    write_per_case_report,
)
from monai_bayes.metrics.entropy import DEFAULT_ENTROPY_THRESHOLD, DEFAULT_MI_THRESHOLD
from monai_bayes.metrics.hungarian import MAX_MATCHING_SIZE
from monai_bayes.metrics.saver import SUMMARY_OPS

__all__ = [
    "BrierScore",
    "EntropyVolume",
    "GeneralizedEnergyDistance",
    "HungarianMatchedIoU",
    "MultiRater",
    "NegativeLogLikelihood",
    "PerCaseMetricsSaver",
    "SoftDice",
]


def _to_python(value: torch.Tensor) -> Any:
    value = value.squeeze()
    return value.item() if value.ndim == 0 else value.cpu()


class _QuantityMetricHandler(IgniteMetricHandler):
    """Ignite handler for a :class:`~monai_bayes.metrics.MultiQuantityMetric` (one or more named quantities).

    Parameters
    ----------
    metric_fn
        The wrapped metric.
    output_transform
        Callable returning ``(y_pred, y)`` from ``engine.state.output``.
    save_details
        Put the per-case values into ``engine.state.metric_details`` (one (N, K) tensor per quantity).
    report_all
        Also put the reduced secondary quantities into ``engine.state.metrics`` as ``f"{name}_{quantity}"``.
    """

    def __init__(
        self,
        metric_fn: MultiQuantityMetric,
        output_transform: Callable = lambda x: x,
        save_details: bool = True,
        report_all: bool = True,
    ) -> None:
        super().__init__(metric_fn=metric_fn, output_transform=output_transform, save_details=save_details)
        self.report_all = report_all

    def _key(self, name: str, quantity: str) -> str:
        metric: MultiQuantityMetric = self.metric_fn  # type: ignore[assignment]  # __init__ takes a MultiQuantityMetric
        return name if quantity == metric.primary else f"{name}_{quantity}"

    def compute(self) -> Any:
        """Reduced primary quantity; stores per-case values of every quantity when ``save_details``."""
        metric: MultiQuantityMetric = self.metric_fn  # type: ignore[assignment]  # __init__ takes a MultiQuantityMetric
        result = metric.aggregate()
        if isinstance(result, (tuple, list)):
            result = result[0]
        self._is_reduced = True
        if self.save_details:
            if self._engine is None or self._name is None:
                raise RuntimeError("please call the attach() function to connect expected engine first.")
            for quantity, values in metric.get_details().items():
                self._engine.state.metric_details[self._key(self._name, quantity)] = values  # type: ignore[attr-defined]  # MONAI's metric handlers add state.metric_details
        return _to_python(result) if isinstance(result, torch.Tensor) else result

    def completed(self, engine: Engine, name: str) -> None:
        """Store the primary value under ``name`` and, with ``report_all``, the other quantities."""
        super().completed(engine, name)
        if not self.report_all:
            return
        metric: MultiQuantityMetric = self.metric_fn  # type: ignore[assignment]  # __init__ takes a MultiQuantityMetric
        for quantity, value in metric.aggregate_all().items():
            if quantity != metric.primary:
                engine.state.metrics[self._key(name, quantity)] = _to_python(value)


class GeneralizedEnergyDistance(_QuantityMetricHandler):
    """Ignite handler for :class:`~monai_bayes.metrics.GeneralizedEnergyDistanceMetric`.

    ``y_pred``: (B, S, C, *spatial) binary samples; ``y``: (B, R, C, *spatial) binary rater masks. Reports
    D²_GED under the attach name and ``{name}_cross_distance``, ``{name}_sample_diversity``,
    ``{name}_rater_diversity`` (and ``{name}_hm_iou`` with ``with_hm_iou=True``, computed from the same
    pairwise IoU, which is cheaper than a separate :class:`HungarianMatchedIoU`). Parameters as in
    :class:`~monai_bayes.metrics.GeneralizedEnergyDistanceMetric`.
    """

    def __init__(
        self,
        include_background: bool = False,
        class_reduction: str = "mean",
        empty_policy: str = "match",
        squared: bool = True,
        binarize: float | str | None = None,
        with_hm_iou: bool = False,
        max_matching_size: int = MAX_MATCHING_SIZE,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        output_transform: Callable = lambda x: x,
        save_details: bool = True,
        report_all: bool = True,
    ) -> None:
        metric_fn = GeneralizedEnergyDistanceMetric(
            include_background=include_background,
            class_reduction=class_reduction,
            empty_policy=empty_policy,
            squared=squared,
            binarize=binarize,
            with_hm_iou=with_hm_iou,
            max_matching_size=max_matching_size,
            reduction=reduction,
        )
        super().__init__(metric_fn, output_transform, save_details, report_all)


class HungarianMatchedIoU(_QuantityMetricHandler):
    """Ignite handler for :class:`~monai_bayes.metrics.HungarianMatchedIoUMetric`.

    ``y_pred``: (B, S, C, *spatial) binary samples; ``y``: (B, R, C, *spatial) binary rater masks.
    Parameters as in :func:`~monai_bayes.metrics.compute_hm_iou`.
    """

    def __init__(
        self,
        include_background: bool = False,
        class_reduction: str = "mean",
        empty_policy: str = "match",
        binarize: float | str | None = None,
        max_matching_size: int = MAX_MATCHING_SIZE,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        output_transform: Callable = lambda x: x,
        save_details: bool = True,
    ) -> None:
        metric_fn = HungarianMatchedIoUMetric(
            include_background=include_background,
            class_reduction=class_reduction,
            empty_policy=empty_policy,
            binarize=binarize,
            max_matching_size=max_matching_size,
            reduction=reduction,
        )
        super().__init__(metric_fn, output_transform, save_details)


class BrierScore(_QuantityMetricHandler):
    """Ignite handler for :class:`~monai_bayes.metrics.BrierScoreMetric`.

    ``y_pred``: (B, S, C, *spatial) probability samples; ``y``: (B, R, C, *spatial) rater labels.
    Parameters as in :func:`~monai_bayes.metrics.compute_brier_score`.
    """

    def __init__(
        self,
        likelihood: str = "auto",
        rater_mode: str = "each",
        class_mean: bool = True,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        output_transform: Callable = lambda x: x,
        save_details: bool = True,
    ) -> None:
        metric_fn = BrierScoreMetric(
            likelihood=likelihood, rater_mode=rater_mode, class_mean=class_mean, reduction=reduction
        )
        super().__init__(metric_fn, output_transform, save_details)


class NegativeLogLikelihood(_QuantityMetricHandler):
    """Ignite handler for :class:`~monai_bayes.metrics.NegativeLogLikelihoodMetric`.

    ``y_pred``: (B, S, C, *spatial) probability samples; ``y``: (B, R, C, *spatial) rater labels.
    Parameters as in :func:`~monai_bayes.metrics.compute_nll`.
    """

    def __init__(
        self,
        likelihood: str = "auto",
        rater_mode: str = "each",
        eps: float = 1e-7,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        output_transform: Callable = lambda x: x,
        save_details: bool = True,
    ) -> None:
        metric_fn = NegativeLogLikelihoodMetric(
            likelihood=likelihood, rater_mode=rater_mode, eps=eps, reduction=reduction
        )
        super().__init__(metric_fn, output_transform, save_details)


class SoftDice(_QuantityMetricHandler):
    """Ignite handler for :class:`~monai_bayes.metrics.SoftDiceMetric` (Dice against the rater-mean label).

    ``y_pred``: (B, S, C, *spatial) probability samples; ``y``: (B, R, C, *spatial) rater labels.
    Parameters as in :func:`~monai_bayes.metrics.compute_soft_dice`.
    """

    def __init__(
        self,
        include_background: bool = True,
        soft_prediction: bool = False,
        likelihood: str = "auto",
        threshold: float = 0.5,
        ignore_empty: bool = True,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        output_transform: Callable = lambda x: x,
        save_details: bool = True,
    ) -> None:
        metric_fn = SoftDiceMetric(
            include_background=include_background,
            soft_prediction=soft_prediction,
            likelihood=likelihood,
            threshold=threshold,
            ignore_empty=ignore_empty,
            reduction=reduction,
        )
        super().__init__(metric_fn, output_transform, save_details)


class EntropyVolume(_QuantityMetricHandler):
    """Ignite handler for :class:`~monai_bayes.metrics.EntropyVolumeMetric`.

    ``output_transform`` returns ``(y_pred, y)`` or ``(y_pred, y, spacing)``: ``y_pred`` = (B, S, C, *spatial)
    probability samples (a ``MetaTensor`` supplies its affine), ``y`` is ignored (may be None), ``spacing``
    (optional) is a float, a sequence of len(spatial) or a (B, len(spatial)) tensor in mm. Reports ``primary``
    (default ``entropy_volume``) under the attach name and the other seven statistics as ``{name}_{quantity}``.
    Parameters as in :func:`~monai_bayes.metrics.compute_entropy_volume`.
    """

    def __init__(
        self,
        likelihood: str = "auto",
        entropy_threshold: float = DEFAULT_ENTROPY_THRESHOLD,
        mi_threshold: float = DEFAULT_MI_THRESHOLD,
        foreground_threshold: float = 0.5,
        spacing: float | Sequence[float] | torch.Tensor | None = None,
        primary: str = "entropy_volume",
        reduction: MetricReduction | str = MetricReduction.MEAN,
        output_transform: Callable = lambda x: x,
        save_details: bool = True,
        report_all: bool = True,
    ) -> None:
        metric_fn = EntropyVolumeMetric(
            likelihood=likelihood,
            entropy_threshold=entropy_threshold,
            mi_threshold=mi_threshold,
            foreground_threshold=foreground_threshold,
            spacing=spacing,
            primary=primary,
            reduction=reduction,
        )
        super().__init__(metric_fn, output_transform, save_details, report_all)

    @reinit__is_reduced
    def update(self, output: Sequence[Any]) -> None:
        """Accept ``(y_pred, y)`` or ``(y_pred, y, spacing)``."""
        if len(output) not in (2, 3):
            raise ValueError(f"output must be (y_pred, y) or (y_pred, y, spacing), got length {len(output)}.")
        kwargs = {"spacing": output[2]} if len(output) == 3 and output[2] is not None else {}
        self.metric_fn(output[0], output[1], **kwargs)


class MultiRater(IgniteMetricHandler):
    """Ignite handler for :class:`~monai_bayes.metrics.MultiRaterMetric`: a MONAI metric on samples × raters.

    ``y_pred``: (B, S, C, *spatial) probability samples; ``y``: (B, R, C, *spatial) rater labels. The wrapped
    metric's ``aggregate()`` is reported (first element if it returns several). Use ``save_details=False`` for
    dataset-level metrics (``ROCAUCMetric``, ``AveragePrecisionMetric``) whose buffers are not per-case values.

    Parameters
    ----------
    metric
        MONAI cumulative metric, e.g. ``DiceMetric()``, ``MeanIoU()``, ``CalibrationErrorMetric()``.
    prediction, rater_mode, likelihood, threshold, majority_threshold
        As in :func:`~monai_bayes.metrics.reduce_samples_and_raters`.
    output_transform, save_details
        As in :class:`monai.handlers.IgniteMetricHandler`.
    """

    def __init__(
        self,
        metric: CumulativeIterationMetric,
        prediction: str = "mean",
        rater_mode: str = "soft",
        likelihood: str = "auto",
        threshold: float = 0.5,
        majority_threshold: float = 0.5,
        output_transform: Callable = lambda x: x,
        save_details: bool = True,
    ) -> None:
        metric_fn = MultiRaterMetric(
            metric,
            prediction=prediction,
            rater_mode=rater_mode,
            likelihood=likelihood,
            threshold=threshold,
            majority_threshold=majority_threshold,
        )
        super().__init__(metric_fn=metric_fn, output_transform=output_transform, save_details=save_details)


class PerCaseMetricsSaver(MetricsSaver):
    """Write ``engine.state.metric_details`` as one per-case CSV plus a summary, atomically.

    Same selection arguments and file-name collection as :class:`monai.handlers.MetricsSaver` (which it
    extends), but every selected per-case metric becomes columns of one table ``{prefix}per_case.csv``
    (full float precision), with ``{prefix}summary.csv`` and ``{prefix}metrics.csv``; see
    :func:`~monai_bayes.metrics.write_per_case_report`. Case names come from ``batch_transform`` (meta data
    with ``filename_or_obj``) when their count matches the number of rows, else the row index is used.
    Non-tensor details (e.g. the ``[y_pred, y]`` buffers of ROC AUC) are skipped.

    Parameters
    ----------
    save_dir
        Output directory.
    metrics, metric_details, batch_transform, save_rank, delimiter
        As in :class:`monai.handlers.MetricsSaver`; ``metric_details`` defaults to ``"*"``.
    summary_ops
        Summary statistics, see :func:`~monai_bayes.metrics.write_per_case_report`.
    prefix
        File-name prefix.
    """

    def __init__(
        self,
        save_dir: str,
        metrics: str | Sequence[str] | None = "*",
        metric_details: str | Sequence[str] | None = "*",
        batch_transform: Callable = lambda x: x,
        summary_ops: Sequence[str] | None = SUMMARY_OPS,
        save_rank: int = 0,
        delimiter: str = ",",
        prefix: str = "",
    ) -> None:
        super().__init__(
            save_dir=save_dir,
            metrics=metrics,
            metric_details=metric_details,
            batch_transform=batch_transform,
            summary_ops=None,
            save_rank=save_rank,
            delimiter=delimiter,
        )
        self.per_case_summary_ops = summary_ops
        self.prefix = prefix

    @staticmethod
    def _selected(names: tuple[str, ...] | None, key: str) -> bool:
        return names is not None and (key in names or "*" in names)

    def __call__(self, engine: Engine) -> None:
        """Gather file names across ranks and write the report on ``save_rank``."""
        from ignite import distributed as idist

        world = idist.get_world_size()
        if self.save_rank >= world:
            raise ValueError(f"save_rank={self.save_rank} must be smaller than the world size {world}.")
        images = string_list_all_gather(strings=self._filenames) if world > 1 else self._filenames
        if idist.get_rank() != self.save_rank:
            return
        details = {
            k: v
            for k, v in getattr(engine.state, "metric_details", {}).items()
            if self._selected(self.metric_details, k) and isinstance(v, torch.Tensor)
        }
        metrics = {k: v for k, v in engine.state.metrics.items() if self._selected(self.metrics, k)}
        if not details:
            return
        num_cases = next(iter(details.values())).shape[0]
        case_ids = images if len(images) == num_cases else None
        write_per_case_report(
            self.save_dir,
            details,
            case_ids=case_ids,
            summary_ops=self.per_case_summary_ops,
            metrics=metrics,
            prefix=self.prefix,
            delimiter=self.deli,
        )
