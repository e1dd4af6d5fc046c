"""Automatic Monte-Carlo plan (issue 22 item 0): candidates, probe choice, cache and log."""

from __future__ import annotations

import logging
import time

import pytest
import torch
from torch import nn

from monai_bayes import to_partial_bayes
from monai_bayes.inferers import MonteCarloInferer
from monai_bayes.inferers.planning import MCPlan, candidate_chunk_sizes, choose_plan, plan_candidates


def test_candidate_chunk_sizes():
    assert candidate_chunk_sizes(8) == [1, 2, 4, 8]
    assert candidate_chunk_sizes(5) == [1, 2, 4, 5]
    assert candidate_chunk_sizes(1) == [1]


def test_plan_candidates():
    auto = plan_candidates(4, "auto", "auto", can_share=True)
    assert auto[0] == MCPlan(1, False), "the plain loop is always a candidate"
    assert MCPlan(1, True) not in auto
    assert set(auto) == {MCPlan(1, False), MCPlan(2, False), MCPlan(2, True), MCPlan(4, False), MCPlan(4, True)}
    assert plan_candidates(4, "auto", "auto", can_share=False) == [MCPlan(1, False), MCPlan(2, False), MCPlan(4, False)]
    assert plan_candidates(4, 3, True, can_share=True) == [MCPlan(3, True)]
    assert plan_candidates(4, 9, "auto", can_share=True) == [MCPlan(4, False), MCPlan(4, True)]
    with pytest.raises(ValueError, match="shared_prefix=True"):
        plan_candidates(4, "auto", True, can_share=False)


def test_choose_plan_picks_the_fastest_and_keeps_the_rng():
    delays = {MCPlan(1, False): 0.08, MCPlan(2, True): 0.0, MCPlan(2, False): 0.05}
    calls: list[MCPlan] = []

    def run(plan: MCPlan) -> None:
        calls.append(plan)
        torch.rand(3)  # advances the global RNG inside the probe
        time.sleep(delays[plan])

    state = torch.get_rng_state()
    plan, times = choose_plan(list(delays), run, torch.device("cpu"), repeats=3)
    assert plan == MCPlan(2, True)
    assert set(times) == set(delays) and times[MCPlan(1, False)] >= 0.08
    assert len(calls) == 1 + 3 * 3 + 2 * 3, "one warm-up, every candidate in every round, then the run-off vs the loop"
    assert torch.equal(torch.get_rng_state(), state), "probing must not move the caller's RNG"
    assert choose_plan([MCPlan(4, False)], run, torch.device("cpu")) == (MCPlan(4, False), {})


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pre = nn.Conv2d(1, 4, 3, padding=1)
        self.post = nn.Conv2d(4, 2, 3, padding=1)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.post(torch.relu(self.pre(x)))


@torch.no_grad()
def test_auto_plan_probed_once_per_shape_logged_and_exact(caplog):
    torch.manual_seed(0)
    plain = _Net().eval()
    net = to_partial_bayes(plain, {"post.weight": torch.ones_like(plain.post.weight, dtype=torch.bool)})
    x = torch.randn(2, 1, 8, 8)
    inferer = MonteCarloInferer(4, seed=1, activation=None)
    with caplog.at_level(logging.INFO, logger="monai_bayes.inferers.monte_carlo"):
        first = inferer(x, net)
        calls_after_probe = net.calls
        second = inferer(x, net)
    assert len(inferer.plans) == 1
    plan = next(iter(inferer.plans.values()))
    chunk_calls = -(-4 // plan.chunk_size)
    assert net.calls - calls_after_probe == chunk_calls, "the cached plan is used without probing again"
    assert calls_after_probe > 2 * chunk_calls, "the first call probed several plans"
    assert sum("/pass" in r.getMessage() for r in caplog.records) == 1, "the choice is logged once"
    fixed = MonteCarloInferer(4, seed=1, activation=None, chunk_size=4, shared_prefix=False)(x, net)
    torch.testing.assert_close(first, fixed)
    torch.testing.assert_close(second, fixed)
    inferer(torch.randn(1, 1, 8, 8), net)
    assert len(inferer.plans) == 2, "a new input shape gets its own plan"


@torch.no_grad()
def test_network_without_stochastic_layers_runs_once():
    net = _Net().eval()
    out = MonteCarloInferer(5, activation=None)(torch.randn(2, 1, 8, 8), net)
    assert net.calls == 1
    assert out.shape == (2, 5, 2, 8, 8)
    torch.testing.assert_close(out[:, 0], out[:, 4])


def test_invalid_options():
    with pytest.raises(ValueError, match="chunk_size"):
        MonteCarloInferer(4, chunk_size="fast")
    with pytest.raises(ValueError, match="shared_prefix"):
        MonteCarloInferer(4, shared_prefix="yes")


def test_runoff_keeps_the_loop_against_a_lucky_round():
    loop, lucky = MCPlan(1, False), MCPlan(4, True)
    timings = {loop: iter([0.03] * 10), lucky: iter([0.0] + [0.06] * 10)}  # lucky: fast once, then 2x the loop

    def run(plan: MCPlan) -> None:
        time.sleep(next(timings[plan], 0.03))

    plan, _ = choose_plan([loop, lucky], run, torch.device("cpu"), repeats=1, runoff=2)
    assert plan == loop, "a plan must beat the loop over the run-off too"
    assert plan_candidates(4, "auto", "auto", can_share=True, can_sparse=True)[-2:] == [
        MCPlan(2, True, True),
        MCPlan(4, True, True),
    ]
    assert MCPlan(4, True, True).label() == "4/pass, shared, sparse input"
    with pytest.raises(ValueError, match="sparse_input"):
        MonteCarloInferer(4, sparse_input="yes")


def test_training_calls_run_a_fixed_plan_without_probing(caplog):
    torch.manual_seed(0)
    plain = _Net()
    net = to_partial_bayes(plain, {"post.weight": torch.ones_like(plain.post.weight, dtype=torch.bool)})
    x = torch.randn(2, 1, 8, 8)
    inferer = MonteCarloInferer(4, seed=1, activation=None)
    net.train()
    with caplog.at_level(logging.INFO, logger="monai_bayes.inferers.monte_carlo"):
        trained = inferer(x, net)
    assert net.calls == 1, "a training call runs all S samples in one stacked pass, nothing is timed"
    assert list(inferer.plans.values()) == [MCPlan(4, False)]
    assert any("training call: fixed plan" in r.getMessage() for r in caplog.records)
    stacked = MonteCarloInferer(4, seed=1, activation=None, chunk_size=4, shared_prefix=False)
    with torch.no_grad():
        torch.testing.assert_close(trained.detach(), stacked(x, net.eval()))
        calls = net.calls
        inferer(x, net)  # eval + no_grad: the same shape gets its own, probed plan
    assert net.calls - calls > 1, "inference is probed"
    assert len(inferer.plans) == 2
    net.eval()
    calls = net.calls
    inferer(x, net)  # eval mode but autograd on (e.g. a frozen-statistics training step): fixed again
    assert net.calls - calls == 1
    chunked = MonteCarloInferer(4, seed=1, activation=None, chunk_size=2)
    chunked(x, net.train())
    assert list(chunked.plans.values()) == chunked._candidates(net), "a fixed chunk size keeps its configured plan"
    assert next(iter(chunked.plans.values())).chunk_size == 2
