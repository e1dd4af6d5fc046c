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
    """

    chunk_size: int
    shared_prefix: bool


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
    plans = [MCPlan(c, s) for c in sizes for s in shares]
    if chunk_size == AUTO and len(shares) > 1:
        plans = [p for p in plans if not (p.shared_prefix and p.chunk_size == 1)]
    return plans


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def choose_plan(
    candidates: list[MCPlan],
    run: Callable[[MCPlan], Any],
    device: torch.device,
    repeats: int = 2,
) -> tuple[MCPlan, dict[MCPlan, float]]:
    """Time every candidate plan and return the fastest one.

    One warm-up run of the first candidate, then ``repeats`` rounds that run each candidate once,
    interleaved (load changes hit all candidates alike); a candidate's time is its fastest round.
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
        Timed rounds.

    Returns
    -------
    tuple
        The fastest plan and ``{plan: seconds}`` (empty if there was a single candidate).
    """
    if len(candidates) == 1:
        return candidates[0], {}
    times = {plan: float("inf") for plan in candidates}
    with torch.no_grad(), preserved_global_rng(device):
        run(candidates[0])
        for _ in range(max(1, repeats)):
            for plan in candidates:
                _synchronize(device)
                start = time.perf_counter()
                run(plan)
                _synchronize(device)
                times[plan] = min(times[plan], time.perf_counter() - start)
    return min(candidates, key=lambda p: times[p]), times
