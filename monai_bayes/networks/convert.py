"""Turn any trained ``nn.Module`` into a partial-Bayes, full-Bayes or MC-dropout network and back.

Conversion swaps the class of the selected conv / transposed-conv / linear modules for their
stochastic variant *in place of the module* (optionally on a deep copy of the model), so

* the network's own ``forward`` (residual units, skip connections, transposed convs with
  ``output_padding``, deep supervision, ...) is untouched -- nothing is re-wired;
* the means are the trained weights themselves (SBN step 3: μ initialised from the point
  estimates), and every state-dict key of the deterministic model keeps its name;
* the result loads deterministic checkpoints with only the Bayesian extras missing.

Only modules whose type is exactly one of :data:`~monai_bayes.layers.functional.SUPPORTED_TYPES`
are converted; subclasses with their own ``forward`` are skipped (with a warning) because their
semantics are unknown.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

import torch
from monai.utils import StrEnum
from torch import nn

from monai_bayes.layers.base import stochastic_layers
from monai_bayes.layers.candidates import ModulePattern, candidate_modules, candidate_parameters, parameter_name
from monai_bayes.layers.dropout import MCDropout, MCDropoutLayer, mc_dropout_class
from monai_bayes.layers.horseshoe import DEFAULT_TAU0, HorseshoeBayesLayer, horseshoe_bayes_class
from monai_bayes.layers.partial import (
    BAYES_PARAM_NAMES,
    DEFAULT_SIGMA_FLOOR,
    DEFAULT_SIGMA_RELATIVE_SCALE,
    PartialBayesLayer,
    partial_bayes_class,
)
from monai_bayes.utils.options import look_up

__all__ = [
    "DropoutPlacement",
    "init_means_normal",
    "to_deterministic",
    "to_full_bayes",
    "to_horseshoe_bayes",
    "to_mc_dropout",
    "to_partial_bayes",
]


class DropoutPlacement(StrEnum):
    """Where :func:`to_mc_dropout` puts MC dropout (see its docstring)."""

    AUTO = "auto"
    EXISTING = "existing"
    AFTER = "after"


_DROPOUT_TYPES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)


def _resolve_masks(
    candidates: Mapping[str, nn.Parameter], selection: Mapping[str, torch.Tensor] | str
) -> dict[str, torch.Tensor]:
    """Boolean masks per candidate parameter from ``"all"`` or a mapping of boolean masks.

    Parameters
    ----------
    candidates : Mapping of str to nn.Parameter
        The parameters conversion may change (:func:`~monai_bayes.layers.candidate_parameters`).
    selection : Mapping of str to torch.Tensor or str
        ``"all"`` or ``{parameter name: bool tensor shaped like the parameter}``.

    Returns
    -------
    dict of str to torch.Tensor
        Boolean masks, ``True`` = Bayesian entry.

    Raises
    ------
    ValueError
        For another string, unknown parameter names, wrong shapes, or non-boolean tensors (scores
        are turned into masks by :func:`monai_bayes.selection.select_topk`).
    """
    if isinstance(selection, str):
        if selection != "all":
            raise ValueError(f"selection must be 'all' or a mapping of boolean masks, got {selection!r}.")
        return {n: torch.ones_like(p, dtype=torch.bool) for n, p in candidates.items()}
    unknown = [n for n in selection if n not in candidates]
    if unknown:
        raise ValueError(
            f"selection names parameters that are not selectable: {unknown[:5]}; "
            f"expected names like {list(candidates)[:3]}."
        )
    for name, value in selection.items():
        if tuple(value.shape) != tuple(candidates[name].shape):
            raise ValueError(
                f"selection[{name!r}] must have shape {tuple(candidates[name].shape)}, got {tuple(value.shape)}."
            )
    not_bool = [n for n, v in selection.items() if v.dtype != torch.bool]
    if not_bool:
        raise ValueError(
            f"selection must hold boolean masks, got dtype {selection[not_bool[0]].dtype} for {not_bool[0]!r}; "
            "turn scores into masks with monai_bayes.selection.select_topk(scores, r_bayes, scope)."
        )
    return dict(selection)


def _maybe_copy(model: nn.Module, inplace: bool) -> nn.Module:
    return model if inplace else copy.deepcopy(model)


def to_partial_bayes(
    model: nn.Module,
    selection: Mapping[str, torch.Tensor] | str,
    *,
    include: ModulePattern | Sequence[ModulePattern] | None = None,
    exclude: ModulePattern | Sequence[ModulePattern] | None = None,
    sigma_init: float | str = "relative",
    sigma_relative_scale: float = DEFAULT_SIGMA_RELATIVE_SCALE,
    sigma_floor: float = DEFAULT_SIGMA_FLOOR,
    prior_mu: float = 0.0,
    prior_sigma: float = 1.0,
    inplace: bool = True,
) -> nn.Module:
    """Make the selected weights of ``model`` Bayesian, ``N(μ, σ²)`` with μ = the trained weights.

    Parameters
    ----------
    model
        a trained deterministic network (any ``nn.Module``).
    selection
        one of
        * ``{param name: bool tensor}`` -- exact masks, ``True`` = Bayesian (make them from scores
          with :func:`monai_bayes.selection.select_topk`);
        * ``"all"`` -- every entry of every candidate parameter (full mean-field Bayes).
        Parameter names are those of ``model.named_parameters()``.
    include, exclude
        restrict the candidate modules by name pattern or type.
    sigma_init, sigma_relative_scale, sigma_floor
        initial σ of the Bayesian entries. Default
        ``"relative"``: ``σ = max(0.05·|μ|, 1e-3)``; a float gives a constant σ.
    prior_mu, prior_sigma
        Gaussian prior (seed 000: ``N(0, 1)``).
    inplace
        convert ``model`` itself (default) or a deep copy.

    Returns
    -------
    The converted network; layers with no selected entry stay plain modules.
    """
    model = _maybe_copy(model, inplace)
    candidates = candidate_parameters(model, include, exclude)
    masks = _resolve_masks(candidates, selection)
    if not any(bool(m.any()) for m in masks.values()):
        raise ValueError("selection marks no parameter entry as Bayesian.")
    for mname, module in candidate_modules(model, include, exclude, what="partial-Bayesian").items():
        module_masks = {
            p: masks[parameter_name(mname, p)] for p in BAYES_PARAM_NAMES if parameter_name(mname, p) in masks
        }
        if not any(bool(m.any()) for m in module_masks.values()):
            continue
        module.__class__ = partial_bayes_class(type(module))
        cast(PartialBayesLayer, module)._init_partial_bayes(
            module_masks,
            sigma_init=sigma_init,
            sigma_relative_scale=sigma_relative_scale,
            sigma_floor=sigma_floor,
            prior_mu=prior_mu,
            prior_sigma=prior_sigma,
        )
    return model


def init_means_normal(
    model: nn.Module,
    mean: float = 0.0,
    std: float = 1.0,
    include: ModulePattern | Sequence[ModulePattern] | None = None,
    exclude: ModulePattern | Sequence[ModulePattern] | None = None,
) -> nn.Module:
    """Draw every candidate weight and bias ``~ N(mean, std²)`` in place (full Bayes from scratch).

    The seed's and the authors' full-Bayes baseline starts from ``μ ~ N(0, 1)`` (``models/bayeslayers.py``:
    ``mu_weight.data.normal_(mean=posterior_mu_init, std=1)``, ``posterior_mu: 0``) rather than from a trained
    network. Normalisation layers are not candidates and keep their (untrained) initial state. Draws come from
    torch's global generator (seed it first).

    Parameters
    ----------
    model : nn.Module
        The network, changed in place (before or after conversion: the means live in ``weight`` / ``bias``).
    mean, std : float
        Moments of the draw (``std > 0``).
    include, exclude : ModulePattern or sequence of ModulePattern, optional
        Restrict the candidate modules (see :func:`~monai_bayes.layers.candidate_modules`).

    Returns
    -------
    nn.Module
        ``model``.

    Raises
    ------
    ValueError
        If ``std <= 0``.
    """
    if not float(std) > 0:
        raise ValueError(f"std must be > 0, got {std!r}.")
    with torch.no_grad():
        for param in candidate_parameters(model, include, exclude).values():
            param.normal_(mean=float(mean), std=float(std))
    return model


def to_full_bayes(model: nn.Module, **kwargs: Any) -> nn.Module:
    """Full mean-field Bayes: :func:`to_partial_bayes` with every candidate entry selected.

    Accepts the keyword arguments of :func:`to_partial_bayes` except ``selection``.
    """
    for forbidden in ("selection", "r_bayes", "scope"):
        if forbidden in kwargs:
            raise ValueError(f"to_full_bayes selects every entry; do not pass {forbidden!r}.")
    return to_partial_bayes(model, "all", **kwargs)


def to_horseshoe_bayes(
    model: nn.Module,
    *,
    include: ModulePattern | Sequence[ModulePattern] | None = None,
    exclude: ModulePattern | Sequence[ModulePattern] | None = None,
    tau0: float = DEFAULT_TAU0,
    sigma_init: float = 0.1,
    weight_sigma_relative: float = 0.05,
    weight_sigma_floor: float = 1e-2,
    inplace: bool = True,
) -> nn.Module:
    """Tiered-FF (seed 002): mean-field over every candidate layer with the non-centred regularised horseshoe.

    Each selected conv / transposed conv / linear module becomes a
    :class:`~monai_bayes.layers.HorseshoeBayesLayer` whose posterior-median network equals the trained one
    (``μ = w / γ̄``), so training starts from the point estimates as the other conversions do.

    Parameters
    ----------
    model : torch.nn.Module
        A trained deterministic network.
    include, exclude : pattern or sequence of patterns, optional
        Restrict the candidate modules by name pattern or type (as :func:`to_partial_bayes`).
    tau0 : float
        Global scale τ₀ (``v ~ C⁺(0, τ₀)``).
    sigma_init : float
        Initial σ of the log-scales.
    weight_sigma_relative, weight_sigma_floor : float
        Initial σ of ŵ: ``max(relative · |μ|, floor)``.
    inplace : bool
        Convert ``model`` itself (default) or a deep copy.

    Returns
    -------
    torch.nn.Module
        The converted network.

    Raises
    ------
    ValueError
        If no candidate module is found or an option is out of range.
    """
    model = _maybe_copy(model, inplace)
    modules = candidate_modules(model, include, exclude, what="horseshoe")
    if not modules:
        raise ValueError("no conv / linear module to convert to the horseshoe prior (check include / exclude).")
    for module in modules.values():
        module.__class__ = horseshoe_bayes_class(type(module))
        cast(HorseshoeBayesLayer, module)._init_horseshoe(
            tau0=tau0,
            sigma_init=sigma_init,
            weight_sigma_relative=weight_sigma_relative,
            weight_sigma_floor=weight_sigma_floor,
        )
    return model


def _last_name(names: Iterable[str]) -> str | None:
    names = list(names)
    return names[-1] if names else None


def to_mc_dropout(
    model: nn.Module,
    p: float = 0.1,
    *,
    placement: DropoutPlacement | str = DropoutPlacement.AUTO,
    channel_wise: bool = False,
    include: ModulePattern | Sequence[ModulePattern] | None = None,
    exclude: ModulePattern | Sequence[ModulePattern] | None = None,
    exclude_output_layer: bool = True,
    inplace: bool = True,
) -> nn.Module:
    """Monte-Carlo dropout network (Gal & Ghahramani 2016) from any ``nn.Module``.

    Parameters
    ----------
    p
        drop probability in [0, 1).
    placement
        * ``"existing"`` -- replace the model's dropout modules (e.g. the dropout slots of MONAI
          ``UNet``/``BasicUNet``, which exist even with ``dropout=0``) by :class:`MCDropout` with ``p``;
        * ``"after"`` -- add MC dropout to the *output* of every candidate conv / transposed conv /
          linear layer (for networks without dropout slots: SegResNet, DynUNet, ResNet);
        * ``"auto"`` (default) -- ``"existing"`` if the model has dropout modules, else ``"after"``.
    channel_wise
        drop whole channels instead of single activations.
    include, exclude
        restrict the converted modules by name pattern or type.
    exclude_output_layer
        with ``"after"``, leave the last candidate layer (in module order, the
        network's output head for MONAI networks) without dropout.
    inplace
        convert ``model`` itself (default) or a deep copy.
    """
    if not 0.0 <= float(p) < 1.0:
        raise ValueError(f"dropout probability p must be in [0, 1), got {p!r}.")
    placement = look_up("placement", placement, DropoutPlacement)
    model = _maybe_copy(model, inplace)
    if placement == "auto":
        has_dropout = any(type(m) in _DROPOUT_TYPES for m in model.modules())
        placement = DropoutPlacement.EXISTING if has_dropout else DropoutPlacement.AFTER
    if placement == "existing":
        targets = candidate_modules(model, include, exclude, supported=_DROPOUT_TYPES, what="MC dropout")
        if not targets:
            raise ValueError("placement='existing' but the model has no dropout module; use placement='after'.")
        for name in targets:
            _set_submodule(model, name, MCDropout(p, channel_wise))
        return model
    targets = candidate_modules(model, include, exclude, what="MC dropout")
    if exclude_output_layer:
        last = _last_name(targets)
        if last is not None:
            targets.pop(last, None)
    if not targets:
        raise ValueError("no conv/linear module is left to add MC dropout to (check include/exclude).")
    for module in targets.values():
        module.__class__ = mc_dropout_class(type(module))
        cast(MCDropoutLayer, module)._init_mc_dropout(p, channel_wise)
    return model


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> nn.Module:
    if not name:
        return new
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
    return model


def to_deterministic(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """The posterior-mean network: every stochastic layer replaced by its deterministic module.

    Partial/full-Bayes layers become their plain base layer with ``weight = μ``; MC dropout
    disappears. The result has no monai_bayes classes left (e.g. for TorchScript / ONNX export).
    """
    model = _maybe_copy(model, inplace)
    for name, layer in reversed(stochastic_layers(model)):
        model = _set_submodule(model, name, layer.deterministic_module())
    return model
