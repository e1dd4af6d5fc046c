"""Network converters: deterministic ↔ partial / full Bayes / MC dropout / nested (BN3), and checkpoints."""

from monai_bayes.layers.candidates import candidate_modules, candidate_parameters
from monai_bayes.networks.batch_norm import batch_norm_layers, recalibrate_batch_norm
from monai_bayes.networks.channel_flow import ChannelFlowReport, analyse_channel_flow, register_container_walker
from monai_bayes.networks.checkpoint import (
    bayes_masks_from_state_dict,
    load_checkpoint,
    load_stochastic_state_dict,
    save_checkpoint,
)
from monai_bayes.networks.convert import to_deterministic, to_full_bayes, to_mc_dropout, to_partial_bayes
from monai_bayes.networks.ensemble import DeepEnsemble
from monai_bayes.networks.extract import extract_width
from monai_bayes.networks.nested import to_nested
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
    "ChannelFlowReport",
    "DeepEnsemble",
    "LazySamples",
    "PosteriorSamples",
    "StorageLayout",
    "ValueCodec",
    "analyse_channel_flow",
    "batch_norm_layers",
    "bayes_masks_from_state_dict",
    "candidate_modules",
    "candidate_parameters",
    "extract_width",
    "is_samples_file",
    "load_checkpoint",
    "load_samples",
    "load_stochastic_state_dict",
    "recalibrate_batch_norm",
    "register_container_walker",
    "sample_ensemble",
    "save_checkpoint",
    "save_samples",
    "to_deterministic",
    "to_full_bayes",
    "to_mc_dropout",
    "to_nested",
    "to_partial_bayes",
]
