"""Negative ELBO for stochastic networks (seed 000, SBN §2.2 step 3).

The loss::

    loss = (1/S) Σ_s NLL(f(x; θ_s), y)  +  β · KL(q(θ_b) ‖ p(θ_b)) / D

* the NLL is any task loss (weighted cross-entropy as in the seed, Dice+CE, BCE for multi-label),
  averaged over the ``S`` posterior samples the trainer's inferer drew (``(B, S, C, *sp)``
  predictions from :class:`~monai_bayes.inferers.MonteCarloInferer` with ``activation=None``;
  ``(B, C, *sp)`` predictions count as one sample);
* the KL is collected from the network's stochastic layers (:func:`~monai_bayes.layers.kl_divergence`):
  only Bayesian entries contribute, deterministic (Dirac) weights add nothing;
* ``β`` is set by :class:`~monai_bayes.handlers.KLAnnealingHandler` (or fixed);
* ``D`` is the *KL reduction*:

  ``"dataset"`` (default)
      ``D = dataset_size``: the minibatch estimate of the per-example negative ELBO
      (Blundell et al. 2015) when the NLL is a mean over the batch. If the NLL is also averaged
      over voxels, pass ``dataset_size = N_train × voxels per item`` to treat each voxel as a
      likelihood term.
  ``"batch"``
      ``D = batch size`` of the current step (the convention of bayesian-torch examples).
  ``"sum"``
      ``D = 1``: the raw KL, the ELBO exactly as the seed writes it (``L + β·D_KL``).
  ``"parameters"``
      ``D = number of Bayesian entries``: the mean KL per Bayesian weight, which keeps the KL on
      the NLL's scale whatever ``r_bayes`` is.
  ``"layer_mean"``
      the KL term itself changes: the mean KL over the Bayesian entries of each parameter tensor
      (weight, bias) of each layer, summed over tensors and layers (:meth:`PartialBayesLayer.kl_mean`),
      with ``D = 1`` -- the authors' code (``models/bayeslayers.py`` ``kl_div``: ``kl[~mask].mean()``;
      ``train.py``: ``loss = likelihood + kl_weight.get_weight(step, epoch) * kl``). Partial/full-Bayes
      layers only.
  a positive number
      ``D`` = that number.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import cast

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss
from monai.utils import StrEnum
from torch import nn
from torch.nn.modules.loss import _Loss

from monai_bayes.layers.base import kl_divergence, stochastic_layers
from monai_bayes.layers.partial import PartialBayesLayer
from monai_bayes.utils.options import look_up

__all__ = ["ELBOLoss", "KLReduction", "NLLName", "WeightedCrossEntropyLoss", "make_nll"]


class KLReduction(StrEnum):
    """What the KL is divided by in the ELBO (module docstring)."""

    DATASET = "dataset"
    BATCH = "batch"
    SUM = "sum"
    PARAMETERS = "parameters"
    LAYER_MEAN = "layer_mean"


class NLLName(StrEnum):
    """Task losses :func:`make_nll` builds by name."""

    CE = "ce"
    DICE_CE = "dice_ce"
    BCE = "bce"


class WeightedCrossEntropyLoss(_Loss):
    """Cross-entropy with optional class weights, accepting MONAI-style labels.

    ``input``: logits ``(B, C, *sp)``. ``target``: class indices ``(B, *sp)`` or ``(B, 1, *sp)``, or
    one-hot / soft labels ``(B, C, *sp)`` with ``C > 1``. For a single-channel (sigmoid) output,
    use :class:`torch.nn.BCEWithLogitsLoss` instead.
    """

    weight: torch.Tensor | None  # a buffer, registered in __init__

    def __init__(self, weight: Sequence[float] | torch.Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer("weight", None if weight is None else torch.as_tensor(weight, dtype=torch.float32))

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.dim() == input.dim() and target.shape[1] == 1:
            target = target[:, 0]
        if target.dim() == input.dim():
            return F.cross_entropy(input, target.to(input.dtype), weight=self.weight)
        return F.cross_entropy(input, target.long(), weight=self.weight)


def make_nll(name: str, class_weights: Sequence[float] | None = None) -> nn.Module:
    """A task loss by name: ``"ce"`` (weighted cross-entropy), ``"dice_ce"``, ``"bce"``.

    Parameters
    ----------
    name : NLLName or str
        The loss.
    class_weights : sequence of float, optional
        Class weights (CE / Dice-CE) or the positive-class weight (BCE).

    Returns
    -------
    nn.Module
        ``loss(logits (B, C, *sp), target)``.

    Raises
    ------
    ValueError
        For an unknown ``name`` (named ``nll`` in the message: the ELBO's argument).
    """
    name = look_up("nll", name, NLLName)
    if name == "ce":
        return WeightedCrossEntropyLoss(class_weights)
    weight = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
    if name == "dice_ce":
        return DiceCELoss(to_onehot_y=True, softmax=True, weight=weight)
    return nn.BCEWithLogitsLoss(pos_weight=weight)


class ELBOLoss(_Loss):
    """Negative evidence lower bound: sample-averaged NLL + ``β · KL / D`` (see module docstring).

    Parameters
    ----------
    network
        the stochastic network whose KL enters the loss (it may still be deterministic when
        the loss is built, e.g. in a bundle config, and converted before the first step).
    nll
        a loss module ``nll(logits (B, C, *sp), target)`` or ``"ce"``, ``"dice_ce"``, ``"bce"``.
    beta
        initial KL weight β (a :class:`~monai_bayes.handlers.KLAnnealingHandler` updates it).
    kl_reduction
        ``"dataset"``, ``"batch"``, ``"sum"``, ``"parameters"``, ``"layer_mean"`` or a positive divisor.
    dataset_size
        number of training items (required for ``"dataset"``).
    class_weights
        class weights of the named NLL (e.g. ``[0.1, 0.9]``: seed 000 weights CE).

    Notes
    -----
    The components of the last call are kept (detached, unscaled) in :attr:`last_nll` and
    :attr:`last_kl` for logging.
    """

    def __init__(
        self,
        network: nn.Module,
        nll: nn.Module | Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | str = "ce",
        beta: float = 1.0,
        kl_reduction: str | float = "dataset",
        dataset_size: int | None = None,
        class_weights: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(kl_reduction, str):
            try:
                kl_reduction = look_up("kl_reduction", kl_reduction, KLReduction).value
            except ValueError as err:
                raise ValueError(f"{err} Or pass a positive number.") from None
            if kl_reduction == "dataset" and (dataset_size is None or int(dataset_size) < 1):
                raise ValueError(
                    f"kl_reduction='dataset' needs dataset_size >= 1 (training items), got {dataset_size!r}."
                )
        elif not float(kl_reduction) > 0:
            raise ValueError(f"a numeric kl_reduction must be > 0, got {kl_reduction!r}.")
        self.network = [network]  # a list: keep the network out of this module's parameters/state dict
        self.nll = make_nll(nll, class_weights) if isinstance(nll, str) else nll
        self.beta = float(beta)
        self.kl_reduction = kl_reduction
        self.dataset_size = dataset_size
        self.last_nll: torch.Tensor | None = None
        self.last_kl: torch.Tensor | None = None

    def set_beta(self, beta: float) -> None:
        """Set the KL weight β (used by the annealing handler)."""
        self.beta = float(beta)

    def kl_divisor(self, batch_size: int) -> float:
        """The divisor ``D`` of the KL term for a step with ``batch_size`` items."""
        r = self.kl_reduction
        if r == "dataset":
            return float(cast(int, self.dataset_size))  # __init__ checks it is set for "dataset"
        if r == "batch":
            return float(batch_size)
        if r in ("sum", "layer_mean"):
            return 1.0
        if r == "parameters":
            n = sum(getattr(layer, "num_bayes", lambda: 0)() for _, layer in stochastic_layers(self.network[0]))
            return float(max(n, 1))
        return float(r)

    def kl_term(self) -> torch.Tensor:
        """The network's KL as the reduction defines it: the sum over entries, or per-layer means (``"layer_mean"``).

        Returns
        -------
        torch.Tensor
            Scalar KL in nats (before β and ``D``).

        Raises
        ------
        ValueError
            For ``"layer_mean"`` with a stochastic layer that is not a partial/full-Bayes layer.
        """
        network = self.network[0]
        if self.kl_reduction != "layer_mean":
            return kl_divergence(network)
        terms = []
        for name, layer in stochastic_layers(network):
            if not isinstance(layer, PartialBayesLayer):
                raise ValueError(
                    f"kl_reduction='layer_mean' averages over Bayesian weight entries (partial/full-Bayes layers); "
                    f"layer {name!r} is a {type(layer).__name__}."
                )
            terms.append(layer.kl_mean())
        return torch.stack(terms).sum()

    def sample_nll(self, preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """NLL averaged over samples: ``preds`` ``(B, S, C, *sp)`` (or ``(B, C, *sp)`` for one sample)."""
        if preds.dim() == target.dim() + 1:  # (B, S, C, ...) vs (B, C', ...)
            B, S = preds.shape[:2]
            flat = preds.transpose(0, 1).reshape(S * B, *preds.shape[2:])
            return self.nll(flat, torch.cat([target] * S))
        return self.nll(preds, target)

    def forward(self, preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not stochastic_layers(self.network[0]):
            raise ValueError(
                "ELBOLoss: the network has no stochastic layer; convert it first (to_partial_bayes, or attach a "
                "SaliencySelectionHandler before training starts)."
            )
        nll = self.sample_nll(preds, target)
        kl = self.kl_term()
        self.last_nll, self.last_kl = nll.detach(), kl.detach()
        return nll + self.beta * kl / self.kl_divisor(target.shape[0])
