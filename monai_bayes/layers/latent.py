"""Stochastic layers of the multi-rater baselines: a Gaussian latent, its nested (ordered) mask, low-rank logits.

Three layers of the common protocol (:mod:`monai_bayes.layers.base`), so that
:class:`~monai_bayes.inferers.MonteCarloInferer`, :func:`~monai_bayes.layers.sampling_mode`,
:func:`~monai_bayes.layers.mc_samples` and :func:`~monai_bayes.layers.kl_divergence` drive them like any
other stochastic layer:

* :class:`GaussianLatent` -- the axis-aligned Gaussian latent of the Probabilistic U-Net (Kohl et al. 2018):
  ``z ~ q(z | x, y)`` (posterior net) when a posterior is given (training), else ``z ~ p(z | x)`` (prior net,
  inference); ``kl()`` is the closed-form ``KL(q ‖ p)`` of the last training pass, averaged over the batch;
* :class:`NestedLatentMask` -- variational nested (ordered) dropout over the latent dimensions (seed 001's
  LIDC setting, BN3 on the Prob. U-Net latent): a Downhill mask (seed 001 Property 1) on ``z``, the
  ordering KL Φ1 of eq. 11, and a fixed *width* = number of kept latent dimensions at test time;
* :class:`LowRankLogits` -- the Stochastic Segmentation Network's logit distribution (Monteiro et al. 2020):
  ``η ~ N(μ, P Pᵀ + D)`` with a rank-``R`` factor ``P`` and a diagonal ``D`` over all ``C × voxels`` logits,
  sampled by ``η = μ + P ε_R + √D ⊙ ε_D``; :func:`low_rank_log_likelihood` is the Monte-Carlo
  log-likelihood of a rater mask.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from monai_bayes.layers.base import StochasticLayer
from monai_bayes.layers.nested_math import (
    chain_mask_probabilities,
    downhill_sample,
    gumbel_from_normal,
    initial_order_logits,
    keep_probabilities,
    ordering_kl,
    prior_keep_vector,
)

__all__ = [
    "GaussianLatent",
    "LowRankLogits",
    "NestedLatentMask",
    "diagonal_gaussian_kl",
    "low_rank_log_likelihood",
    "low_rank_sample",
]


def diagonal_gaussian_kl(
    mu_q: torch.Tensor, log_sigma_q: torch.Tensor, mu_p: torch.Tensor, log_sigma_p: torch.Tensor
) -> torch.Tensor:
    """``KL(N(μ_q, σ_q²) ‖ N(μ_p, σ_p²))`` per dimension, closed form (nats).

    ``log(σ_p / σ_q) + (σ_q² + (μ_q − μ_p)²) / (2 σ_p²) − ½``.

    Parameters
    ----------
    mu_q, log_sigma_q, mu_p, log_sigma_p : torch.Tensor
        Broadcastable tensors, e.g. ``(N, L)``.

    Returns
    -------
    torch.Tensor
        The per-dimension KL, the broadcast shape.
    """
    var_ratio = torch.exp(2.0 * (log_sigma_q - log_sigma_p))
    mean_term = (mu_q - mu_p) ** 2 * torch.exp(-2.0 * log_sigma_p)
    return 0.5 * (var_ratio + mean_term - 1.0) - (log_sigma_q - log_sigma_p)


class _ParameterFreeLayer(StochasticLayer, nn.Module):
    """A stochastic layer without parameters: device / dtype of the noise come from a dummy buffer."""

    _device_ref: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self._init_stochastic_state()
        self.register_buffer("_device_ref", torch.zeros(()), persistent=False)

    def _reference_tensor(self) -> torch.Tensor:
        return self._device_ref

    def _per_item_noise(self, name: str, shape: tuple[int, ...], batch: int, ref: torch.Tensor) -> torch.Tensor:
        """``(N, *shape)`` noise for a batch of ``N = S·B`` items: the frozen ``(S, *shape)`` noise repeated over
        the ``B`` items of each sample block, else fresh noise per item.
        """
        per_sample = self._check_batch(batch)
        if self._noise is None:
            return torch.randn((batch, *shape), device=ref.device, dtype=ref.dtype)
        eps = self._noise_for(name, shape, self._num_samples, ref)
        return eps.repeat_interleave(per_sample, dim=0)


class GaussianLatent(_ParameterFreeLayer):
    """Axis-aligned Gaussian latent of the Probabilistic U-Net (Kohl et al. 2018, §2).

    ``forward(prior, posterior=None)`` takes the prior net's and (in training) the posterior net's
    parameters, each ``(N, 2L)`` = ``[μ, log σ]``, and returns ``z``, ``(N, L)``:

    =========  ===========  =====================================================================
    mode       posterior    ``z``
    =========  ===========  =====================================================================
    sample     given        ``μ_q + σ_q ε`` (reparameterised; training on one rater's mask)
    sample     ``None``     ``μ_p + σ_p ε`` (inference: one latent sample per MC sample)
    mean       given        ``μ_q``
    mean       ``None``     ``μ_p``
    =========  ===========  =====================================================================

    ``kl()`` is ``mean_n Σ_l KL(q_nl ‖ p_nl)`` of the last pass that had a posterior (zero otherwise), so
    :class:`~monai_bayes.losses.ELBOLoss` with ``kl_reduction`` = voxels per item gives Kohl et al.'s
    per-item ELBO (cross-entropy summed over voxels + β·KL) divided by the voxel count. The noise ``ε`` is
    freezable (``noise_shapes() = {"z": (L,)}``): sample ``s`` uses the same ``ε_s`` for every item and
    every window.

    Parameters
    ----------
    latent_dim : int
        ``L`` (Kohl et al. use 6 on LIDC).
    """

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        if not isinstance(latent_dim, int) or latent_dim < 1:
            raise ValueError(f"latent_dim must be a positive int, got {latent_dim!r}.")
        self.latent_dim = latent_dim
        self._last_kl: torch.Tensor | None = None

    def noise_shapes(self) -> dict[str, tuple[int, ...]]:
        """``{"z": (L,)}``: one standard-normal latent draw per MC sample."""
        return {"z": (self.latent_dim,)}

    def split(self, params: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(μ, log σ)``, each ``(N, L)``, from ``(N, 2L)`` parameters; ``ValueError`` naming ``name`` otherwise."""
        if params.dim() != 2 or params.shape[1] != 2 * self.latent_dim:
            raise ValueError(
                f"{name} parameters must have shape (N, 2·latent_dim = {2 * self.latent_dim}), "
                f"got {tuple(params.shape)}."
            )
        mu, log_sigma = params.chunk(2, dim=1)
        return mu, log_sigma

    def forward(self, prior: torch.Tensor, posterior: torch.Tensor | None = None) -> torch.Tensor:
        mu_p, log_sigma_p = self.split(prior, "prior")
        if posterior is None:
            self._last_kl = None
            mu, log_sigma = mu_p, log_sigma_p
        else:
            mu, log_sigma = self.split(posterior, "posterior")
            if mu.shape != mu_p.shape:
                raise ValueError(f"prior {tuple(prior.shape)} and posterior {tuple(posterior.shape)} differ in shape.")
            self._last_kl = diagonal_gaussian_kl(mu, log_sigma, mu_p, log_sigma_p).sum(dim=1).mean()
        if self._sampling_mode == "mean":
            return mu
        eps = self._per_item_noise("z", (self.latent_dim,), mu.shape[0], mu)
        return mu + torch.exp(log_sigma) * eps

    def kl(self) -> torch.Tensor:
        """``mean_n KL(q(z | x_n, y_n) ‖ p(z | x_n))`` of the last posterior pass, a scalar (nats)."""
        return self._last_kl if self._last_kl is not None else self._device_ref.new_zeros(())

    def deterministic_module(self) -> nn.Module:
        """Return this layer fixed to the latent mean (a posterior or prior mean ``μ``)."""
        self.sampling_mode = "mean"
        return self

    def extra_repr(self) -> str:
        return f"latent_dim={self.latent_dim}, mode={self._sampling_mode}"


class NestedLatentMask(_ParameterFreeLayer):
    """Variational nested (ordered) dropout over latent dimensions: BN3 on the Prob. U-Net latent (seed 001).

    The ``L`` latent dimensions are ``L`` ordered groups of one; the first ``always_kept`` form node 1
    (never dropped), each later dimension is one node, ``K = L − always_kept + 1``. The ordering posterior,
    its prior and KL reuse :mod:`~monai_bayes.layers.nested_math` exactly as
    :class:`~monai_bayes.layers.NestedDropoutLayer` does for channel groups: ``β = softmax(order_logits)``,
    Downhill masks ``m ~ Downhill(β, τ)`` (Property 1; hard with a straight-through gradient if
    ``straight_through``), the Bernoulli-chain prior of eq. 1 and ``kl() = Φ1`` (eq. 11). The latent's own
    Gaussian KL stays with :class:`GaussianLatent`; there are no weights here, so there is no Φ2.

    ``forward(z)`` returns ``z ⊙ m``, ``(N, L)``: a sampled mask per item in ``"sample"`` mode without a
    width, all dimensions in ``"mean"`` mode, the first ``width`` dimensions at a fixed ``width`` (the width
    axis of the samples × widths evaluation, :func:`~monai_bayes.layers.nested_width`). Latent samples are
    not rescaled by keep probabilities (``z`` is noise, not a learnt feature).

    Parameters
    ----------
    latent_dim : int
        ``L``.
    always_kept : int
        Leading dimensions that are never dropped (``1 ≤ always_kept ≤ L``).
    prior_keep : float or sequence of float
        ``π_2 … π_K`` of the chain prior (eq. 1).
    order_init : float or str
        Initial β (see :func:`~monai_bayes.layers.nested_math.initial_order_logits`).
    temperature : float
        Downhill temperature ``τ > 0``.
    straight_through : bool
        Hard masks forward, relaxed gradient (the authors' training).
    """

    prior_keep: torch.Tensor
    _dim_node: torch.Tensor

    def __init__(
        self,
        latent_dim: int,
        always_kept: int = 1,
        prior_keep: float | Sequence[float] = 0.9,
        order_init: float | str = 0.95,
        temperature: float = 0.5,
        straight_through: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(latent_dim, int) or latent_dim < 1:
            raise ValueError(f"latent_dim must be a positive int, got {latent_dim!r}.")
        if not isinstance(always_kept, int) or not 1 <= always_kept <= latent_dim:
            raise ValueError(f"always_kept must be an int in [1, latent_dim={latent_dim}], got {always_kept!r}.")
        if not float(temperature) > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}.")
        self.nested_groups = latent_dim
        self.always_kept = always_kept
        self.temperature = float(temperature)
        self.straight_through = bool(straight_through)
        self._width: int | None = None
        nodes = latent_dim - always_kept + 1
        prior = prior_keep_vector(prior_keep, nodes)
        self.register_buffer("prior_keep", prior)
        self.order_logits = nn.Parameter(initial_order_logits(order_init, prior))
        node_of_dim = (torch.arange(latent_dim) - always_kept + 1).clamp_min(0)
        self.register_buffer("_dim_node", node_of_dim, persistent=False)

    def _reference_tensor(self) -> torch.Tensor:
        return self.order_logits

    @property
    def num_nodes(self) -> int:
        """``K = L − always_kept + 1``."""
        return self.nested_groups - self.always_kept + 1

    @property
    def width(self) -> int | None:
        """Number of kept latent dimensions, or ``None`` (sampled masks / all dimensions)."""
        return self._width

    @width.setter
    def width(self, value: int | None) -> None:
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= self.nested_groups
        ):
            raise ValueError(f"width of the latent mask must be an int in [1, {self.nested_groups}], got {value!r}.")
        self._width = value

    def log_beta(self) -> torch.Tensor:
        """``log β``, ``(K,)``."""
        return torch.log_softmax(self.order_logits, dim=0)

    def keep_probabilities(self) -> torch.Tensor:
        """``q(m_l = 1)`` per latent dimension, ``(L,)``."""
        return keep_probabilities(self.log_beta().exp())[self._dim_node]

    def noise_shapes(self) -> dict[str, tuple[int, ...]]:
        """``{"order": (K,)}``: the Gumbel noise of one mask (as normal noise, see ``gumbel_from_normal``)."""
        return {"order": (self.num_nodes,)}

    def masks(self, batch: int) -> torch.Tensor | None:
        """``(N, L)`` masks for a batch of ``N`` items in the current mode / width, or ``None`` (keep all)."""
        if self._width is not None:
            if self._width == self.nested_groups:
                return None
            mask = self.order_logits.new_zeros(1, self.nested_groups)
            mask[:, : self._width] = 1.0
            return mask
        if self._sampling_mode == "mean":
            return None
        eps = self._per_item_noise("order", (self.num_nodes,), batch, self.order_logits)
        nodes = downhill_sample(self.log_beta(), self.temperature, gumbel_from_normal(eps), self.straight_through)
        return nodes[:, self._dim_node]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() != 2 or z.shape[1] != self.nested_groups:
            raise ValueError(f"z must have shape (N, latent_dim = {self.nested_groups}), got {tuple(z.shape)}.")
        mask = self.masks(z.shape[0])
        return z if mask is None else z * mask

    def kl(self) -> torch.Tensor:
        """``Φ1 = β^T (log β − log p(v))`` -- seed 001 eq. 11, a scalar (nats)."""
        return ordering_kl(self.log_beta(), chain_mask_probabilities(self.prior_keep))

    def deterministic_module(self) -> nn.Module:
        """The identity (all latent dimensions kept)."""
        return nn.Identity()

    def extra_repr(self) -> str:
        return (
            f"latent_dim={self.nested_groups}, always_kept={self.always_kept}, temperature={self.temperature}, "
            f"straight_through={self.straight_through}, width={self._width}, mode={self._sampling_mode}"
        )


def low_rank_sample(
    mean: torch.Tensor,
    cov_diag: torch.Tensor,
    cov_factor: torch.Tensor,
    eps_factor: torch.Tensor,
    eps_diag: torch.Tensor,
) -> torch.Tensor:
    """``η = μ + P ε_R + √D ⊙ ε_D``: samples of ``N(μ, P Pᵀ + diag D)`` over ``C × voxels`` logits.

    Parameters
    ----------
    mean, cov_diag : torch.Tensor
        ``(N, C, *sp)``: ``μ`` and the diagonal ``D > 0``.
    cov_factor : torch.Tensor
        ``(N, R, C, *sp)``: the ``R`` columns of ``P``, each shaped like the logits.
    eps_factor : torch.Tensor
        ``(M, N, R)`` standard-normal noise of the low-rank part.
    eps_diag : torch.Tensor
        ``(M, N, C, *sp)`` standard-normal noise of the diagonal part.

    Returns
    -------
    torch.Tensor
        ``(M, N, C, *sp)`` logit samples.
    """
    low_rank = torch.einsum("mnr,nr...->mn...", eps_factor, cov_factor)
    return mean.unsqueeze(0) + low_rank + cov_diag.sqrt().unsqueeze(0) * eps_diag


def low_rank_log_likelihood(
    mean: torch.Tensor,
    cov_diag: torch.Tensor,
    cov_factor: torch.Tensor,
    target: torch.Tensor,
    num_samples: int = 20,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Monte-Carlo ``log p(y | x) ≈ log (1/M) Σ_m Π_v softmax(η_m)_v[y_v]``, ``η_m ~ N(μ, P Pᵀ + D)`` (Monteiro et al.).

    Computed as ``logsumexp_m(Σ_v log softmax(η_m)_v[y_v]) − log M`` (stable), reparameterised so the
    gradient reaches ``μ``, ``P`` and ``D``.

    Parameters
    ----------
    mean, cov_diag : torch.Tensor
        ``(N, C, *sp)``.
    cov_factor : torch.Tensor
        ``(N, R, C, *sp)``.
    target : torch.Tensor
        ``(N, 1, *sp)`` or ``(N, *sp)`` class indices, or ``(N, C, *sp)`` one-hot masks.
    num_samples : int
        ``M`` (Monteiro et al. use 20).
    generator : torch.Generator, optional
        Source of the noise.

    Returns
    -------
    torch.Tensor
        ``(N,)`` log-likelihood per item (nats, summed over voxels).

    Raises
    ------
    ValueError
        If ``num_samples < 1`` or the target does not match the logits.
    """
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}.")
    labels = _class_indices(target, mean)
    n, rank = mean.shape[0], cov_factor.shape[1]
    eps_factor = torch.randn((num_samples, n, rank), generator=generator, device=mean.device, dtype=mean.dtype)
    eps_diag = torch.randn((num_samples, *mean.shape), generator=generator, device=mean.device, dtype=mean.dtype)
    logits = low_rank_sample(mean, cov_diag, cov_factor, eps_factor, eps_diag)  # (M, N, C, *sp)
    log_probs = torch.log_softmax(logits, dim=2)
    index = labels.unsqueeze(0).unsqueeze(2).expand(num_samples, *labels.shape[:1], 1, *labels.shape[1:])
    per_voxel = log_probs.gather(2, index).squeeze(2)  # (M, N, *sp)
    per_sample = per_voxel.reshape(num_samples, n, -1).sum(-1)  # (M, N)
    return torch.logsumexp(per_sample, dim=0) - math.log(num_samples)


def _class_indices(target: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """``(N, *sp)`` int64 class indices from indices ``(N, [1,] *sp)`` or one-hot ``(N, C, *sp)``."""
    spatial = tuple(logits.shape[2:])
    if tuple(target.shape) == (logits.shape[0], *spatial):
        return target.long()
    if target.dim() == logits.dim() and tuple(target.shape[2:]) == spatial:
        if target.shape[1] == 1:
            return target[:, 0].long()
        if target.shape[1] == logits.shape[1]:
            return target.argmax(dim=1)
    raise ValueError(
        f"target must hold class indices (N, 1, *sp) or one-hot masks (N, C, *sp) for logits {tuple(logits.shape)}, "
        f"got {tuple(target.shape)}."
    )


class LowRankLogits(_ParameterFreeLayer):
    """The Stochastic Segmentation Network's logit distribution as a stochastic layer (Monteiro et al. 2020).

    ``forward(mean, log_diag, factor)`` with ``mean, log_diag`` ``(N, C, *sp)`` and ``factor``
    ``(N, R·C, *sp)`` (``R`` blocks of ``C`` channels) returns one logit sample per item,
    ``η = μ + P ε_R + √D ⊙ ε_D`` with ``D = exp(log_diag) + diagonal_eps`` (``"sample"`` mode), or ``μ``
    (``"mean"`` mode). The parameters of the last pass are kept in :attr:`last` for
    :class:`~monai_bayes.losses.LowRankLikelihoodLoss`. Only the low-rank noise ``ε_R`` is freezable
    (``noise_shapes() = {"factor": (R,)}``); the diagonal noise is per voxel and drawn fresh. ``kl()`` is 0
    (the SSN is trained by maximum likelihood).

    Parameters
    ----------
    rank : int
        ``R`` (10 in Monteiro et al.).
    diagonal_eps : float
        Added to the diagonal for numerical stability (Monteiro et al.: 1e-5).
    """

    def __init__(self, rank: int = 10, diagonal_eps: float = 1e-5) -> None:
        super().__init__()
        if not isinstance(rank, int) or rank < 1:
            raise ValueError(f"rank must be a positive int, got {rank!r}.")
        if not diagonal_eps >= 0:
            raise ValueError(f"diagonal_eps must be >= 0, got {diagonal_eps!r}.")
        self.rank = rank
        self.diagonal_eps = float(diagonal_eps)
        #: ``(mean, cov_diag, cov_factor)`` of the last pass: ``(N, C, *sp)``, ``(N, C, *sp)``, ``(N, R, C, *sp)``
        self.last: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def noise_shapes(self) -> dict[str, tuple[int, ...]]:
        """``{"factor": (R,)}``: the low-rank noise of one sample."""
        return {"factor": (self.rank,)}

    def distribution(
        self, mean: torch.Tensor, log_diag: torch.Tensor, factor: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(μ, D, P)`` from the heads' outputs: ``D = exp(log_diag) + eps``, ``P`` reshaped to ``(N, R, C, *sp)``."""
        if log_diag.shape != mean.shape:
            raise ValueError(f"log_diag {tuple(log_diag.shape)} must have the shape of mean {tuple(mean.shape)}.")
        n, c = mean.shape[:2]
        if factor.shape[0] != n or factor.shape[1] != self.rank * c or factor.shape[2:] != mean.shape[2:]:
            raise ValueError(
                f"factor must have shape (N, rank·C = {self.rank * c}, *sp) = {(n, self.rank * c, *mean.shape[2:])}, "
                f"got {tuple(factor.shape)}."
            )
        cov_factor = factor.reshape(n, self.rank, c, *mean.shape[2:])
        return mean, torch.exp(log_diag) + self.diagonal_eps, cov_factor

    def forward(self, mean: torch.Tensor, log_diag: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
        mean, cov_diag, cov_factor = self.distribution(mean, log_diag, factor)
        self.last = (mean, cov_diag, cov_factor)
        if self._sampling_mode == "mean":
            return mean
        eps_factor = self._per_item_noise("factor", (self.rank,), mean.shape[0], mean).unsqueeze(0)
        eps_diag = torch.randn_like(mean).unsqueeze(0)
        return low_rank_sample(mean, cov_diag, cov_factor, eps_factor, eps_diag)[0]

    def kl(self) -> torch.Tensor:
        """0: the SSN has no prior over its parameters."""
        return self._device_ref.new_zeros(())

    def deterministic_module(self) -> nn.Module:
        """Return this layer fixed to the mean logits ``μ``."""
        self.sampling_mode = "mean"
        return self

    def extra_repr(self) -> str:
        return f"rank={self.rank}, diagonal_eps={self.diagonal_eps}, mode={self._sampling_mode}"
