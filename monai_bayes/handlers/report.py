"""End-of-evaluation report: summary JSON (metrics ± std, costs, selection), figures.

Attach :class:`EvaluationReportHandler` to a MONAI evaluator whose decollated output items hold
``image`` ``(1, *sp)``, ``pred`` — the foreground probability samples ``(S, 1, *sp)`` — and
``label`` — all rater masks ``(R, 1, *sp)`` — after the metric handlers. On completion it writes

* ``summary.json``: every scalar in ``engine.state.metrics``, with the mean/std over cases of the
  per-case values in ``engine.state.metric_details``, the run's training costs (parameters, FLOPs
  per step, wall time) and the per-layer Bayesian selection;
* ``cases.png``: input | raters | prediction overlay (TP green / FP blue / FN red vs. the
  consensus of the raters who marked) | predictive entropy, for ``num_figure_cases`` cases with a
  rater mark spread evenly over the evaluation (over its first 256 such cases; seed 000 Fig. 3);
* ``reliability.png``: the reliability diagram of the mean foreground probability vs. the majority
  vote (accumulated on the evaluator's device in ``num_bins`` equal bins plus one for p = 1, as
  ``metrics.calibration``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

from monai_bayes.metrics.calibration import calibration_bin_sums
from monai_bayes.uncertainty import uncertainty_maps
from monai_bayes.utils.atomic import atomic_write_json
from monai_bayes.utils.files import read_json_if_exists
from monai_bayes.visualize import plot_cases, plot_reliability

__all__ = ["EvaluationReportHandler"]

logger = logging.getLogger(__name__)

#: cases with a rater mark kept for ``cases.png``; the figure's rows are spread evenly over them
MAX_FIGURE_CANDIDATES = 256


def _items(output: Any) -> list[Mapping[str, Any]]:
    return output if isinstance(output, list) else [output]


class EvaluationReportHandler:
    """Write the evaluation summary and figures when the evaluator completes (see module docstring).

    Parameters
    ----------
    output_dir
        folder for ``summary.json``, ``cases.png``, ``reliability.png``.
    info
        extra entries for the summary (method, run name, r_bayes, ...).
    cost_files
        ``{step name: path}`` of :class:`TrainingCostHandler` JSON files to include.
    selection_file
        the per-layer selection report JSON to include (if it exists).
    num_figure_cases
        rows of ``cases.png``.
    num_bins
        bins of the reliability diagram.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        info: Mapping[str, Any] | None = None,
        cost_files: Mapping[str, str | os.PathLike] | None = None,
        selection_file: str | os.PathLike | None = None,
        num_figure_cases: int = 4,
        num_bins: int = 10,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.info = dict(info or {})
        self.cost_files = dict(cost_files or {})
        self.selection_file = selection_file
        self.num_figure_cases = num_figure_cases
        self.num_bins = num_bins
        self._cases: list[dict[str, Any]] = []
        self._bins: torch.Tensor | None = None
        self._num_cases = 0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self._write)

    def _reset(self, engine: Engine) -> None:
        self._cases, self._bins, self._num_cases = [], None, 0

    def _collect(self, engine: Engine) -> None:
        for item in _items(engine.state.output):
            self._num_cases += 1
            samples, raters = item["pred"], item["label"]
            mean = samples.float().mean(dim=0)[0]  # (*sp) mean foreground probability
            majority = raters.float().mean(dim=0)[0] > 0.5
            self._accumulate_bins(mean, majority)
            if len(self._cases) < MAX_FIGURE_CANDIDATES and bool(raters.any()) and mean.dim() == 2:
                entropy = uncertainty_maps(samples.float()[None], "sigmoid")["total"][0, 0]
                image = item.get("image")
                name = getattr(image, "meta", {}).get("filename_or_obj", f"case {len(self._cases)}")
                self._cases.append(
                    {
                        "image": image.detach().cpu() if image is not None else mean.cpu(),
                        "raters": raters[:, 0].detach().cpu(),
                        "mean": mean.detach().cpu(),
                        "uncertainty": entropy.detach().cpu(),
                        "name": Path(str(name)).stem,
                    }
                )

    def _accumulate_bins(self, prob: torch.Tensor, target: torch.Tensor) -> None:
        """Add one case's per-bin count, Σ probability and Σ positives (``metrics.calibration_bin_sums``)."""
        sums = calibration_bin_sums(prob[None, None], target[None, None].to(prob.dtype), self.num_bins)[0, 0]
        self._bins = sums if self._bins is None else self._bins + sums

    def summary(self, engine: Engine) -> dict[str, Any]:
        """The summary dict written to ``summary.json``."""
        metrics: dict[str, Any] = {}
        for name, value in engine.state.metrics.items():
            if isinstance(value, (int, float)):
                metrics[name] = {"mean": float(value)}
        details = getattr(engine.state, "metric_details", {}) or {}
        for name, per_case in details.items():
            values = torch.as_tensor(per_case, dtype=torch.float64).reshape(-1)
            values = values[~torch.isnan(values)]
            entry = metrics.setdefault(name, {})
            entry["std"] = float(values.std(unbiased=False)) if values.numel() else float("nan")
            entry["cases"] = int(values.numel())
        costs = {step: read_json_if_exists(path) for step, path in self.cost_files.items()}
        return {
            **self.info,
            "num_cases": self._num_cases,
            "metrics": metrics,
            "costs": {k: v for k, v in costs.items() if v is not None},
            "selection": read_json_if_exists(self.selection_file),
        }

    def reliability(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean confidence, observed frequency) of the non-empty bins."""
        if self._bins is None:
            return torch.zeros(0), torch.zeros(0)
        count, psum, pos = self._bins.cpu()
        keep = count > 0
        return psum[keep] / count[keep], pos[keep] / count[keep]

    def _write(self, engine: Engine) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        summary = self.summary(engine)
        atomic_write_json(self.output_dir / "summary.json", summary)
        if self._cases:
            picks = np.unique(np.linspace(0, len(self._cases) - 1, self.num_figure_cases).round().astype(int))
            cases = [self._cases[i] for i in picks]
            title = f"{summary.get('run', summary.get('method', ''))}"
            plot_cases(cases, self.output_dir / "cases.png", title=title)
        conf, freq = self.reliability()
        if conf.numel():
            plot_reliability({str(summary.get("run", "model")): (conf, freq)}, self.output_dir / "reliability.png")
        logger.info("evaluation report written to %s", self.output_dir)
