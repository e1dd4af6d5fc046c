"""Training loss of the Stochastic Segmentation Network (Monteiro et al. 2020): Monte-Carlo log-likelihood."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.loss import _Loss

from monai_bayes.layers.base import stochastic_layers
from monai_bayes.layers.latent import LowRankLogits, low_rank_log_likelihood

__all__ = ["LowRankLikelihoodLoss"]


class LowRankLikelihoodLoss(_Loss):
    """``−(1/N) Σ_n log p(y_n | x_n) / V``, Monte Carlo (:func:`~monai_bayes.layers.low_rank_log_likelihood`).

    The network's :class:`~monai_bayes.layers.LowRankLogits` layer keeps the distribution of its last
    forward pass (``μ``, ``D``, ``P``); this loss draws ``num_samples`` logit maps from it and scores the
    target mask (one rater per item, as the training transforms pick it). ``V`` is the number of voxels
    per item, so the value is on the scale of a per-voxel cross-entropy (Monteiro et al. divide by the
    pixel count too). The prediction passed by the trainer is not used: it is one sample of the same
    distribution.

    Parameters
    ----------
    network : nn.Module
        A network with exactly one :class:`~monai_bayes.layers.LowRankLogits` layer
        (:class:`~monai_bayes.networks.StochasticSegmentationNetwork`).
    num_samples : int
        ``M`` logit samples per item (Monteiro et al.: 20).

    Raises
    ------
    ValueError
        If ``num_samples < 1``.
    """

    def __init__(self, network: nn.Module, num_samples: int = 20) -> None:
        super().__init__()
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive int, got {num_samples!r}.")
        self.network = [network]  # a list: keep the network out of this module's parameters
        self.num_samples = num_samples

    def _layer(self) -> LowRankLogits:
        layers = [m for _, m in stochastic_layers(self.network[0]) if isinstance(m, LowRankLogits)]
        if len(layers) != 1:
            raise ValueError(
                f"LowRankLikelihoodLoss needs a network with exactly one LowRankLogits layer, found {len(layers)}."
            )
        return layers[0]

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        layer = self._layer()
        if layer.last is None:
            raise ValueError("LowRankLikelihoodLoss: the network has not run a forward pass yet.")
        mean, cov_diag, cov_factor = layer.last
        if mean.shape[0] != target.shape[0]:
            raise ValueError(
                f"the last forward pass had {mean.shape[0]} items but the target has {target.shape[0]}; "
                "run the loss right after the network's forward pass (one sample per item)."
            )
        log_lik = low_rank_log_likelihood(mean, cov_diag, cov_factor, target, self.num_samples)
        voxels = mean[0, 0].numel()
        return -log_lik.mean() / voxels
