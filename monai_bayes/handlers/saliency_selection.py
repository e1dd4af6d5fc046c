"""SBN step 2 → 3 as a handler: score weights, convert the trained network, let the optimizer train ρ.

Ignite glue only: the step itself is :func:`monai_bayes.selection.select_bayesian_weights`, the
optimizer update :func:`monai_bayes.utils.optim.add_new_parameters`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from typing import Any

import torch
from ignite.engine import Engine, Events
from torch import nn

from monai_bayes.layers.partial import PartialBayesLayer
from monai_bayes.selection.report import LayerSelection, format_selection_report, selection_report
from monai_bayes.selection.select import SelectionSettings, select_bayesian_weights
from monai_bayes.utils.atomic import atomic_write_json
from monai_bayes.utils.optim import add_new_parameters

__all__ = ["SaliencySelectionHandler"]

logger = logging.getLogger(__name__)


class SaliencySelectionHandler:
    """On ``Events.STARTED``: select and convert the trained network, add the new ρ to the optimizer.

    The network is scored, converted to partial Bayes in place (μ = trained weights), the new ρ
    parameters join the optimizer, and the per-layer report is logged and saved. Attach it to the
    partial-Bayes trainer *after* the handler that loads the deterministic checkpoint. If the
    network is already partial-Bayes (e.g. training resumed from a partial-Bayes checkpoint), it
    keeps that selection.

    Parameters
    ----------
    loader : Iterable, optional
        Training batches for the saliency scores.
    loss_function : Callable, optional
        Task loss for the saliency scores.
    settings : SelectionSettings, optional
        Selection options; keyword ``options`` override its fields.
    rho_lr : float, optional
        Learning rate of the ρ parameter group (default: the optimizer's).
    network : nn.Module, optional
        Defaults to ``engine.network``.
    optimizer : torch.optim.Optimizer, optional
        Defaults to ``engine.optimizer``.
    report_path : str or os.PathLike, optional
        JSON file for the per-layer report.
    **options : Any
        Fields of :class:`~monai_bayes.selection.SelectionSettings` (``r_bayes``, ``method``,
        ``scope``, ``saliency_criterion``, ``saliency_batch_norm``, ``num_batches``, ``seed``, ``include``,
        ``exclude``, ``sigma_init``, ``prior_mu``, ``prior_sigma``), as bundle configs pass them.

    Raises
    ------
    ValueError
        For invalid options, or saliency scores without ``loader`` / ``loss_function``.
    TypeError
        For an unknown option.
    """

    def __init__(
        self,
        loader: Iterable[Any] | None = None,
        loss_function: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        settings: SelectionSettings | None = None,
        rho_lr: float | None = None,
        network: nn.Module | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        report_path: str | os.PathLike | None = None,
        **options: Any,
    ) -> None:
        self.settings = SelectionSettings.from_options(settings, **options)
        if self.settings.needs_data and (loader is None or loss_function is None):
            raise ValueError(f"method={str(self.settings.method)!r} needs a loader and a loss_function.")
        self.loader, self.loss_function = loader, loss_function
        self.rho_lr = rho_lr
        self.network, self.optimizer = network, optimizer
        self.report_path = report_path
        self.report: list[LayerSelection] | None = None

    def attach(self, engine: Engine) -> None:
        """Run on ``Events.STARTED`` of ``engine``.

        Parameters
        ----------
        engine : Engine
            The partial-Bayes trainer.
        """
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        """Select, convert, extend the optimizer, report.

        Parameters
        ----------
        engine : Engine
            The trainer (its ``network``, ``optimizer`` and ``prepare_batch`` are the defaults).
        """
        network = self.network if self.network is not None else engine.network  # type: ignore[attr-defined]  # MONAI workflows set .network; a plain ignite Engine needs network=
        optimizer = self.optimizer if self.optimizer is not None else engine.optimizer  # type: ignore[attr-defined]  # MONAI trainers set .optimizer; else pass optimizer=
        if any(isinstance(m, PartialBayesLayer) for m in network.modules()):
            logger.info("network is already partial-Bayes; keeping its selection")
            self.report = selection_report(network)
        else:
            self.report = select_bayesian_weights(
                network,
                self.settings,
                loader=self.loader,
                loss_function=self.loss_function,
                device=next(network.parameters()).device,
                prepare_batch=getattr(engine, "prepare_batch", None),
            )
        new = add_new_parameters(optimizer, network, lr=self.rho_lr)
        engine.state.bayes_selection = [r.as_dict() for r in self.report]  # type: ignore[attr-defined]  # ignite State takes run-defined attributes
        logger.info(
            "Bayesian weights per layer (%d new ρ tensors in the optimizer):\n%s",
            len(new),
            format_selection_report(self.report),
        )
        if self.report_path is not None:
            atomic_write_json(self.report_path, [r.as_dict() for r in self.report])
