"""cost.py: parameter counts of stochastic networks and FLOPs of a step, against hand counts."""

from __future__ import annotations

import torch
from torch import nn

from monai_bayes.cost import count_flops, count_parameters
from monai_bayes.networks import to_partial_bayes


def test_count_parameters_of_a_partial_bayes_network():
    net = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 1, 1))
    plain = sum(p.numel() for p in net.parameters())
    assert count_parameters(net) == {"total": plain, "bayesian": 0, "deterministic": plain}
    mask = torch.zeros(4, 2, 3, 3, dtype=torch.bool)
    mask[0, 0] = True  # 9 Bayesian entries, each with a mean (the weight) and one ρ
    to_partial_bayes(net, {"0.weight": mask})
    assert count_parameters(net) == {"total": plain + 9, "bayesian": 9, "deterministic": plain - 9}


def test_count_flops_of_conv_and_linear_steps():
    conv, linear = nn.Conv2d(3, 8, 3, padding=1), nn.Linear(10, 4)
    x, y = torch.randn(2, 3, 16, 16), torch.randn(7, 10)
    with torch.no_grad():
        assert count_flops(lambda: conv(x)) == 2 * (2 * 16 * 16) * 8 * (3 * 3 * 3)  # 2 · outputs · MACs each
        assert count_flops(lambda: linear(y)) == 2 * 7 * 10 * 4
    assert count_flops(lambda: torch.relu(y)) == 0  # element-wise operations are not counted
