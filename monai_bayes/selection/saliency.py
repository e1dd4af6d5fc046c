"""Parameter scores for choosing Bayesian weights (seed 000, SBN §2.2 step 2, and ablations).

* ``"saliency"`` (the seed's criterion, ``Top-k(|∇θ|)``): the gradient of the task loss accumulated over
  batches (default: one epoch), one forward and one backward per batch, reduced by a
  :class:`SaliencyCriterion`:

  ``"abs_of_sum"`` (default)
      ``|Σ_b ∇θ L_b|``: the magnitude of the gradient of the loss summed over the loader -- the seed's
      ``|∇θ|`` with ∇θ the training-loss gradient, and what the authors' code computes (``utils.py``,
      ``SensitivityAnalyzer.compute_sensitivity``: ``loss.backward()`` per batch accumulates the signed
      gradient in ``.grad``, scored after the loop);
  ``"squared_sum"``
      ``(Σ_b ∇θ L_b)²``: the authors' literal score (``torch.square(param.grad)``); the same ranking as
      ``"abs_of_sum"``;
  ``"sum_of_abs"``
      ``Σ_b |∇θ L_b|``: per-batch magnitudes summed, so opposite-signed batches do not cancel (this
      project's criterion before issue 16);
  ``"sum_of_squares"``
      ``Σ_b (∇θ L_b)²``: a Fisher-information-like variant (also ``"saliency_sq"``).

  With two batches of gradients +1 and -1 the first two give 0, ``"sum_of_abs"`` gives 2 and
  ``"sum_of_squares"`` 2.
* ``"saliency_sq"``: ``"saliency"`` with ``criterion="sum_of_squares"`` (kept for old configs).
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

__all__ = [
    "SaliencyBatchNorm",
    "SaliencyCriterion",
    "ScoreMethod",
    "compute_scores",
    "magnitude_scores",
    "random_scores",
    "saliency_scores",
]


class ScoreMethod(StrEnum):
    """How weights are scored for selection (see the module docstring)."""

    SALIENCY = "saliency"
    SALIENCY_SQ = "saliency_sq"
    MAGNITUDE = "magnitude"
    RANDOM = "random"


class SaliencyCriterion(StrEnum):
    """How per-batch gradients ``g_b`` become a score (module docstring)."""

    ABS_OF_SUM = "abs_of_sum"
    SQUARED_SUM = "squared_sum"
    SUM_OF_ABS = "sum_of_abs"
    SUM_OF_SQUARES = "sum_of_squares"


class SaliencyBatchNorm(StrEnum):
    """Mode of the batch-norm layers during the saliency passes.

    ``"train"``: normalise with each batch's statistics, as the network was trained and as the authors' code
    runs it (the network is never put in eval mode before ``compute_sensitivity``); the running statistics
    are restored afterwards, so the pass leaves the network unchanged. ``"eval"``: use the running statistics.
    Every other module (dropout, ...) is in eval mode either way.
    """

    TRAIN = "train"
    EVAL = "eval"


def _accumulate(score: torch.Tensor, grad: torch.Tensor, criterion: SaliencyCriterion) -> None:
    """Add one batch's gradient to the running score (signed for the ``*_sum`` criteria, in place)."""
    if criterion in (SaliencyCriterion.ABS_OF_SUM, SaliencyCriterion.SQUARED_SUM):
        score += grad
    elif criterion == SaliencyCriterion.SUM_OF_ABS:
        score += grad.abs()
    else:
        score += grad.square()


def _finish(score: torch.Tensor, criterion: SaliencyCriterion) -> torch.Tensor:
    """The score of a parameter from its accumulated gradients."""
    if criterion == SaliencyCriterion.ABS_OF_SUM:
        return score.abs()
    if criterion == SaliencyCriterion.SQUARED_SUM:
        return score.square()
    return score


def _batch_norm_state(network: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the running statistics of every batch-norm layer (restored after a train-mode pass)."""
    return {
        f"{name}.{b}": buf.detach().clone()
        for name, module in network.named_modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm)
        for b, buf in module.named_buffers(recurse=False)
        if buf is not None
    }


def _set_saliency_mode(network: nn.Module, batch_norm: SaliencyBatchNorm) -> None:
    """Eval mode everywhere; batch-norm layers in train mode when ``batch_norm == "train"``."""
    network.eval()
    if batch_norm == SaliencyBatchNorm.TRAIN:
        for module in network.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.train()


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
    criterion: SaliencyCriterion | str = SaliencyCriterion.ABS_OF_SUM,
    batch_norm: SaliencyBatchNorm | str = SaliencyBatchNorm.TRAIN,
    device: torch.device | str | None = None,
    prepare_batch: Callable[..., Any] = default_prepare_batch,
    include: ModulePattern | Sequence[ModulePattern] | None = None,
    exclude: ModulePattern | Sequence[ModulePattern] | None = None,
    all_reduce: bool = True,
    progress: bool = True,
) -> dict[str, torch.Tensor]:
    """Gradient saliency of the task loss over a loader (``|Σ_b ∇θ L_b|`` by default, see ``criterion``).

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
        shorthand for ``criterion="sum_of_squares"`` (``Σ_b ∇θ²``).
    criterion
        ``"abs_of_sum"`` (default), ``"squared_sum"``, ``"sum_of_abs"`` or ``"sum_of_squares"``
        (:class:`SaliencyCriterion`, module docstring).
    batch_norm
        ``"train"`` (default, as the authors' code) or ``"eval"``: batch-norm mode during the passes
        (:class:`SaliencyBatchNorm`); running statistics are restored afterwards.
    device
        where to run (default: the network's device).
    prepare_batch
        MONAI ``prepare_batch`` callable turning a batch into ``(inputs, targets)``.
    include, exclude
        restrict candidate modules (see :func:`~monai_bayes.layers.candidate_modules`).
    all_reduce
        under ``torch.distributed``, average each batch's gradients over the ranks before
        accumulating them (see :func:`_average_over_ranks`); all ranks then hold identical scores.
    progress
        show a progress bar.

    Returns
    -------
    ``{parameter name: scores}`` (float32, on the network's device).

    Raises
    ------
    ValueError
        For an unknown ``criterion`` / ``batch_norm`` or a loader without batches.
    """
    criterion = SaliencyCriterion.SUM_OF_SQUARES if squared else look_up("criterion", criterion, SaliencyCriterion)
    batch_norm = look_up("batch_norm", batch_norm, SaliencyBatchNorm)
    params = candidate_parameters(network, include, exclude)
    device = torch.device(device) if device is not None else next(network.parameters()).device
    scores = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    was_training = network.training
    requires = {n: p.requires_grad for n, p in network.named_parameters()}
    bn_state = _batch_norm_state(network)
    _set_saliency_mode(network, batch_norm)
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
                    _accumulate(scores[name], g, criterion)
                seen += 1
    finally:
        for n, p in network.named_parameters():
            p.requires_grad_(requires[n])
        network.train(was_training)
        buffers = dict(network.named_buffers())
        with torch.no_grad():
            for key, value in bn_state.items():
                buffers[key].copy_(value)
    if seen == 0:
        raise ValueError("the loader yielded no batch: saliency needs at least one batch of training data.")
    return {name: _finish(score, criterion) for name, score in scores.items()}


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
