"""Losses for stochastic networks."""

from monai_bayes.losses.elbo import ELBOLoss, WeightedCrossEntropyLoss, make_nll
from monai_bayes.losses.low_rank import LowRankLikelihoodLoss

__all__ = ["ELBOLoss", "LowRankLikelihoodLoss", "WeightedCrossEntropyLoss", "make_nll"]
