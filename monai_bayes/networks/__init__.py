"""Network converters: deterministic ↔ partial / full Bayes / MC dropout."""

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

__all__ = [
    "DeepEnsemble",
    "bayes_masks_from_state_dict",
    "candidate_modules",
    "candidate_parameters",
    "load_stochastic_state_dict",
    "to_deterministic",
    "to_full_bayes",
    "to_mc_dropout",
    "to_partial_bayes",
]
