"""Network converters: deterministic ↔ partial / full Bayes / MC dropout / nested (BN3), and checkpoints."""

from monai_bayes.layers.candidates import candidate_modules, candidate_parameters
from monai_bayes.networks.batch_norm import batch_norm_layers, recalibrate_batch_norm
from monai_bayes.networks.channel_flow import ChannelFlowReport, analyse_channel_flow, register_container_walker
from monai_bayes.networks.checkpoint import (
    PRUNE_MASK_SUFFIX,
    bayes_masks_from_state_dict,
    load_checkpoint,
    load_stochastic_state_dict,
    register_prune_masks,
    save_checkpoint,
)
from monai_bayes.networks.convert import (
    init_means_normal,
    to_deterministic,
    to_full_bayes,
    to_horseshoe_bayes,
    to_mc_dropout,
    to_partial_bayes,
)
from monai_bayes.networks.ensemble import DeepEnsemble
from monai_bayes.networks.extract import extract_width
from monai_bayes.networks.nested import to_nested
from monai_bayes.networks.prob_unet import (
    AxisAlignedGaussianNet,
    ProbabilisticUNet,
    StochasticSegmentationNetwork,
    unet_settings,
)
from monai_bayes.networks.samples import (
    LazySamples,
    PosteriorSamples,
    StorageLayout,
    ValueCodec,
    is_samples_file,
    load_samples,
    sample_ensemble,
    save_samples,
)

__all__ = [
    "PRUNE_MASK_SUFFIX",
    "AxisAlignedGaussianNet",
    "ChannelFlowReport",
    "DeepEnsemble",
    "LazySamples",
    "PosteriorSamples",
    "ProbabilisticUNet",
    "StochasticSegmentationNetwork",
    "StorageLayout",
    "ValueCodec",
    "analyse_channel_flow",
    "batch_norm_layers",
    "bayes_masks_from_state_dict",
    "candidate_modules",
    "candidate_parameters",
    "extract_width",
    "init_means_normal",
    "is_samples_file",
    "load_checkpoint",
    "load_samples",
    "load_stochastic_state_dict",
    "recalibrate_batch_norm",
    "register_container_walker",
    "register_prune_masks",
    "sample_ensemble",
    "save_checkpoint",
    "save_samples",
    "to_deterministic",
    "to_full_bayes",
    "to_horseshoe_bayes",
    "to_mc_dropout",
    "to_nested",
    "to_partial_bayes",
    "unet_settings",
]
