"""Bayesian model reduction (seed 002): ΔF, the spike-and-slab fixed point, pruning, compact storage.

This room may import ``layers``, ``networks``, ``utils``, ``losses`` and ``metrics``; only
``handlers``, ``workflows`` and ``bundle`` import it. See ``docs/reduction.md``.
"""

from monai_bayes.reduction.compact import COMPACT_FORMAT, CompactSize, compact_state, load_compact, save_compact
from monai_bayes.reduction.flat import (
    DEFAULT_GAMMA0,
    FlatPosterior,
    LayerSpikeDeltaF,
    flat_posteriors,
    spike_delta_f_by_layer,
    to_flat_bayes,
)
from monai_bayes.reduction.free_energy import (
    DEFAULT_K_MAX,
    SpikeAndSlabPosterior,
    delta_f,
    delta_f_spike,
    spike_and_slab_posterior,
)
from monai_bayes.reduction.prune import (
    MASK_SUFFIX,
    BMRPruneResult,
    LayerPruneStats,
    PruneReport,
    apply_prune_masks,
    baseline_masks,
    bmr_masks,
    bmr_prune,
    enforce_prune_masks,
    load_pruned_state_dict,
    prune_report,
    strip_prune_masks,
)

__all__ = [
    "COMPACT_FORMAT",
    "DEFAULT_GAMMA0",
    "DEFAULT_K_MAX",
    "MASK_SUFFIX",
    "BMRPruneResult",
    "CompactSize",
    "FlatPosterior",
    "LayerPruneStats",
    "LayerSpikeDeltaF",
    "PruneReport",
    "SpikeAndSlabPosterior",
    "apply_prune_masks",
    "baseline_masks",
    "bmr_masks",
    "bmr_prune",
    "compact_state",
    "delta_f",
    "delta_f_spike",
    "enforce_prune_masks",
    "flat_posteriors",
    "load_compact",
    "load_pruned_state_dict",
    "prune_report",
    "save_compact",
    "spike_and_slab_posterior",
    "spike_delta_f_by_layer",
    "strip_prune_masks",
    "to_flat_bayes",
]
