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
from monai_bayes.evaluation.results import (
    check_results,
    regenerate,
    render_table,
    write_provenance,
    write_results_table,
)
from monai_bayes.evaluation.tables import metric_table_rows

__all__ = [
    "SWEEP_METRICS",
    "WidthSweepResult",
    "check_results",
    "evaluate_width_sweep",
    "metric_table_rows",
    "plot_width_sweep",
    "rater_masks",
    "regenerate",
    "render_table",
    "write_provenance",
    "write_results_table",
    "write_width_sweep_report",
    "write_width_sweep_table",
]
