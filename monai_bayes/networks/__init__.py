"""Network converters: deterministic ↔ partial / full Bayes / MC dropout / nested (BN3)."""

from monai_bayes.networks.convert import (
    bayes_masks_from_state_dict,
    candidate_modules,
    candidate_parameters,
    load_stochastic_state_dict,
    to_deterministic,
    to_full_bayes,
    to_mc_dropout,
    to_partial_bayes,
)
from monai_bayes.networks.ensemble import DeepEnsemble
from monai_bayes.networks.nested import ChannelFlowReport, analyse_channel_flow, extract_width, to_nested

__all__ = [
    "ChannelFlowReport",
    "DeepEnsemble",
    "analyse_channel_flow",
    "bayes_masks_from_state_dict",
    "candidate_modules",
    "candidate_parameters",
    "extract_width",
    "load_stochastic_state_dict",
    "to_deterministic",
    "to_full_bayes",
    "to_mc_dropout",
    "to_nested",
    "to_partial_bayes",
]
