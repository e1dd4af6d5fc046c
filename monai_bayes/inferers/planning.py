"""How a Monte-Carlo call runs its ``S`` samples: chunk size and shared prefix, fixed or probed.

A :class:`MCPlan` says how many samples go through one batched pass (``chunk_size``) and whether
each pass runs the part of the network before the first stochastic layer once
(:func:`~monai_bayes.layers.shared_prefix.shared_prefix_forward`). Which plan is fastest depends
on the network, the input shape and the device: on a CPU one batch of ``S·B`` items can cost twice
``S`` passes of ``B`` (worse cache use), on a GPU the large batch saves kernel launches, and a long
shared prefix favours large chunks. :func:`choose_plan` therefore *measures*: it times each
candidate plan on the actual input and keeps the fastest. The plain loop over ``S`` forwards
(``chunk_size=1`` without shared prefix) is always a candidate, so the chosen plan does not lose to
it beyond timing noise.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch

from monai_bayes.utils.random import preserved_global_rng

__all__ = ["AUTO", "MCPlan", "candidate_chunk_sizes", "choose_plan", "plan_candidates"]

AUTO: Literal["auto"] = "auto"


@dataclass(frozen=True)
class MCPlan:
    """How one Monte-Carlo call runs its samples.

    Attributes
    ----------
    chunk_size : int
        Samples per batched pass (``1`` = a loop of single-sample passes).
    shared_prefix : bool
        Whether each pass computes the layers before the first stochastic layer once.
    sparse_input : bool
        With ``shared_prefix``: whether stochastic layers that still see the shared input compute their
        samples from it directly (``shared_prefix_forward(..., sparse_shared_input=True)``: one dense conv
        plus one conv for all sparse perturbations).
    split_conv : bool
        With ``shared_prefix``: whether a convolution reading a skip concatenation of shared and per-sample
        activations runs its shared-channel half once (``shared_prefix_forward(..., split_conv=True)``).
    """

    chunk_size: int
    shared_prefix: bool
    sparse_input: bool = False
    split_conv: bool = False

    def label(self) -> str:
        """Short description for logs and benchmarks, e.g. ``"8/pass, shared, sparse input, split conv"``."""
        parts = [f"{self.chunk_size}/pass"]
        if self.shared_prefix:
            parts.append("shared")
        if self.sparse_input:
            parts.append("sparse input")
        if self.split_conv:
            parts.append("split conv")
        return ", ".join(parts)


def candidate_chunk_sizes(num_samples: int) -> list[int]:
    """``1``, the powers of two below ``S``, and ``S`` itself (e.g. ``[1, 2, 4, 8]`` for ``S = 8``)."""
    sizes = {1, num_samples}
    size = 2
    while size < num_samples:
        sizes.add(size)
        size *= 2
    return sorted(sizes)


def plan_candidates(
    num_samples: int,
    chunk_size: int | Literal["auto"],
    shared_prefix: bool | Literal["auto"],
    can_share: bool,
    can_sparse: bool = False,
    split_conv: bool = False,
) -> list[MCPlan]:
    """The plans a probe compares, the plain loop (``MCPlan(1, False)``) first where it is allowed.

    Parameters
    ----------
    num_samples : int
        ``S``.
    chunk_size : int or "auto"
        A fixed chunk size (capped at ``S``) or ``"auto"`` (:func:`candidate_chunk_sizes`).
    shared_prefix : bool or "auto"
        Fixed, or ``"auto"`` to compare both where ``can_share``.
    can_share : bool
        Whether the network is an ``nn.Module`` whose prefix can be shared.
    can_sparse : bool
        Whether a stochastic layer can take the shared input directly
        (:meth:`~monai_bayes.layers.base.StochasticLayer.takes_shared_input`): each shared plan then also
        comes with ``sparse_input=True``.
    split_conv : bool
        Whether the shared plans split the convolutions after skip concatenations (``MCPlan.split_conv``).

    Returns
    -------
    list of MCPlan
        At least one plan. With ``chunk_size="auto"`` the shared prefix is not tried at chunk size 1
        (one sample per pass shares nothing).

    Raises
    ------
    ValueError
        If ``shared_prefix=True`` but the network cannot share its prefix.
    """
    if shared_prefix is True and not can_share:
        raise ValueError("shared_prefix=True needs the network to be a torch.nn.Module; got another callable.")
    sizes = candidate_chunk_sizes(num_samples) if chunk_size == AUTO else [min(int(chunk_size), num_samples)]
    shares = ([False, True] if can_share else [False]) if shared_prefix == AUTO else [bool(shared_prefix)]
    plans = [MCPlan(c, s, split_conv=s and split_conv) for c in sizes for s in shares]
    if chunk_size == AUTO and len(shares) > 1:
        plans = [p for p in plans if not (p.shared_prefix and p.chunk_size == 1)]
    if can_sparse:
        plans += [MCPlan(p.chunk_size, True, True, split_conv) for p in plans if p.shared_prefix and p.chunk_size > 1]
    return plans


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_rounds(
    plans: list[MCPlan], run: Callable[[MCPlan], Any], device: torch.device, rounds: int, times: dict[MCPlan, float]
) -> None:
    """Run each plan once per round, interleaved, keeping each plan's fastest time in ``times``."""
    for _ in range(max(1, rounds)):
        for plan in plans:
            _synchronize(device)
            start = time.perf_counter()
            run(plan)
            _synchronize(device)
            times[plan] = min(times[plan], time.perf_counter() - start)


def choose_plan(
    candidates: list[MCPlan],
    run: Callable[[MCPlan], Any],
    device: torch.device,
    repeats: int = 2,
    runoff: int = 3,
) -> tuple[MCPlan, dict[MCPlan, float]]:
    """Time every candidate plan and return the fastest one, never a plan that loses to the plain loop.

    One warm-up run of the first candidate, then ``repeats`` rounds that run each candidate once,
    interleaved (load changes hit all candidates alike); a candidate's time is its fastest round.
    When the plain loop (``MCPlan(1, False)``) is a candidate and another plan came out fastest, a
    *run-off* of ``runoff`` further interleaved rounds times the two afresh (a single lucky round on
    a loaded machine once chose a plan 20 % slower than the loop); the loop is kept unless the other
    plan is faster in the run-off too (the returned times of the two are their run-off times).
    Runs without autograd and restores the global RNG afterwards, so probing does not change what
    the caller's next random draws are.

    Parameters
    ----------
    candidates : list of MCPlan
        Plans to compare (:func:`plan_candidates`).
    run : callable
        ``run(plan)`` performs the whole ``S``-sample computation for the input being planned.
    device : torch.device
        Device of the computation (CUDA is synchronised around each timing).
    repeats : int
        Timed rounds over all candidates.
    runoff : int
        Extra rounds of the winner against the plain loop (0: none).

    Returns
    -------
    tuple
        The fastest plan and ``{plan: seconds}`` (empty if there was a single candidate).
    """
    if len(candidates) == 1:
        return candidates[0], {}
    times = {plan: float("inf") for plan in candidates}
    loop = MCPlan(1, False)
    with torch.no_grad(), preserved_global_rng(device):
        run(candidates[0])
        _time_rounds(candidates, run, device, repeats, times)
        best = min(candidates, key=lambda p: times[p])
        if runoff > 0 and loop in times and best != loop:
            fresh = {best: float("inf"), loop: float("inf")}  # new timings: a lucky first round cannot carry over
            _time_rounds([best, loop], run, device, runoff, fresh)
            times.update(fresh)
            best = min(fresh, key=lambda p: (fresh[p], p != loop))
    return best, times
