"""Inferers for stochastic networks."""

from monai_bayes.inferers.monte_carlo import MonteCarloInferer, summarize_samples

__all__ = ["MonteCarloInferer", "summarize_samples"]
