"""Inferers for stochastic networks."""

from monai_bayes.inferers.monte_carlo import MonteCarloInferer, MonteCarloNetwork, summarize_samples

__all__ = ["MonteCarloInferer", "MonteCarloNetwork", "summarize_samples"]
