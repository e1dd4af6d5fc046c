"""Stochastic-gradient MCMC (seed 004, §2.2.1): SGLD / SGHMC optimisers, the cyclical schedule, sample collection.

The collected samples are a :class:`~monai_bayes.networks.PosteriorSamples` set; ``sample_ensemble`` turns
them into the :class:`~monai_bayes.networks.DeepEnsemble` that ``MonteCarloInferer`` samples from.
"""

from monai_bayes.mcmc.collect import SampleCollector
from monai_bayes.mcmc.optim import SGHMC, SGLD, Sampler, build_sampler, voxels_per_item
from monai_bayes.mcmc.schedule import CyclicalLR, cyclical_lr_factor, in_sampling_stage

__all__ = [
    "SGHMC",
    "SGLD",
    "CyclicalLR",
    "SampleCollector",
    "Sampler",
    "build_sampler",
    "cyclical_lr_factor",
    "in_sampling_stage",
    "voxels_per_item",
]
