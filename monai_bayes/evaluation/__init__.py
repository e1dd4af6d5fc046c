"""Evaluation workflows built from the library's metrics and inferers (bundles call these)."""

from monai_bayes.evaluation.nested import (
    SWEEP_METRICS,
    WidthSweepResult,
    evaluate_width_sweep,
    plot_width_sweep,
    rater_masks,
    write_width_sweep_report,
    write_width_sweep_table,
)

__all__ = [
    "SWEEP_METRICS",
    "WidthSweepResult",
    "evaluate_width_sweep",
    "plot_width_sweep",
    "rater_masks",
    "write_width_sweep_report",
    "write_width_sweep_table",
]
