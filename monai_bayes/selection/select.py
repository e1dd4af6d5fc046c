"""SBN step 2 in one call: score the weights of a trained network, make the Top ``r_bayes`` Bayesian.

:class:`SelectionSettings` holds the options of the step once (validated on construction);
:func:`select_bayesian_weights`, :class:`~monai_bayes.handlers.SaliencySelectionHandler` and the
bundle's selection step all take them as keywords and build one settings object from them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import torch
from torch import nn

from monai_bayes.layers.candidates import ModulePattern
from monai_bayes.networks.convert import to_partial_bayes
from monai_bayes.selection.report import LayerSelection, selection_report
from monai_bayes.selection.saliency import SaliencyBatchNorm, SaliencyCriterion, ScoreMethod, compute_scores
from monai_bayes.selection.topk import SelectionScope, check_r_bayes, select_topk
from monai_bayes.utils.options import look_up

__all__ = ["SelectionSettings", "select_bayesian_weights"]


@dataclass(frozen=True)
class SelectionSettings:
    """Options of the selection step (seed 000, SBN §2.2 step 2), validated on construction.

    Parameters
    ----------
    r_bayes : float
        Fraction in (0, 1] of the candidate entries made Bayesian (seed 000: 0.01).
    method : ScoreMethod or str
        Score: ``"saliency"`` (the seed's ``|∇θ|``), ``"saliency_sq"``, ``"magnitude"`` or ``"random"``.
    saliency_criterion : SaliencyCriterion or str
        How the saliency reduces per-batch gradients: ``"abs_of_sum"`` (``|Σ_b g_b|``, the seed's and the
        authors' code, default), ``"squared_sum"``, ``"sum_of_abs"`` (``Σ_b |g_b|``) or ``"sum_of_squares"``.
    saliency_batch_norm : SaliencyBatchNorm or str
        Batch-norm mode during the saliency passes: ``"train"`` (the authors' code, default) or ``"eval"``.
    scope : SelectionScope or str
        Top-k over the whole network (``"global"``, the seed's) or within each layer (``"layer"``).
    num_batches : int, optional
        Batches the saliency is accumulated over (default: one pass over the loader).
    seed : int
        Seed of the ``"random"`` scores.
    include, exclude : ModulePattern or sequence of ModulePattern, optional
        Restrict the candidate modules (see :func:`~monai_bayes.layers.candidate_modules`).
    sigma_init : float or str
        Initial σ of the Bayesian entries: ``"relative"`` (``max(0.05·|μ|, 1e-3)``), ``"rho_normal"``
        (``σ = softplus(ρ)``, ``ρ ~ N(-3, 1)``, the authors' code) or a constant.
    prior_mu, prior_sigma : float
        Gaussian prior ``N(prior_mu, prior_sigma²)`` of the Bayesian entries (seed 000: ``N(0, 1)``).

    Raises
    ------
    ValueError
        For ``r_bayes`` outside (0, 1], an unknown ``method`` / ``scope`` / saliency option, ``num_batches < 1`` or
        ``prior_sigma <= 0``.
    """

    r_bayes: float = 0.01
    method: ScoreMethod | str = ScoreMethod.SALIENCY
    scope: SelectionScope | str = SelectionScope.GLOBAL
    saliency_criterion: SaliencyCriterion | str = SaliencyCriterion.ABS_OF_SUM
    saliency_batch_norm: SaliencyBatchNorm | str = SaliencyBatchNorm.TRAIN
    num_batches: int | None = None
    seed: int = 0
    include: ModulePattern | Sequence[ModulePattern] | None = None
    exclude: ModulePattern | Sequence[ModulePattern] | None = None
    sigma_init: float | str = "relative"
    prior_mu: float = 0.0
    prior_sigma: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "r_bayes", check_r_bayes(self.r_bayes))
        object.__setattr__(self, "method", look_up("method", self.method, ScoreMethod))
        object.__setattr__(self, "scope", look_up("scope", self.scope, SelectionScope))
        criterion = look_up("saliency_criterion", self.saliency_criterion, SaliencyCriterion)
        object.__setattr__(self, "saliency_criterion", criterion)
        batch_norm = look_up("saliency_batch_norm", self.saliency_batch_norm, SaliencyBatchNorm)
        object.__setattr__(self, "saliency_batch_norm", batch_norm)
        if self.num_batches is not None and (isinstance(self.num_batches, bool) or int(self.num_batches) < 1):
            raise ValueError(f"num_batches must be a positive int or None, got {self.num_batches!r}.")
        if not float(self.prior_sigma) > 0:
            raise ValueError(f"prior_sigma must be > 0, got {self.prior_sigma!r}.")

    @property
    def needs_data(self) -> bool:
        """Whether the score needs a data loader and a loss function (the saliency scores)."""
        return self.method in (ScoreMethod.SALIENCY, ScoreMethod.SALIENCY_SQ)

    @classmethod
    def from_options(cls, settings: SelectionSettings | None = None, **options: Any) -> SelectionSettings:
        """``settings`` (or the defaults) with the keyword ``options`` replacing its fields.

        Parameters
        ----------
        settings : SelectionSettings, optional
            Starting point (default: ``SelectionSettings()``).
        **options : Any
            Field values, as bundle configs pass them.

        Returns
        -------
        SelectionSettings
            The validated settings.

        Raises
        ------
        TypeError
            If an option is not a field of :class:`SelectionSettings`.
        """
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - names)
        if unknown:
            raise TypeError(f"unknown selection option(s) {unknown}; expected some of {sorted(names)}.")
        return replace(settings, **options) if settings is not None else cls(**options)


def select_bayesian_weights(
    network: nn.Module,
    settings: SelectionSettings | None = None,
    *,
    loader: Iterable[Any] | None = None,
    loss_function: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    device: torch.device | str | None = None,
    prepare_batch: Callable[..., Any] | None = None,
    progress: bool = True,
    **options: Any,
) -> list[LayerSelection]:
    """Score the weights of a trained network, make the Top ``r_bayes`` Bayesian in place, report where.

    Parameters
    ----------
    network : nn.Module
        The trained deterministic network (converted in place).
    settings : SelectionSettings, optional
        The selection options; keyword ``options`` (``r_bayes=``, ``method=``, ...) override its fields.
    loader : Iterable, optional
        Training batches for the saliency scores.
    loss_function : Callable, optional
        Task loss ``L(prediction, target)`` for the saliency scores.
    device : torch.device or str, optional
        Where the saliency passes run (default: the network's device).
    prepare_batch : Callable, optional
        MONAI ``prepare_batch`` turning a batch into ``(inputs, targets)``.
    progress : bool
        Show a progress bar for the saliency passes (on a terminal only, see
        :func:`~monai_bayes.utils.progress.progress_bar`).
    **options : Any
        Fields of :class:`SelectionSettings`.

    Returns
    -------
    list of LayerSelection
        The per-layer report (:func:`~monai_bayes.selection.selection_report`).

    Raises
    ------
    ValueError
        For invalid settings, or saliency scores without ``loader`` / ``loss_function``.
    """
    settings = SelectionSettings.from_options(settings, **options)
    kwargs: dict[str, Any] = {"include": settings.include, "exclude": settings.exclude}
    if settings.needs_data:
        kwargs.update(num_batches=settings.num_batches, device=device, progress=progress)
        kwargs.update(batch_norm=settings.saliency_batch_norm)
        if settings.method == ScoreMethod.SALIENCY:  # "saliency_sq" fixes its own criterion
            kwargs.update(criterion=settings.saliency_criterion)
        if prepare_batch is not None:
            kwargs["prepare_batch"] = prepare_batch
    scores = compute_scores(settings.method, network, loader, loss_function, seed=settings.seed, **kwargs)
    to_partial_bayes(
        network,
        select_topk(scores, settings.r_bayes, settings.scope),
        include=settings.include,
        exclude=settings.exclude,
        sigma_init=settings.sigma_init,
        prior_mu=settings.prior_mu,
        prior_sigma=settings.prior_sigma,
        inplace=True,
    )
    return selection_report(network)
