"""Inferers for stochastic networks."""

from monai_bayes.inferers.monte_carlo import MonteCarloInferer, MonteCarloNetwork, summarize_samples
from monai_bayes.inferers.planning import MCPlan, choose_plan, plan_candidates
from monai_bayes.inferers.shared_prefix import MCCostSplit, SharedPrefixMode, mc_cost_split, shared_prefix_forward

__all__ = [
    "MCCostSplit",
    "MCPlan",
    "MonteCarloInferer",
    "MonteCarloNetwork",
    "SharedPrefixMode",
    "choose_plan",
    "mc_cost_split",
    "plan_candidates",
    "shared_prefix_forward",
    "summarize_samples",
]
