"""Parameter scores for choosing Bayesian weights (seed 000, SBN §2.2 step 2, and ablations).

* ``"saliency"`` (the seed's criterion): ``Σ_batches |∇θ L|`` -- the gradient magnitude of the task
  loss, accumulated over batches (default: one epoch). One forward and one backward per batch;
  the gradient of every batch is taken in absolute value *before* summing, so opposite-signed
  gradients of different batches do not cancel.
* ``"saliency_sq"``: ``Σ_batches (∇θ L)²`` (a Fisher-information-like variant).
* ``"magnitude"``: ``|θ|`` (largest-magnitude ablation, no data needed).
* ``"random"``: i.i.d. uniform scores from a seeded generator (random ablation).

All return ``{parameter name: score tensor shaped like the parameter}`` over the parameters that
partial-Bayes conversion may change (conv / transposed-conv / linear weights and biases;
normalisation parameters are never candidates). Pass them to :func:`select_topk` or directly to
:func:`monai_bayes.networks.to_partial_bayes` with ``r_bayes``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import islice
from typing import Any

import torch
import torch.distributed as dist
from monai.engines.utils import default_prepare_batch
from monai.utils import StrEnum
from torch import nn

from monai_bayes.layers.base import sampling_mode
from monai_bayes.layers.candidates import ModulePattern, candidate_parameters
from monai_bayes.utils.options import look_up
from monai_bayes.utils.progress import progress_bar
from monai_bayes.utils.tensors import as_plain_tensor

__all__ = ["ScoreMethod", "compute_scores", "magnitude_scores", "random_scores", "saliency_scores"]


class ScoreMethod(StrEnum):
    """How weights are scored for selection (see the module docstring)."""

    SALIENCY = "saliency"
    SALIENCY_SQ = "saliency_sq"
    MAGNITUDE = "magnitude"
    RANDOM = "random"


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _average_over_ranks(grads: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """Average one batch's gradients over the ranks of an initialised process group.

    With equal per-rank batches and a mean-reduced loss this is the gradient of the *global* batch,
    so every rank accumulates ``|∇θ|`` of the same global batches and selects the same Top-k as a
    single process that sees those batches (DDP's own gradient all-reduce does not run here:
    ``torch.autograd.grad`` bypasses it).
    """
    world = _world_size()
    if world == 1:
        return grads
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world
    out, start = [], 0
    for g in grads:
        out.append(flat[start : start + g.numel()].view_as(g))
        start += g.numel()
    return tuple(out)


def saliency_scores(
    network: nn.Module,
    loader: Iterable[Any],
    loss_function: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    num_batches: int | None = None,
    squared: bool = False,
    device: torch.device | str | None = None,
    prepare_batch: Callable[..., Any] = default_prepare_batch,
    include: ModulePattern | Sequence[ModulePattern] | None = None,
    exclude: ModulePattern | Sequence[ModulePattern] | None = None,
    all_reduce: bool = True,
    progress: bool = True,
) -> dict[str, torch.Tensor]:
    """Accumulated gradient saliency ``Σ_b |∇θ L_b|`` (or ``Σ_b (∇θ L_b)²``) of the task loss.

    Parameters
    ----------
    network
        the trained deterministic network (its stochastic layers, if any, run in mean mode).
    loader
        batches as the MONAI trainer sees them (dicts with ``image``/``label`` by default).
    loss_function
        task loss ``L(prediction, target)`` (the NLL used for training).
    num_batches
        batches to accumulate over; ``None`` = one full pass over ``loader``.
    squared
        accumulate ``∇θ²`` instead of ``|∇θ|``.
    device
        where to run (default: the network's device).
    prepare_batch
        MONAI ``prepare_batch`` callable turning a batch into ``(inputs, targets)``.
    include, exclude
        restrict candidate modules (see :func:`~monai_bayes.layers.candidate_modules`).
    all_reduce
        under ``torch.distributed``, average each batch's gradients over the ranks before
        taking their magnitude (see :func:`_average_over_ranks`); all ranks then hold identical scores.
    progress
        show a progress bar.

    Returns
    -------
    ``{parameter name: scores}`` (float32, on the network's device).
    """
    params = candidate_parameters(network, include, exclude)
    device = torch.device(device) if device is not None else next(network.parameters()).device
    scores = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    was_training = network.training
    requires = {n: p.requires_grad for n, p in network.named_parameters()}
    network.eval()  # deterministic forward: no dropout, batch-norm running statistics
    for p in network.parameters():
        p.requires_grad_(False)
    for p in params.values():
        p.requires_grad_(True)
    total = num_batches if num_batches is not None else _safe_len(loader)
    batches = islice(loader, num_batches) if num_batches is not None else loader
    seen = 0
    try:
        with sampling_mode(network, "mean"):
            for batch in progress_bar(
                batches, enabled=None if progress else False, total=total, desc="saliency", leave=False
            ):
                inputs, targets = (as_plain_tensor(t) for t in prepare_batch(batch, device, False)[:2])
                grads = torch.autograd.grad(loss_function(network(inputs), targets), list(params.values()))
                if all_reduce:
                    grads = _average_over_ranks(grads)
                for (name, _), g in zip(params.items(), grads):
                    scores[name] += g.square() if squared else g.abs()
                seen += 1
    finally:
        for n, p in network.named_parameters():
            p.requires_grad_(requires[n])
        network.train(was_training)
    if seen == 0:
        raise ValueError("the loader yielded no batch: saliency needs at least one batch of training data.")
    return scores


def _safe_len(loader: Iterable[Any]) -> int | None:
    try:
        return len(loader)  # type: ignore[arg-type]  # a plain iterable may lack __len__: TypeError below
    except TypeError:
        return None


def magnitude_scores(
    network: nn.Module,
    include: ModulePattern | Sequence[ModulePattern] | None = None,
    exclude: ModulePattern | Sequence[ModulePattern] | None = None,
) -> dict[str, torch.Tensor]:
    """``|θ|`` for every candidate parameter (largest-magnitude ablation)."""
    return {n: p.detach().abs().float() for n, p in candidate_parameters(network, include, exclude).items()}


def random_scores(
    network: nn.Module,
    seed: int = 0,
    include: ModulePattern | Sequence[ModulePattern] | None = None,
    exclude: ModulePattern | Sequence[ModulePattern] | None = None,
) -> dict[str, torch.Tensor]:
    """I.i.d. ``U(0, 1)`` scores from a generator seeded with ``seed`` (random ablation)."""
    gen = torch.Generator().manual_seed(seed)
    return {
        n: torch.rand(p.shape, generator=gen).to(p.device)
        for n, p in candidate_parameters(network, include, exclude).items()
    }


def compute_scores(
    method: ScoreMethod | str,
    network: nn.Module,
    loader: Iterable[Any] | None = None,
    loss_function: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    *,
    seed: int = 0,
    **kwargs: Any,
) -> Mapping[str, torch.Tensor]:
    """Scores by ``method`` with one interface.

    Parameters
    ----------
    method : ScoreMethod or str
        ``"saliency"``, ``"saliency_sq"``, ``"magnitude"`` or ``"random"``.
    network : nn.Module
        The trained network.
    loader : Iterable, optional
        Training batches (saliency methods only).
    loss_function : Callable, optional
        Task loss (saliency methods only).
    seed : int
        Seed of the ``"random"`` scores.
    **kwargs : Any
        Further options of the scorer (``include``, ``exclude``; for saliency also ``num_batches``,
        ``device``, ``prepare_batch``, ``progress``, ...).

    Returns
    -------
    Mapping of str to torch.Tensor
        ``{parameter name: scores shaped like the parameter}``.

    Raises
    ------
    ValueError
        For an unknown ``method``, or a saliency method without ``loader`` / ``loss_function``.
    """
    method = look_up("method", method, ScoreMethod)
    if method in (ScoreMethod.SALIENCY, ScoreMethod.SALIENCY_SQ):
        if loader is None or loss_function is None:
            raise ValueError(f"method={method.value!r} needs a data loader and a loss_function.")
        return saliency_scores(network, loader, loss_function, squared=method == ScoreMethod.SALIENCY_SQ, **kwargs)
    include, exclude = kwargs.get("include"), kwargs.get("exclude")
    if method == ScoreMethod.MAGNITUDE:
        return magnitude_scores(network, include, exclude)
    return random_scores(network, seed, include, exclude)
