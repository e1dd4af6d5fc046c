"""Library side of the monai_bayes MONAI bundles: every step a bundle config runs lives here.

The bundles in ``bundles/`` are pure configuration over these functions and the rest of the
package (see ``docs/bundles.md``).
"""

from monai_bayes.bundle.datasets import (
    ISIC_LAYOUTS,
    LIDC_LAYOUTS,
    datalist_items,
    resolve_isic_dataset,
    resolve_lidc_dataset,
)
from monai_bayes.bundle.distributed import (
    barrier,
    finish_distributed,
    init_distributed,
    is_distributed,
    is_main_process,
)
from monai_bayes.bundle.inference import export_hu_slices, inference_inputs, num_mc_samples
from monai_bayes.bundle.layout import METHODS, RunLayout, check_method
from monai_bayes.bundle.nested import (
    DEFAULT_WIDTH_FRACTIONS,
    NestedRunLayout,
    NestedWidthHandler,
    ProgressPasses,
    nested_network,
    nested_pipeline_steps,
    nested_widths,
    publish_nested_model,
    run_nested_pipeline,
    sweep_sample_counts,
    width_sweep_markdown,
    write_nested_report,
)
from monai_bayes.bundle.runner import (
    PipelineStep,
    bundle_config,
    markdown_table,
    pipeline_steps,
    run_config,
    run_pipeline,
    run_steps,
    run_sweep,
)
from monai_bayes.bundle.steps import (
    build_network,
    posterior_mean_state_dict,
    publish_model,
    published_checkpoint,
    run_selection,
    training_network,
)

__all__ = [
    "DEFAULT_WIDTH_FRACTIONS",
    "ISIC_LAYOUTS",
    "LIDC_LAYOUTS",
    "METHODS",
    "NestedRunLayout",
    "NestedWidthHandler",
    "PipelineStep",
    "ProgressPasses",
    "RunLayout",
    "barrier",
    "build_network",
    "bundle_config",
    "check_method",
    "datalist_items",
    "export_hu_slices",
    "finish_distributed",
    "inference_inputs",
    "init_distributed",
    "is_distributed",
    "is_main_process",
    "markdown_table",
    "nested_network",
    "nested_pipeline_steps",
    "nested_widths",
    "num_mc_samples",
    "pipeline_steps",
    "posterior_mean_state_dict",
    "publish_model",
    "publish_nested_model",
    "published_checkpoint",
    "resolve_isic_dataset",
    "resolve_lidc_dataset",
    "run_config",
    "run_nested_pipeline",
    "run_pipeline",
    "run_selection",
    "run_steps",
    "run_sweep",
    "sweep_sample_counts",
    "training_network",
    "width_sweep_markdown",
    "write_nested_report",
]
