"""The mathematics of variational nested dropout (seed 001, BN3), free of any layer.

Groups of output channels (:func:`group_boundaries`), the Bernoulli-chain prior (eq. 1, 2, 10:
:func:`chain_mask_probabilities`, :func:`prior_keep_vector`), the Downhill posterior of the ordering and
its sample (Definition 1, Property 1: :func:`downhill_sample`, :func:`gumbel_from_normal`,
:func:`keep_probabilities`, :func:`initial_order_logits`), and the two KL terms of eq. 18
(:func:`ordering_kl`, eq. 11; :func:`weight_kl` with the log-uniform approximation eq. 17,
:func:`log_uniform_neg_kl`). :mod:`monai_bayes.layers.nested` builds the layer from them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.utils import StrEnum

from monai_bayes.utils.options import look_up

__all__ = [
    "EQ17_COEFFICIENTS",
    "EQ17_MAXIMUM",
    "KLConstant",
    "Remainder",
    "chain_mask_probabilities",
    "downhill_sample",
    "group_boundaries",
    "gumbel_from_normal",
    "initial_order_logits",
    "keep_probabilities",
    "log_uniform_neg_kl",
    "ordering_kl",
    "prior_keep_vector",
    "weight_kl",
]

#: a1, a2, a3, a4 of eq. 17
EQ17_COEFFICIENTS: tuple[float, float, float, float] = (0.7294, -0.2041, 0.3492, 0.5387)
#: max over log α of eq. 17 with C = 0 (attained at log α ≈ 1.0334); see :func:`weight_kl`
EQ17_MAXIMUM = 0.5471246912


class Remainder(StrEnum):
    """What :func:`group_boundaries` does when the groups do not divide the channels."""

    SPREAD = "spread"
    ERROR = "error"


class KLConstant(StrEnum):
    """Named choices of the constant ``C`` of eq. 17 (see :func:`weight_kl`)."""

    NONNEGATIVE = "nonnegative"
    ZERO_AT_INFINITY = "zero_at_infinity"


def group_boundaries(channels: int, groups: int, remainder: Remainder | str = Remainder.SPREAD) -> tuple[int, ...]:
    """Channel boundaries ``(b_0 = 0, b_1, …, b_G = C)`` of ``G`` ordered groups; group ``g`` is ``[b_{g-1}, b_g)``.

    Parameters
    ----------
    channels
        ``C``, the layer's output channels (or features).
    groups
        ``G``, with ``1 <= G <= C``.
    remainder
        what to do when ``G`` does not divide ``C``: ``"spread"`` (default) gives the first
        ``C mod G`` groups one extra channel (sizes differ by at most one, earlier groups are never
        smaller); ``"error"`` raises.
    """
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"groups must be a positive int, got {groups!r}.")
    if groups > channels:
        raise ValueError(f"groups={groups} exceeds the {channels} output channels; use groups <= {channels}.")
    remainder = look_up("remainder", remainder, Remainder)
    base, extra = divmod(channels, groups)
    if extra and remainder == Remainder.ERROR:
        raise ValueError(
            f"groups={groups} does not divide the {channels} output channels (remainder {extra}); "
            "use remainder='spread' or a divisor of the channel count."
        )
    bounds = [0]
    for g in range(groups):
        bounds.append(bounds[-1] + base + (1 if g < extra else 0))
    return tuple(bounds)


def gumbel_from_normal(eps: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel noise from standard-normal noise: ``u = Φ(ε) ~ U(0, 1)``, ``g = -log(-log u)``.

    Uses ``log Φ`` directly so that large ``|ε|`` stay finite. Footnote 3 of seed 001 draws
    ``g = -log(-log ε_z)`` from a uniform ``ε_z``; going through ``Φ`` lets the ordering noise be
    frozen with the protocol's normal noise.
    """
    neg_log_u = -torch.special.log_ndtr(eps)
    return -torch.log(neg_log_u.clamp_min(torch.finfo(neg_log_u.dtype).tiny))


def downhill_sample(
    log_beta: torch.Tensor, temperature: float, gumbel: torch.Tensor, straight_through: bool = False
) -> torch.Tensor:
    """Ordered masks from the Downhill distribution, Property 1 of seed 001 (§2.3, Definition 1 / eq. 3).

    ``c = softmax((log β + g) / τ)`` (Gumbel-softmax, footnote 3), then ``z_i = 1 - Σ_{j<i} c_j``,
    so ``z_1 = 1`` and ``z`` is non-increasing in ``[0, 1]``. As ``τ → 0`` the samples become the
    ordered 0/1 masks ``v_j`` with ``P(v_j) = β_j`` (Property 2).

    Parameters
    ----------
    log_beta
        ``(K,)`` log-probabilities of the tail index.
    temperature
        ``τ > 0``.
    gumbel
        ``(S, K)`` standard Gumbel noise, one row per sample.
    straight_through
        use the hard one-hot ``c`` in the forward pass and the relaxed one's gradient.

    Returns
    -------
    ``(S, K)`` masks ``z``, differentiable w.r.t. ``log_beta``.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}.")
    c = torch.softmax((log_beta + gumbel) / temperature, dim=-1)
    z = _masks_from_tail_sample(c)
    if straight_through:
        hard = _masks_from_tail_sample(F.one_hot(c.argmax(dim=-1), c.shape[-1]).to(c.dtype))
        z = hard + (z - z.detach())  # exactly the hard mask forward, the relaxed gradient backward
    return z


def _masks_from_tail_sample(c: torch.Tensor) -> torch.Tensor:
    """Property 1: ``z_i = 1 - Σ_{j<i} c_j`` (so ``z_1 = 1``), clamped to [0, 1] against rounding."""
    exclusive = torch.cat([torch.zeros_like(c[..., :1]), torch.cumsum(c, dim=-1)[..., :-1]], dim=-1)
    return (1.0 - exclusive).clamp(0.0, 1.0)


def chain_mask_probabilities(prior_keep: torch.Tensor) -> torch.Tensor:
    """``p(v_j) = (1 - π_{j+1}) Π_{k≤j} π_k`` with ``π_{K+1} = 0`` -- eq. 10 (from eq. 1–2).

    ``prior_keep``: ``(K,)`` conditional keep probabilities ``π`` (``π_1 = 1``). Returns ``(K,)``, sums to 1.
    """
    cumulative = torch.cumprod(prior_keep, dim=0)
    following = torch.cat([prior_keep[1:], prior_keep.new_zeros(1)])
    return (1.0 - following) * cumulative


def keep_probabilities(beta: torch.Tensor) -> torch.Tensor:
    """``q(z_j = 1) = Σ_{k≥j} β_k = (J_L^T β)_j`` for ``τ → 0``: the probability that node ``j`` is kept. ``(K,)``."""
    return torch.flip(torch.cumsum(torch.flip(beta, dims=(-1,)), dim=-1), dims=(-1,)).clamp(max=1.0)


def ordering_kl(log_beta: torch.Tensor, prior_mask_probabilities: torch.Tensor) -> torch.Tensor:
    """``Φ1 = Σ_j KL[q(v_j) ‖ p(v_j)] = β^T (log β - log p(v))`` -- eq. 11 with ``q(v_j) = β_j`` (eq. 10)."""
    return (log_beta.exp() * (log_beta - torch.log(prior_mask_probabilities))).sum()


def log_uniform_neg_kl(log_alpha: torch.Tensor) -> torch.Tensor:
    """Eq. 17 with ``C = 0``: ``a1 exp(-e^{a4} (a2 + a3 log α)²) - ½ log(1 + α⁻¹)``, the approximation of eq. 16.

    Eq. 16 is ``-KL[q(w | θ, α) ‖ p(log|w|) = const] = ½ log α - E_{ε~N(1, α)} log|ε| + C``.
    The seed's text typesets the first term's exponent as ``e^{a4·(a2 + a3 log α)²}``; read that way
    (a double exponential) the approximation departs from a Monte-Carlo estimate of eq. 16 by up to
    0.18 nats on the fit range ``log α ∈ [-5, 0.5]`` (best constant ``C``), read as
    ``e^{a4}·(a2 + a3 log α)²`` -- the form in the authors' released code -- by at most 0.072 nats; we
    use the latter (``tests/layers/test_nested_math.py`` checks both numbers).
    """
    a1, a2, a3, a4 = EQ17_COEFFICIENTS
    return a1 * torch.exp(-math.exp(a4) * (a2 + a3 * log_alpha) ** 2) - 0.5 * F.softplus(-log_alpha)


def weight_kl(log_alpha: torch.Tensor, constant: KLConstant | str | float = KLConstant.NONNEGATIVE) -> torch.Tensor:
    """Per-weight ``K¹ = KL[q(w | z = 1) ‖ p(w | z = 1)] = -(eq. 17 + C)`` for the log-uniform prior (eq. 16–17).

    The seed leaves the constant ``C`` of eq. 16–17 open. It does not change the gradient w.r.t. α, but
    through ``Φ2 = Σ_j q(z_j = 1) Σ_{i ∈ j} K¹_i`` it sets how much a kept weight costs relative to a
    dropped one, i.e. the strength of the ordered ℓ0 regularisation of eq. 13.

    Parameters
    ----------
    log_alpha
        any shape.
    constant
        ``"nonnegative"`` (default) -- ``C = -max(eq. 17) = -0.5471``, so ``K¹ ≥ 0`` with its
        minimum 0 at ``log α ≈ 1.03``: keeping a node never lowers the KL (eq. 13's "larger
        sub-networks have greater penalization"); ``"zero_at_infinity"`` -- ``C = 0`` (``K¹ → 0`` as
        ``α → ∞``, the convention of Molchanov et al. and of the authors' code; ``K¹`` is then
        negative around ``log α ≈ 1``); or a number ``C``.
    """
    if isinstance(constant, str):
        try:
            key = look_up("kl_constant", constant, KLConstant)
        except ValueError as err:
            raise ValueError(f"{err} Or pass a number C.") from None
        c = -EQ17_MAXIMUM if key == KLConstant.NONNEGATIVE else 0.0
    else:
        c = float(constant)
    return -(log_uniform_neg_kl(log_alpha) + c)


def prior_keep_vector(prior_keep: float | Sequence[float], nodes: int) -> torch.Tensor:
    """``π`` of eq. 1 as a ``(K,)`` tensor with ``π_1 = 1``: from one value or ``K - 1`` values ``π_2 … π_K``."""
    if isinstance(prior_keep, (int, float)):
        tail = [float(prior_keep)] * (nodes - 1)
    else:
        tail = [float(p) for p in prior_keep]
        if len(tail) != nodes - 1:
            raise ValueError(f"prior_keep needs {nodes - 1} values π_2…π_K (K = {nodes} nodes), got {len(tail)}.")
    if any(not 0.0 < p < 1.0 for p in tail):
        raise ValueError(f"prior_keep probabilities must lie in (0, 1), got {prior_keep!r}.")
    return torch.tensor([1.0, *tail])


def initial_order_logits(order_init: float | str, prior: torch.Tensor) -> torch.Tensor:
    """Log β at initialisation: ``"prior"`` (β = p(v), Φ1 = 0), ``"uniform"``, or a chain keep probability ρ."""
    if order_init == "prior":
        beta = chain_mask_probabilities(prior)
    elif order_init == "uniform":
        beta = torch.full_like(prior, 1.0 / prior.numel())
    elif isinstance(order_init, (int, float)) and 0.0 < float(order_init) < 1.0:
        chain = torch.full_like(prior, float(order_init))
        chain[0] = 1.0
        beta = chain_mask_probabilities(chain)
    else:
        raise ValueError(f"order_init must be 'prior', 'uniform' or a keep probability in (0, 1), got {order_init!r}.")
    return torch.log(beta.clamp_min(1e-12))
