"""Stochastic BMR training (seed 002, §2.7) from MONAI's trainer and the BMR pruning handler.

:func:`train_bmr` is the one library entry point a bundle's method registry can call: it turns a
deterministic network into the flat model (eq. 15–16), trains it with the variational free energy
(ELBO with β = 1) and alternates BMR pruning with further optimisation for ``rounds`` rounds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from monai_bayes.handlers.bmr_pruning import BMRPruningHandler
from monai_bayes.layers import PartialBayesLayer
from monai_bayes.reduction import DEFAULT_GAMMA0, DEFAULT_K_MAX, PruneReport, prune_report, to_flat_bayes
from monai_bayes.workflows.sparse_bayes import Loss, OptimizerSettings, train_bayesian

__all__ = ["BMRTrainingResult", "train_bmr"]


@dataclass
class BMRTrainingResult:
    """What :func:`train_bmr` produced.

    Attributes
    ----------
    network : torch.nn.Module
        The trained, pruned flat network (converted in place).
    passes : list of PruneReport
        The pruning state after each BMR pass, in order.
    report : PruneReport
        The final pruning state.
    cost : dict
        The training cost summary (:class:`~monai_bayes.handlers.TrainingCostHandler`).
    """

    network: nn.Module
    passes: list[PruneReport] = field(default_factory=list)
    report: PruneReport = field(default_factory=PruneReport)
    cost: dict[str, Any] = field(default_factory=dict)


def train_bmr(
    network: nn.Module,
    train_loader: Iterable[Any],
    *,
    loss_function: Loss | str = "ce",
    gamma0: float = DEFAULT_GAMMA0,
    sigma_init: float | str = "relative",
    flat_epochs: int = 50,
    rounds: int = 5,
    epochs_per_round: int = 10,
    num_samples: int = 1,
    kl_reduction: str | float = "dataset",
    dataset_size: int | None = None,
    alpha0: float = 1.0,
    beta0: float = 1.0,
    k_max: int = DEFAULT_K_MAX,
    optimizer: OptimizerSettings | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
    prepare_batch: Callable[..., Any] | None = None,
) -> BMRTrainingResult:
    """Train ``network`` by stochastic BMR: flat model, then ``rounds`` × {BMR prune, optimise}.

    Parameters
    ----------
    network : torch.nn.Module
        A deterministic network (made the flat model with prior scale ``gamma0``) or a network
        already converted with :func:`~monai_bayes.reduction.to_flat_bayes` (used as is).
    train_loader : iterable
        Training batches (MONAI dictionaries with ``image`` / ``label``).
    loss_function : torch.nn.Module or str
        The NLL (``"ce"``, ``"dice_ce"``, ``"bce"`` or a module).
    gamma0 : float
        Prior scale γ₀ of the flat model (seed: 0.1).
    sigma_init : float or str
        Initial posterior σ (weight units) when ``network`` is converted here
        (:func:`~monai_bayes.networks.to_partial_bayes`).
    flat_epochs : int
        Epochs of flat-model training before the first pass (≥ 1).
    rounds : int
        Number of BMR passes, each followed by ``epochs_per_round`` epochs of optimisation (seed: 5).
    epochs_per_round : int
        Epochs between passes (≥ 1).
    num_samples : int
        Posterior samples per training step.
    kl_reduction, dataset_size
        KL scaling of the ELBO (:class:`~monai_bayes.losses.ELBOLoss`); β is fixed at 1.
    alpha0, beta0, k_max
        Spike-and-slab options (:func:`~monai_bayes.reduction.bmr_masks`).
    optimizer : OptimizerSettings, optional
        Optimizer of the run (default: SGD as in :class:`~monai_bayes.workflows.OptimizerSettings`).
    device, progress, prepare_batch
        As in :func:`~monai_bayes.workflows.train_bayesian`.

    Returns
    -------
    BMRTrainingResult
        The network, the report after each pass and at the end, and the training cost.

    Raises
    ------
    ValueError
        If ``flat_epochs``, ``rounds`` or ``epochs_per_round`` is below 1.
    """
    for name, value in (("flat_epochs", flat_epochs), ("rounds", rounds), ("epochs_per_round", epochs_per_round)):
        if int(value) < 1:
            raise ValueError(f"{name} must be >= 1, got {value!r}.")
    if not any(isinstance(m, PartialBayesLayer) for m in network.modules()):
        to_flat_bayes(network, gamma0=gamma0, sigma_init=sigma_init)
    handler = BMRPruningHandler(
        network, first=flat_epochs, interval=epochs_per_round, rounds=rounds, alpha0=alpha0, beta0=beta0, k_max=k_max
    )
    cost = train_bayesian(
        network,
        train_loader,
        loss_function=loss_function,
        max_epochs=flat_epochs + rounds * epochs_per_round,
        num_samples=num_samples,
        kl_schedule="constant",
        beta_start=1.0,
        beta_end=1.0,
        kl_reduction=kl_reduction,
        dataset_size=dataset_size,
        optimizer=optimizer,
        device=device,
        progress=progress,
        prepare_batch=prepare_batch,
        handlers=[handler],
    )
    return BMRTrainingResult(network, [r.report for r in handler.history], prune_report(network), cost)
