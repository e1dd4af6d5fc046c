r"""Stochastic-gradient MCMC samplers as :class:`torch.optim.Optimizer` subclasses (seed 004, §2.2.1).

Both samplers take the gradient of the *per-datum* loss that a MONAI/Ignite trainer already
computes (the mean NLL over a mini-batch) and turn the optimiser into a sampler of

.. math::  p(\theta \mid D)^{1/T} \propto \exp(-U(\theta)/T), \qquad
           U(\theta) = N\,\overline{\ell}(\theta) + \tfrac{\lambda}{2}\lVert\theta\rVert^2,

with ``N`` the dataset size, :math:`\overline{\ell}` the mean NLL per datum, :math:`\lambda` the
Gaussian prior precision (``prior_precision``) and ``T`` the temperature. The learning rate ``lr``
is the step on :math:`\overline{\ell}`, so the step on ``U`` is :math:`\eta = \mathrm{lr}/N` and the
injected noise has standard deviation :math:`\sqrt{2\,\mathrm{lr}\,T/N}` (SGLD, Welling & Teh 2011)
or :math:`\sqrt{2\,\alpha\,\mathrm{lr}\,T/N}` (SGHMC with friction :math:`\alpha = 1 -`
``momentum``, Chen et al. 2014, eq. 15, in the parametrisation of Zhang et al. 2020's cSG-MCMC code).

**Segmentation losses average over voxels.** A MONAI segmentation loss is the mean over the voxels of
a batch, and the likelihood of a labelled image is the *product* over its voxels, so ``N`` is the number of
labelled voxels (items × voxels per item: :func:`build_sampler`'s ``terms_per_item``,
:func:`voxels_per_item`), not the number of images. Counting images instead inflates the noise variance by
the voxel count (4096 for a 64² patch): on the LIDC bundle that noise erased the segmentation (Dice 0.45 →
0.04, docs/sgmcmc.md).

A parameter group with ``add_noise=False`` takes plain (momentum) SGD steps on ``U``: the *exploration*
stage of the cyclical schedule (:class:`~monai_bayes.mcmc.CyclicalLR`) switches the noise off this way.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from monai.utils import StrEnum
from torch import nn

from monai_bayes.utils.options import look_up

__all__ = ["SGHMC", "SGLD", "Sampler", "build_sampler", "voxels_per_item"]


def _check(name: str, value: float, low: float, *, strict: bool = True, high: float | None = None) -> None:
    ok = value > low if strict else value >= low
    if high is not None:
        ok = ok and value < high
    if not ok:
        bound = f"> {low}" if strict else f">= {low}"
        if high is not None:
            bound += f" and < {high}"
        raise ValueError(f"{name} must be {bound}, got {value!r}.")


class _SGMCMC(torch.optim.Optimizer):
    """Shared validation, step loop, prior gradient and noise of the two samplers.

    A subclass says how large its noise is relative to SGLD's (:meth:`_noise_factor`) and how one
    parameter moves (:meth:`_update`).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        dataset_size: int,
        temperature: float,
        prior_precision: float,
        add_noise: bool,
        generator: torch.Generator | None,
        **extra: Any,
    ) -> None:
        _check("lr", lr, 0.0)
        _check("dataset_size", dataset_size, 0.0)
        _check("temperature", temperature, 0.0, strict=False)
        _check("prior_precision", prior_precision, 0.0, strict=False)
        defaults = dict(
            lr=lr,
            dataset_size=dataset_size,
            temperature=temperature,
            prior_precision=prior_precision,
            add_noise=add_noise,
            **extra,
        )
        super().__init__(params, defaults)
        self.generator = generator

    @staticmethod
    def _gradient(p: torch.Tensor, group: dict[str, Any]) -> torch.Tensor:
        """Gradient of ``U/N``: the loss gradient plus the prior's ``λ θ / N``."""
        assert p.grad is not None
        grad = p.grad
        if group["prior_precision"]:
            grad = grad.add(p.detach(), alpha=group["prior_precision"] / group["dataset_size"])
        return grad

    def _noise(self, p: torch.Tensor, std: float) -> torch.Tensor:
        return torch.randn(p.shape, generator=self.generator, device=p.device, dtype=p.dtype).mul_(std)

    @staticmethod
    def _noise_factor(group: dict[str, Any]) -> float:
        """The noise variance relative to SGLD's ``2·lr·T/N`` (SGHMC: the friction ``α``)."""
        return 1.0

    def _update(self, p: torch.Tensor, group: dict[str, Any], std: float) -> None:
        """Move one parameter by one step; ``std`` is the injected noise's standard deviation (0: none)."""
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """One sampler step on every parameter with a gradient.

        Parameters
        ----------
        closure : callable, optional
            Re-evaluates the model and returns the loss.

        Returns
        -------
        Any
            The closure's loss, or ``None``.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, n, temp = group["lr"], group["dataset_size"], group["temperature"]
            variance = 2.0 * self._noise_factor(group) * lr * temp / n
            std = math.sqrt(variance) if group["add_noise"] else 0.0
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, group, std)
        return loss


class SGLD(_SGMCMC):
    """Stochastic-gradient Langevin dynamics (Welling & Teh 2011).

    ``θ ← θ − lr·g + sqrt(2·lr·T/N)·ε``, ``g`` the gradient of the mean per-datum loss plus ``λθ/N``.

    Parameters
    ----------
    params : iterable
        Parameters or parameter groups (as for any torch optimiser).
    lr : float
        Step on the mean per-datum loss (> 0); the step on ``U`` is ``lr / dataset_size``.
    dataset_size : int
        ``N``, the number of training items the loss is averaged over (scales the noise and the prior).
    temperature : float
        ``T`` ≥ 0 (1: the Bayesian posterior; < 1: a "cold" posterior; 0: SGD on ``U``).
    prior_precision : float
        ``λ`` ≥ 0 of the Gaussian prior ``N(0, λ⁻¹ I)`` (0: flat prior, e.g. when the loss has its own).
    add_noise : bool
        Inject the Langevin noise (False: SGD on ``U``; the cyclical schedule's exploration stage).
    generator : torch.Generator, optional
        Source of the noise (reproducible chains).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        dataset_size: int,
        temperature: float = 1.0,
        prior_precision: float = 0.0,
        add_noise: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(params, lr, dataset_size, temperature, prior_precision, add_noise, generator)

    def _update(self, p: torch.Tensor, group: dict[str, Any], std: float) -> None:
        p.add_(self._gradient(p, group), alpha=-group["lr"])
        if std > 0:
            p.add_(self._noise(p, std))


class SGHMC(_SGMCMC):
    """Stochastic-gradient Hamiltonian Monte Carlo (Chen et al. 2014, eq. 15; Zhang et al. 2020's form).

    ``v ← (1 − α)·v − lr·g + sqrt(2·α·lr·T/N)·ε``, then ``θ ← θ + v``, with friction ``α = 1 − momentum``.
    Without noise it is SGD with (heavy-ball) momentum on ``U/N``.

    Parameters
    ----------
    params : iterable
        Parameters or parameter groups.
    lr : float
        Step on the mean per-datum loss (> 0).
    dataset_size : int
        ``N`` (scales the noise and the prior).
    momentum : float
        ``1 − α`` in [0, 1) (Zhang et al. use α = 0.1, i.e. 0.9).
    temperature : float
        ``T`` ≥ 0.
    prior_precision : float
        ``λ`` ≥ 0 of the Gaussian prior.
    add_noise : bool
        Inject the noise (False: momentum SGD; the cyclical exploration stage).
    generator : torch.Generator, optional
        Source of the noise.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        dataset_size: int,
        momentum: float = 0.9,
        temperature: float = 1.0,
        prior_precision: float = 0.0,
        add_noise: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        _check("momentum", momentum, 0.0, strict=False, high=1.0)
        super().__init__(
            params, lr, dataset_size, temperature, prior_precision, add_noise, generator, momentum=momentum
        )

    @staticmethod
    def _noise_factor(group: dict[str, Any]) -> float:
        return 1.0 - float(group["momentum"])

    def _update(self, p: torch.Tensor, group: dict[str, Any], std: float) -> None:
        state = self.state[p]
        if "velocity" not in state:
            state["velocity"] = torch.zeros_like(p)
        v = state["velocity"]
        v.mul_(group["momentum"]).add_(self._gradient(p, group), alpha=-group["lr"])
        if std > 0:
            v.add_(self._noise(p, std))
        p.add_(v)


class Sampler(StrEnum):
    """The SG-MCMC samplers of :func:`build_sampler`."""

    SGLD = "sgld"
    SGHMC = "sghmc"


def build_sampler(
    network: nn.Module,
    sampler: str | Sampler = Sampler.SGHMC,
    *,
    lr: float,
    dataset_size: int,
    momentum: float = 0.9,
    temperature: float = 1.0,
    prior_precision: float = 1.0,
    generator: torch.Generator | None = None,
    terms_per_item: int = 1,
) -> SGLD | SGHMC:
    """The SG-MCMC optimiser over every trainable parameter of ``network`` (what bundle configs call).

    Parameters
    ----------
    network : nn.Module
        The network to sample.
    sampler : {"sgld", "sghmc"}
        Which sampler.
    lr : float
        Step on the mean per-datum loss (the peak step of a cyclical schedule).
    dataset_size : int
        Training items (images or patches).
    momentum : float
        SGHMC's ``1 − α`` (ignored by SGLD).
    temperature : float
        ``T`` ≥ 0.
    prior_precision : float
        ``λ`` ≥ 0 of the Gaussian prior on every parameter.
    generator : torch.Generator, optional
        Source of the noise.
    terms_per_item : int
        Likelihood terms the loss averages over per item (≥ 1): the voxels of a patch for a voxel-mean
        segmentation loss (:func:`voxels_per_item`), 1 for a per-image loss. The samplers' ``N`` is
        ``dataset_size · terms_per_item``.

    Returns
    -------
    SGLD or SGHMC

    Raises
    ------
    ValueError
        If ``terms_per_item`` is not a positive int.
    """
    if not isinstance(terms_per_item, int) or isinstance(terms_per_item, bool) or terms_per_item < 1:
        raise ValueError(f"terms_per_item must be a positive int (voxels per item), got {terms_per_item!r}.")
    params = [p for p in network.parameters() if p.requires_grad]
    common = dict(
        lr=lr,
        dataset_size=dataset_size * terms_per_item,
        temperature=temperature,
        prior_precision=prior_precision,
        generator=generator,
    )
    if look_up("sampler", sampler, Sampler) is Sampler.SGLD:
        return SGLD(params, **common)  # type: ignore[arg-type]
    return SGHMC(params, momentum=momentum, **common)  # type: ignore[arg-type]


def voxels_per_item(dataset: Sequence[Mapping[str, Any]], key: str = "label") -> int:
    """Voxels of one training item: the ``terms_per_item`` of a voxel-mean segmentation loss.

    Parameters
    ----------
    dataset : sequence of dict
        The training dataset (items are dicts holding ``key``).
    key : str
        The label entry, shaped ``(C, *spatial)`` (channel first; raters or classes in ``C``).

    Returns
    -------
    int
        ``prod(spatial)`` of the first item's ``key``.

    Raises
    ------
    ValueError
        If the dataset is empty or its first item has no channel-first ``key``.
    """
    if len(dataset) == 0:
        raise ValueError("voxels_per_item: the training dataset is empty.")
    item = dataset[0]
    if key not in item or getattr(item[key], "ndim", 0) < 2:
        raise ValueError(f"voxels_per_item: the first training item has no channel-first {key!r} array (C, *spatial).")
    return math.prod(int(n) for n in item[key].shape[1:])
