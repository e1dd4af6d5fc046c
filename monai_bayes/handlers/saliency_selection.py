"""SBN step 2 → 3 as a handler: score weights, convert the trained network, let the optimizer train ρ."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from ignite.engine import Engine, Events
from torch import nn

from monai_bayes.layers.partial import PartialBayesLayer
from monai_bayes.networks.convert import ModulePattern, to_partial_bayes
from monai_bayes.selection.report import LayerSelection, format_selection_report, selection_report
from monai_bayes.selection.saliency import ScoreMethod, compute_scores
from monai_bayes.selection.topk import SelectionScope, check_r_bayes
from monai_bayes.utils.atomic import atomic_write_json

__all__ = ["SaliencySelectionHandler", "add_new_parameters", "select_bayesian_weights"]

logger = logging.getLogger(__name__)


def add_new_parameters(
    optimizer: torch.optim.Optimizer, network: nn.Module, lr: float | None = None, weight_decay: float = 0.0
) -> list[nn.Parameter]:
    """Add the parameters of ``network`` the optimizer does not hold yet (e.g. new ρ) as a param group.

    ρ gets ``weight_decay=0`` by default: decaying ρ towards 0 would pull σ towards softplus(0) ≈ 0.69,
    which is not a meaningful regulariser; the KL term is the prior on σ.
    """
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    new = [p for p in network.parameters() if id(p) not in held and p.requires_grad]
    if new:
        group: dict[str, Any] = {"params": new, "weight_decay": weight_decay}
        if lr is not None:
            group["lr"] = lr
        optimizer.add_param_group(group)
    return new


def select_bayesian_weights(
    network: nn.Module,
    *,
    r_bayes: float = 0.01,
    method: ScoreMethod = "saliency",
    scope: SelectionScope = "global",
    loader: Iterable[Any] | None = None,
    loss_function: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    num_batches: int | None = None,
    seed: int = 0,
    include: ModulePattern | Sequence[ModulePattern] | None = None,
    exclude: ModulePattern | Sequence[ModulePattern] | None = None,
    sigma_init: float | str = "relative",
    prior_mu: float = 0.0,
    prior_sigma: float = 1.0,
    device: torch.device | str | None = None,
    prepare_batch: Callable[..., Any] | None = None,
    progress: bool = True,
) -> list[LayerSelection]:
    """Score the weights of a trained network, make the Top ``r_bayes`` Bayesian in place, report where.

    Returns the per-layer report (:func:`~monai_bayes.selection.selection_report`).
    """
    check_r_bayes(r_bayes)
    kwargs: dict[str, Any] = {"include": include, "exclude": exclude}
    if method in ("saliency", "saliency_sq"):
        kwargs.update(num_batches=num_batches, device=device, progress=progress)
        if prepare_batch is not None:
            kwargs["prepare_batch"] = prepare_batch
    scores = compute_scores(method, network, loader, loss_function, seed=seed, **kwargs)
    to_partial_bayes(
        network,
        dict(scores),
        r_bayes=r_bayes,
        scope=scope,
        include=include,
        exclude=exclude,
        sigma_init=sigma_init,
        prior_mu=prior_mu,
        prior_sigma=prior_sigma,
        inplace=True,
    )
    return selection_report(network)


class SaliencySelectionHandler:
    """On ``Events.STARTED``: score the trained network's weights, convert it to partial Bayes in place
    (μ = trained weights), add the new ρ parameters to the optimizer, and log/save the per-layer report.

    Attach it to the partial-Bayes trainer *after* the handler that loads the deterministic
    checkpoint. If the network is already partial-Bayes (e.g. training resumed from a partial-Bayes
    checkpoint), it does nothing.

    Parameters
    ----------
    loader, loss_function: data and task loss for the saliency scores (``method="saliency"``).
    r_bayes, method, scope, num_batches, seed, include, exclude, sigma_init, prior_mu, prior_sigma:
        as :func:`select_bayesian_weights`.
    rho_lr: learning rate of the ρ parameter group (default: the optimizer's).
    network, optimizer: default to ``engine.network`` / ``engine.optimizer``.
    report_path: optional JSON file for the per-layer report.
    """

    def __init__(
        self,
        loader: Iterable[Any] | None = None,
        loss_function: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        r_bayes: float = 0.01,
        method: ScoreMethod = "saliency",
        scope: SelectionScope = "global",
        num_batches: int | None = None,
        seed: int = 0,
        include: ModulePattern | Sequence[ModulePattern] | None = None,
        exclude: ModulePattern | Sequence[ModulePattern] | None = None,
        sigma_init: float | str = "relative",
        prior_mu: float = 0.0,
        prior_sigma: float = 1.0,
        rho_lr: float | None = None,
        network: nn.Module | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        report_path: str | os.PathLike | None = None,
    ) -> None:
        check_r_bayes(r_bayes)
        if method in ("saliency", "saliency_sq") and (loader is None or loss_function is None):
            raise ValueError(f"method={method!r} needs a loader and a loss_function.")
        self.selection_kwargs = dict(
            r_bayes=r_bayes,
            method=method,
            scope=scope,
            loader=loader,
            loss_function=loss_function,
            num_batches=num_batches,
            seed=seed,
            include=include,
            exclude=exclude,
            sigma_init=sigma_init,
            prior_mu=prior_mu,
            prior_sigma=prior_sigma,
        )
        self.rho_lr = rho_lr
        self.network, self.optimizer = network, optimizer
        self.report_path = report_path
        self.report: list[LayerSelection] | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        network = self.network if self.network is not None else engine.network
        optimizer = self.optimizer if self.optimizer is not None else engine.optimizer
        if any(isinstance(m, PartialBayesLayer) for m in network.modules()):
            logger.info("network is already partial-Bayes; keeping its selection")
            self.report = selection_report(network)
        else:
            device = next(network.parameters()).device
            prepare = getattr(engine, "prepare_batch", None)
            self.report = select_bayesian_weights(
                network, device=device, prepare_batch=prepare, **self.selection_kwargs
            )
        new = add_new_parameters(optimizer, network, lr=self.rho_lr)
        engine.state.bayes_selection = [r.as_dict() for r in self.report]
        logger.info(
            "Bayesian weights per layer (%d new ρ tensors in the optimizer):\n%s",
            len(new),
            format_selection_report(self.report),
        )
        if self.report_path is not None:
            atomic_write_json(self.report_path, [r.as_dict() for r in self.report])
