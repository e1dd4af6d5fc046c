"""Inferers for stochastic networks."""

from monai_bayes.inferers.monte_carlo import MonteCarloInferer, MonteCarloNetwork, summarize_samples
from monai_bayes.inferers.planning import MCPlan, choose_plan, plan_candidates

__all__ = ["MCPlan", "MonteCarloInferer", "MonteCarloNetwork", "choose_plan", "plan_candidates", "summarize_samples"]
