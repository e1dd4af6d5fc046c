"""Losses for stochastic networks."""

from monai_bayes.losses.elbo import ELBOLoss, WeightedCrossEntropyLoss, make_nll

__all__ = ["ELBOLoss", "WeightedCrossEntropyLoss", "make_nll"]
