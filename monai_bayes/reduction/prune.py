"""Pruning a flat mean-field network with BMR (seed 002, eq. 23) and the ablation baselines.

A pruned entry is *removed from the posterior*: its mean in ``weight`` / ``bias`` is set to exactly
0 and it leaves the layer's Bayesian index (its ``ρ`` is dropped), so every posterior sample has a
0 there and it adds nothing to the KL -- the reduced model's ``δ(0)`` posterior. The layer keeps a
boolean buffer ``<param>_bmr_mask`` (``True`` = kept) shaped like the parameter, so the decision is
in every checkpoint. :func:`enforce_prune_masks` registers optimizer hooks that zero the pruned
gradients before each step and re-zero the pruned values after it, whatever the optimizer does
(momentum, Adam statistics, weight decay); :func:`load_pruned_state_dict` restores masks on resume.

Functions
---------
* :func:`bmr_masks` / :func:`bmr_prune` -- spike-and-slab BMR (eq. 19–23);
* :func:`baseline_masks` -- magnitude ``|μ|``, signal-to-noise ``|μ|/σ`` or random pruning of a
  given number of Bayesian entries (global ranking), for ablations at equal sparsity;
* :func:`apply_prune_masks`, :func:`prune_report`, :func:`strip_prune_masks`.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from monai_bayes.layers import PartialBayesLayer
from monai_bayes.networks import PRUNE_MASK_SUFFIX, load_stochastic_state_dict
from monai_bayes.reduction.flat import flat_posteriors, spike_delta_f_by_layer
from monai_bayes.reduction.free_energy import (
    DEFAULT_K_MAX,
    SpikeAndSlabPosterior,
    spike_and_slab_posterior,
)

__all__ = [
    "MASK_SUFFIX",
    "BMRPruneResult",
    "LayerPruneStats",
    "PruneReport",
    "apply_prune_masks",
    "baseline_masks",
    "bmr_masks",
    "bmr_prune",
    "enforce_prune_masks",
    "load_pruned_state_dict",
    "prune_report",
    "strip_prune_masks",
]

MASK_SUFFIX = PRUNE_MASK_SUFFIX
PRUNABLE_PARAMS: tuple[str, ...] = ("weight", "bias")
BaselineMethod = Literal["magnitude", "snr", "random"]
BASELINE_METHODS: tuple[str, ...] = ("magnitude", "snr", "random")

# optimizer -> (model it guards, hook handles); one pair of hooks per optimizer
_GUARDS: weakref.WeakKeyDictionary[torch.optim.Optimizer, tuple[weakref.ref[nn.Module], list[Any]]] = (
    weakref.WeakKeyDictionary()
)


# ------------------------------------------------------------------------------------ reports
@dataclass
class LayerPruneStats:
    """Pruning state of one layer (weight and bias together, as the seed's ``W_l``).

    Attributes
    ----------
    layer : str
        Qualified module name.
    entries : int
        Number of weight + bias entries.
    pruned : int
        Entries fixed at 0 by a prune mask.
    bayesian : int
        Entries still Bayesian (with a ρ).
    """

    layer: str
    entries: int
    pruned: int
    bayesian: int

    @property
    def fraction(self) -> float:
        """Fraction of the layer's entries that are pruned, in [0, 1]."""
        return self.pruned / self.entries if self.entries else 0.0


@dataclass
class PruneReport:
    """Fraction pruned per layer and in total (the seed's Fig. 2).

    Attributes
    ----------
    layers : list of LayerPruneStats
        Every conv / linear layer with a prune mask or Bayesian entries, in module order.
    model_parameters : int
        Number of entries of all the model's parameters (normalisation layers included).
    """

    layers: list[LayerPruneStats] = field(default_factory=list)
    model_parameters: int = 0

    @property
    def entries(self) -> int:
        """Entries of the reported layers."""
        return sum(s.entries for s in self.layers)

    @property
    def pruned(self) -> int:
        """Pruned entries over all reported layers."""
        return sum(s.pruned for s in self.layers)

    @property
    def fraction(self) -> float:
        """Pruned fraction of the reported layers' entries."""
        return self.pruned / self.entries if self.entries else 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary: totals and one row per layer."""
        return {
            "pruned": self.pruned,
            "entries": self.entries,
            "fraction": self.fraction,
            "model_parameters": self.model_parameters,
            "layers": [
                {"layer": s.layer, "entries": s.entries, "pruned": s.pruned, "bayesian": s.bayesian,
                 "fraction": s.fraction}
                for s in self.layers
            ],
        }  # fmt: skip

    def to_markdown(self) -> str:
        """A Markdown table: layer, entries, pruned, fraction, and a total row."""
        rows = ["| layer | entries | pruned | fraction |", "|---|---:|---:|---:|"]
        rows += [f"| {s.layer} | {s.entries} | {s.pruned} | {s.fraction:.3f} |" for s in self.layers]
        rows.append(f"| **total** | {self.entries} | {self.pruned} | {self.fraction:.3f} |")
        return "\n".join(rows)


@dataclass
class BMRPruneResult:
    """What :func:`bmr_prune` did.

    Attributes
    ----------
    masks : dict of str to torch.Tensor
        ``{parameter name: bool mask}`` (``True`` = kept) of this pass, shaped like the parameters.
    posterior : SpikeAndSlabPosterior
        The fixed point of eq. 22 (``q`` per layer, Beta parameters).
    layers : list of str
        Layer names in the order of ``posterior.q`` / ``alpha`` / ``beta``.
    report : PruneReport
        The network's pruning state after the pass.
    """

    masks: dict[str, torch.Tensor]
    posterior: SpikeAndSlabPosterior
    layers: list[str]
    report: PruneReport


def _prunable(model: nn.Module) -> Iterator[tuple[str, nn.Module, str, torch.Tensor]]:
    """``(module name, module, param name, parameter)`` for weight/bias of Bayesian or masked layers."""
    for name, module in model.named_modules():
        masked = any(hasattr(module, p + MASK_SUFFIX) for p in PRUNABLE_PARAMS)
        if not (isinstance(module, PartialBayesLayer) or masked):
            continue
        for pname in PRUNABLE_PARAMS:
            param = getattr(module, pname, None)
            if isinstance(param, torch.Tensor):
                yield name, module, pname, param


def _full_name(module_name: str, pname: str) -> str:
    return f"{module_name}.{pname}" if module_name else pname


def prune_report(model: nn.Module) -> PruneReport:
    """Fraction of pruned entries per layer and in total, read from the masks stored in ``model``.

    Parameters
    ----------
    model : torch.nn.Module
        A network with partial / full-Bayes layers (pruned or not).

    Returns
    -------
    PruneReport
        Per-layer and total counts (works after a resume: the masks are buffers).
    """
    stats: dict[str, LayerPruneStats] = {}
    for name, module, pname, param in _prunable(model):
        mask = getattr(module, pname + MASK_SUFFIX, None)
        pruned = 0 if mask is None else mask.numel() - int(mask.sum())
        bayes = 0
        if isinstance(module, PartialBayesLayer) and pname in module.bayes_param_names:
            bayes = getattr(module, f"{pname}_rho").numel()
        row = stats.setdefault(name, LayerPruneStats(name, 0, 0, 0))
        row.entries += param.numel()
        row.pruned += pruned
        row.bayesian += bayes
    total = sum(p.numel() for p in model.parameters())
    return PruneReport(list(stats.values()), total)


# ------------------------------------------------------------------------------------ masks
def bmr_masks(
    model: nn.Module,
    alpha0: float = 1.0,
    beta0: float = 1.0,
    k_max: int = DEFAULT_K_MAX,
    threshold: float = 0.5,
) -> tuple[dict[str, torch.Tensor], SpikeAndSlabPosterior, list[str]]:
    """Keep-masks of spike-and-slab BMR (eq. 19–23) for every Bayesian entry of ``model``.

    ``ΔF(λ = 0)`` of every Bayesian weight in flat-model units (:func:`flat_posteriors`), the
    per-layer fixed point of eq. 22 (:func:`spike_and_slab_posterior`), then ``keep ⇔ q ≥ threshold``
    (eq. 23: prune where ``q < ½``). Entries that are not Bayesian are kept.

    Parameters
    ----------
    model : torch.nn.Module
        A flat mean-field network (:func:`~monai_bayes.reduction.to_flat_bayes`) or a partial-Bayes one.
    alpha0, beta0 : float
        Beta prior of each layer's slab probability π_l (eq. 13); default 1, 1 (uniform).
    k_max : int
        Fixed-point iterations (seed: 4).
    threshold : float
        Prune where ``q < threshold`` (seed: 0.5), in (0, 1).

    Returns
    -------
    tuple
        ``(masks, posterior, layers)``: ``{parameter name: bool mask shaped like it}`` (``True`` =
        keep), the fixed point, and the layer names in the fixed point's order.

    Raises
    ------
    ValueError
        If the model was never made Bayesian or ``threshold`` is outside (0, 1). A model whose
        Bayesian entries were all pruned by earlier passes gives empty masks.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold!r}.")
    posts = spike_delta_f_by_layer(model)
    if not posts:
        if any(name.endswith(MASK_SUFFIX) for name, _ in model.named_buffers()):
            # every Bayesian entry was pruned by earlier passes: nothing left to decide
            empty = torch.zeros(0)
            return {}, SpikeAndSlabPosterior([], empty, empty, 0), []
        raise ValueError("the model has no Bayesian entries to reduce; convert it with to_flat_bayes first.")
    posterior = spike_and_slab_posterior([p.delta_f0 for p in posts], alpha0=alpha0, beta0=beta0, k_max=k_max)
    masks: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())
    for post, q in zip(posts, posterior.q):
        module = modules[post.layer]
        assert isinstance(module, PartialBayesLayer)
        keep_bayes = torch.split(q >= threshold, list(post.sizes))
        for pname, keep in zip(post.params, keep_bayes):
            masks[_full_name(post.layer, pname)] = _scatter_keep(module, pname, keep)
    return masks, posterior, [p.layer for p in posts]


def _scatter_keep(module: PartialBayesLayer, pname: str, keep_bayes: torch.Tensor) -> torch.Tensor:
    """A keep-mask shaped like ``pname`` from decisions on its Bayesian entries (others kept)."""
    param = getattr(module, pname)
    if getattr(module, f"{pname}_bayes_index").numel() == 0:  # dense: every entry Bayesian
        return keep_bayes.reshape(param.shape)
    mask = torch.ones(param.numel(), dtype=torch.bool, device=param.device)
    mask[module.bayes_index(pname)] = keep_bayes
    return mask.view_as(param)


def baseline_masks(
    model: nn.Module,
    method: BaselineMethod | str,
    num_pruned: int,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Keep-masks pruning the ``num_pruned`` Bayesian entries with the lowest score, ranked globally.

    Scores (in flat-model units, so layers with different γ₀ compare fairly): ``"magnitude"`` -- |μ̂|;
    ``"snr"`` -- |μ̂|/σ̂; ``"random"`` -- uniform noise from ``generator``. Use the number BMR pruned
    (``prune_report``) for an ablation at equal sparsity.

    Parameters
    ----------
    model : torch.nn.Module
        A flat mean-field / partial-Bayes network.
    method : str
        ``"magnitude"``, ``"snr"`` or ``"random"``.
    num_pruned : int
        Number of Bayesian entries to prune, ``0 ≤ num_pruned ≤`` number of Bayesian entries.
    generator : torch.Generator, optional
        Source of the random scores (``"random"`` only), for reproducible ablations.

    Returns
    -------
    dict of str to torch.Tensor
        ``{parameter name: bool mask}`` (``True`` = keep), shaped like the parameters.

    Raises
    ------
    ValueError
        For an unknown method or a ``num_pruned`` out of range.
    """
    if method not in BASELINE_METHODS:
        raise ValueError(f"method must be one of {BASELINE_METHODS}, got {method!r}.")
    posts = flat_posteriors(model)
    total = sum(p.mu.numel() for p in posts)
    if not 0 <= int(num_pruned) <= total:
        raise ValueError(f"num_pruned must be in [0, {total}] (the Bayesian entries), got {num_pruned!r}.")
    if method == "magnitude":
        scores = [p.mu.abs() for p in posts]
    elif method == "snr":
        scores = [p.mu.abs() / p.sigma for p in posts]
    else:
        scores = [torch.rand(p.mu.numel(), generator=generator).to(p.mu.device) for p in posts]
    flat = torch.cat([s.to(posts[0].mu.device) for s in scores])
    keep_all = torch.ones_like(flat, dtype=torch.bool)
    if num_pruned:
        keep_all[torch.topk(flat, int(num_pruned), largest=False).indices] = False
    masks: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())
    offset = 0
    for post in posts:
        module = modules[post.layer]
        assert isinstance(module, PartialBayesLayer)
        for pname, size in zip(post.params, post.sizes):
            keep = keep_all[offset : offset + size].to(module.weight.device)
            masks[_full_name(post.layer, pname)] = _scatter_keep(module, pname, keep)
            offset += size
    return masks


# ------------------------------------------------------------------------------------ applying
def _slice_state(optimizer: torch.optim.Optimizer | None, param: torch.Tensor, kept: torch.Tensor) -> None:
    """Shrink the optimizer's per-entry state of the 1-D ``param`` to the flat indices ``kept``."""
    if optimizer is None or param not in optimizer.state:
        return
    state = optimizer.state[param]
    for key, value in list(state.items()):
        if isinstance(value, torch.Tensor) and value.shape == param.shape:
            state[key] = value.index_select(0, kept)


def _forget_param(optimizer: torch.optim.Optimizer | None, param: torch.Tensor) -> None:
    """Remove ``param`` from the optimizer's groups and state (its entries were all pruned)."""
    if optimizer is None:
        return
    for group in optimizer.param_groups:
        group["params"] = [p for p in group["params"] if p is not param]
    optimizer.state.pop(param, None)


def _zero_state(optimizer: torch.optim.Optimizer | None, param: torch.Tensor, keep: torch.Tensor) -> None:
    """Zero the optimizer's per-entry state (momentum, Adam moments) of the pruned entries of ``param``."""
    if optimizer is None or param not in optimizer.state:
        return
    for value in optimizer.state[param].values():
        if isinstance(value, torch.Tensor) and value.shape == param.shape:
            value.masked_fill_(~keep, 0)


def _drop_bayes_entries(
    module: PartialBayesLayer, pname: str, keep_flat: torch.Tensor, optimizer: torch.optim.Optimizer | None
) -> None:
    """Remove the pruned entries of ``pname`` from the layer's Bayesian index and ρ (identity of ρ kept)."""
    stored = getattr(module, f"{pname}_bayes_index")
    dense = stored.numel() == 0
    rho = getattr(module, f"{pname}_rho")
    survive = keep_flat if dense else keep_flat[stored]
    # one nonzero (the costly step) serves ρ, the optimizer state and the new index
    kept = survive.nonzero().squeeze(1)
    if kept.numel() == survive.numel():
        return
    if kept.numel() == 0:
        _forget_param(optimizer, rho)
        delattr(module, f"{pname}_rho")
        delattr(module, f"{pname}_bayes_index")
        return
    _slice_state(optimizer, rho, kept)
    with torch.no_grad():
        rho.data = rho.data.index_select(0, kept)
    rho.grad = None
    new_index = kept if dense else stored.index_select(0, kept)
    module.register_buffer(f"{pname}_bayes_index", new_index)


def apply_prune_masks(
    model: nn.Module,
    masks: Mapping[str, torch.Tensor],
    optimizer: torch.optim.Optimizer | None = None,
) -> PruneReport:
    """Prune ``model`` in place: masked entries become exact zeros outside the posterior.

    Masks combine with earlier ones (an entry once pruned stays pruned). The stored masks and
    the optimizer hooks of :func:`enforce_prune_masks` keep the zeros through later training.

    Parameters
    ----------
    model : torch.nn.Module
        A network with partial / full-Bayes layers.
    masks : mapping of str to torch.Tensor
        ``{parameter name (as in named_parameters): bool tensor shaped like it}``, ``True`` = keep.
    optimizer : torch.optim.Optimizer, optional
        The optimizer training ``model``: its state is sliced / zeroed to match, and it gets the
        hooks that keep pruned entries at 0.

    Returns
    -------
    PruneReport
        The pruning state after this call.

    Raises
    ------
    ValueError
        If a name is not a weight/bias of a Bayesian or pruned layer, or a mask's shape or dtype is wrong.
    """
    prunable = {_full_name(n, p): (m, p, t) for n, m, p, t in _prunable(model)}
    for name, mask in masks.items():
        if name not in prunable:
            raise ValueError(
                f"prune mask {name!r} names no weight/bias of a Bayesian layer; e.g. {list(prunable)[:3]}."
            )
        param = prunable[name][2]
        if mask.dtype != torch.bool or tuple(mask.shape) != tuple(param.shape):
            raise ValueError(
                f"prune mask {name!r} must be a bool tensor of shape {tuple(param.shape)}, "
                f"got {mask.dtype} of shape {tuple(mask.shape)}."
            )
    for name, mask in masks.items():
        module, pname, param = prunable[name]
        keep = mask.to(param.device)
        old = getattr(module, pname + MASK_SUFFIX, None)
        if old is not None:
            keep = keep & old
        with torch.no_grad():
            param.masked_fill_(keep.logical_not(), 0)
        module.register_buffer(pname + MASK_SUFFIX, keep)
        if isinstance(module, PartialBayesLayer) and pname in module.bayes_param_names:
            _drop_bayes_entries(module, pname, keep.reshape(-1), optimizer)
        _zero_state(optimizer, param, keep)
    if optimizer is not None:
        enforce_prune_masks(model, optimizer)
    return prune_report(model)


def _masked_params(model: nn.Module) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for module in model.modules():
        for pname in PRUNABLE_PARAMS:
            mask = getattr(module, pname + MASK_SUFFIX, None)
            if mask is not None:
                yield getattr(module, pname), mask


def _zero_pruned_grads(model: nn.Module) -> None:
    for param, mask in _masked_params(model):
        if param.grad is not None:
            param.grad.masked_fill_(~mask, 0)


def _zero_pruned_values(model: nn.Module) -> None:
    with torch.no_grad():
        for param, mask in _masked_params(model):
            param.masked_fill_(~mask, 0)


def enforce_prune_masks(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
    """Set pruned entries to 0 now and, with ``optimizer``, after every one of its steps.

    Registers (once per optimizer) a step pre-hook zeroing the pruned entries' gradients (so
    momentum and Adam moments stay 0 there) and a post-hook re-zeroing their values (so no
    optimizer rule -- weight decay, a stale moment -- can move them). Call it after a resume.

    Parameters
    ----------
    model : torch.nn.Module
        The pruned network (masks stored as ``<param>_bmr_mask`` buffers).
    optimizer : torch.optim.Optimizer, optional
        The optimizer training ``model``.

    Raises
    ------
    ValueError
        If ``optimizer`` already guards a different model.
    """
    _zero_pruned_values(model)
    if optimizer is None:
        return
    guard = _GUARDS.get(optimizer)
    if guard is not None:
        guarded = guard[0]()
        if guarded is model:
            return
        if guarded is not None:
            raise ValueError("this optimizer already keeps another model's pruned entries at zero.")
        for handle in guard[1]:
            handle.remove()
    model_ref = weakref.ref(model)

    def pre_hook(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        net = model_ref()
        if net is not None:
            _zero_pruned_grads(net)

    def post_hook(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        net = model_ref()
        if net is not None:
            _zero_pruned_values(net)

    handles = [optimizer.register_step_pre_hook(pre_hook), optimizer.register_step_post_hook(post_hook)]
    _GUARDS[optimizer] = (model_ref, handles)


def bmr_prune(
    model: nn.Module,
    alpha0: float = 1.0,
    beta0: float = 1.0,
    k_max: int = DEFAULT_K_MAX,
    threshold: float = 0.5,
    optimizer: torch.optim.Optimizer | None = None,
) -> BMRPruneResult:
    """One stochastic-BMR pruning pass (seed 002, §2.7): :func:`bmr_masks` then :func:`apply_prune_masks`.

    Parameters
    ----------
    model : torch.nn.Module
        A flat mean-field network, pruned in place.
    alpha0, beta0, k_max, threshold
        See :func:`bmr_masks`.
    optimizer : torch.optim.Optimizer, optional
        See :func:`apply_prune_masks`.

    Returns
    -------
    BMRPruneResult
        Masks of this pass, the fixed point, and the report after pruning.
    """
    masks, posterior, layers = bmr_masks(model, alpha0, beta0, k_max, threshold)
    report = apply_prune_masks(model, masks, optimizer)
    return BMRPruneResult(masks, posterior, layers, report)


# ------------------------------------------------------------------------------------ state
def load_pruned_state_dict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], gamma0: float | None = None
) -> nn.Module:
    """Load a pruned (flat) network's state dict into a fresh deterministic ``model``.

    Registers the ``<param>_bmr_mask`` buffers the checkpoint holds, converts the model to the
    checkpoint's partial-Bayes structure (:func:`~monai_bayes.networks.load_stochastic_state_dict`)
    and loads strictly; pruned entries are then exactly 0.

    Parameters
    ----------
    model : torch.nn.Module
        The deterministic architecture the checkpoint was trained from.
    state_dict : mapping of str to torch.Tensor
        ``model.state_dict()`` of the pruned network.
    gamma0 : float, optional
        Prior scale γ₀ to set on every Bayesian layer, overriding the prior stored in the checkpoint
        (``bayes_prior`` buffers; needed only for checkpoints written before the prior was stored).

    Returns
    -------
    torch.nn.Module
        ``model``, converted and loaded.

    Raises
    ------
    ValueError
        If a mask key names no parameter of ``model`` or has the wrong shape, or the state does not fit.
    """
    load_stochastic_state_dict(model, state_dict)
    if gamma0 is not None:
        if not gamma0 > 0:
            raise ValueError(f"gamma0 must be > 0, got {gamma0!r}.")
        for module in model.modules():
            if isinstance(module, PartialBayesLayer):
                module.prior_sigma = float(gamma0)
    enforce_prune_masks(model)
    return model


def strip_prune_masks(model: nn.Module) -> nn.Module:
    """Remove the ``<param>_bmr_mask`` buffers (values stay 0), e.g. on a posterior-mean copy for export.

    Parameters
    ----------
    model : torch.nn.Module
        A pruned network (modified in place).

    Returns
    -------
    torch.nn.Module
        ``model`` whose state dict now has the keys of the plain architecture.
    """
    for module in model.modules():
        for pname in PRUNABLE_PARAMS:
            if hasattr(module, pname + MASK_SUFFIX):
                delattr(module, pname + MASK_SUFFIX)
    return model
