"""Base class for cumulative metrics that report several named per-case quantities.

MONAI's :class:`~monai.metrics.CumulativeIterationMetric` keeps one buffer per item returned by
``_compute_tensor``. :class:`MultiQuantityMetric` names those buffers (e.g. GED and its three terms),
reduces any of them with :func:`monai.metrics.utils.do_metric_reduction`, and exposes them as a
``{name: (N, K) tensor}`` dictionary for per-case reports.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.metrics import CumulativeIterationMetric
from monai.metrics.utils import do_metric_reduction
from monai.utils import MetricReduction

__all__ = ["MultiQuantityMetric"]


class MultiQuantityMetric(CumulativeIterationMetric):
    """Cumulative metric whose ``_compute_tensor`` returns one (B, K) tensor per name in ``quantities``.

    Subclasses set the class attribute ``quantities`` (buffer order) and return a list of tensors in that
    order from ``_compute_tensor`` (a single tensor is accepted when there is one quantity).

    Parameters
    ----------
    reduction
        Default :class:`monai.utils.MetricReduction` applied by :meth:`aggregate` (NaN values are skipped).
    get_not_nans
        If True, :meth:`aggregate` returns ``(value, not_nans)`` like MONAI's metrics.
    primary
        Quantity returned by :meth:`aggregate` when no ``quantity`` is given; defaults to ``quantities[0]``.
    """

    quantities: tuple[str, ...] = ()

    def __init__(
        self,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        get_not_nans: bool = False,
        primary: str | None = None,
    ) -> None:
        super().__init__()
        if not self.quantities:
            raise TypeError(f"{type(self).__name__} must define the class attribute `quantities`.")
        self.reduction = reduction
        self.get_not_nans = get_not_nans
        self.primary = primary if primary is not None else self.quantities[0]
        self._check_quantity(self.primary, "primary")

    def _check_quantity(self, quantity: str, name: str = "quantity") -> None:
        if quantity not in self.quantities:
            raise ValueError(f"{name} must be one of {self.quantities}, got {quantity!r}.")

    def get_details(self) -> dict[str, torch.Tensor]:
        """Per-case values of every quantity, ``{name: (N, K) tensor}``, in ``quantities`` order.

        Raises
        ------
        ValueError
            If nothing has been accumulated yet.
        """
        data = self.get_buffer()
        if data is None:
            raise ValueError(f"{type(self).__name__} has no accumulated values; call it on a batch first.")
        buffers = [data] if isinstance(data, torch.Tensor) else list(data)
        if len(buffers) != len(self.quantities):
            raise ValueError(f"expected {len(self.quantities)} buffers {self.quantities}, got {len(buffers)}.")
        return dict(zip(self.quantities, buffers))

    def aggregate(
        self, reduction: MetricReduction | str | None = None, quantity: str | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Reduce the per-case values of one quantity (default: ``self.primary``).

        Parameters
        ----------
        reduction
            Overrides ``self.reduction`` (``"none"``, ``"mean"``, ``"sum"``, ``"mean_batch"``, ...).
        quantity
            Which quantity to reduce, one of ``self.quantities``.
        """
        quantity = self.primary if quantity is None else quantity
        self._check_quantity(quantity)
        data = self.get_details()[quantity]
        f, not_nans = do_metric_reduction(data, reduction or self.reduction)
        return (f, not_nans) if self.get_not_nans else f

    def aggregate_all(self, reduction: MetricReduction | str | None = None) -> dict[str, torch.Tensor]:
        """Reduce every quantity; returns ``{name: reduced tensor}`` (not_nans are dropped)."""
        details = self.get_details()
        return {q: do_metric_reduction(v, reduction or self.reduction)[0] for q, v in details.items()}

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any) -> Any:
        raise NotImplementedError(f"Subclass {type(self).__name__} must implement _compute_tensor.")
