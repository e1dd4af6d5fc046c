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
import fnmatch
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from monai_bayes.layers.base import StochasticLayer, stochastic_layers
from monai_bayes.layers.dropout import MCDropout, mc_dropout_class
from monai_bayes.layers.functional import SUPPORTED_TYPES
from monai_bayes.layers.partial import (
    BAYES_PARAM_NAMES,
    DEFAULT_SIGMA_FLOOR,
    DEFAULT_SIGMA_RELATIVE_SCALE,
    PartialBayesLayer,
    partial_bayes_class,
)
from monai_bayes.selection.topk import SelectionScope, select_topk

__all__ = [
    "ModulePattern",
    "bayes_masks_from_state_dict",
    "candidate_modules",
    "candidate_parameters",
    "load_stochastic_state_dict",
    "to_deterministic",
    "to_full_bayes",
    "to_mc_dropout",
    "to_partial_bayes",
]

logger = logging.getLogger(__name__)

#: a module name (exact, a prefix of sub-module names, or an ``fnmatch`` glob) or a module type
ModulePattern = str | type
_DROPOUT_TYPES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)


def _as_list(patterns: ModulePattern | Iterable[ModulePattern] | None) -> list[ModulePattern]:
    if patterns is None:
        return []
    if isinstance(patterns, (str, type)):
        return [patterns]
    return list(patterns)


def _matches(name: str, module: nn.Module, pattern: ModulePattern) -> bool:
    if isinstance(pattern, type):
        return isinstance(module, pattern)
    return name == pattern or name.startswith(pattern + ".") or fnmatch.fnmatchcase(name, pattern)


def _param_name(module_name: str, pname: str) -> str:
    return f"{module_name}.{pname}" if module_name else pname


def candidate_modules(
    model: nn.Module,
    include: ModulePattern | Sequence[ModulePattern] | None = None,
    exclude: ModulePattern | Sequence[ModulePattern] | None = None,
    supported: tuple[type[nn.Module], ...] = SUPPORTED_TYPES,
    what: str = "stochastic",
) -> dict[str, nn.Module]:
    """Modules of ``model`` that a converter may change, by qualified name.

    Parameters
    ----------
    include: patterns (module names -- exact, prefix of sub-modules, or glob -- or module types);
        if given, only matching modules are candidates. A pattern that matches nothing, or names a
        module whose type cannot be converted, raises ``ValueError``.
    exclude: patterns removed from the candidates.
    supported: the convertible types (exact type match).
    what: the kind of conversion, for error messages.
    """
    modules = dict(model.named_modules())
    include_list, exclude_list = _as_list(include), _as_list(exclude)
    for pattern in include_list:
        _check_include_pattern(modules, pattern, supported, what)
    found: dict[str, nn.Module] = {}
    skipped_subclasses = []
    for name, module in modules.items():
        if include_list and not any(_matches(name, module, p) for p in include_list):
            continue
        if any(_matches(name, module, p) for p in exclude_list):
            continue
        if type(module) in supported:
            found[name] = module
        elif isinstance(module, supported) and not isinstance(module, StochasticLayer):
            skipped_subclasses.append(f"{name} ({type(module).__name__})")
    if skipped_subclasses:
        logger.warning("not converted (subclasses of supported layers with unknown forward): %s", skipped_subclasses)
    return found


def _check_include_pattern(
    modules: Mapping[str, nn.Module], pattern: ModulePattern, supported: tuple[type, ...], what: str
) -> None:
    names = [t.__name__ for t in supported]
    if isinstance(pattern, type):
        if not any(issubclass(pattern, t) or issubclass(t, pattern) for t in supported):
            raise ValueError(f"include names type {pattern.__name__}, which cannot be made {what}; supported: {names}.")
        return
    if not isinstance(pattern, str):
        raise ValueError(f"include/exclude patterns must be module names or types, got {pattern!r}.")
    if pattern in modules and not isinstance(modules[pattern], supported) and not list(modules[pattern].children()):
        raise ValueError(
            f"include names module {pattern!r} of type {type(modules[pattern]).__name__}, which cannot be made "
            f"{what}; supported: {names}."
        )
    matched = [n for n, m in modules.items() if _matches(n, m, pattern)]
    if not matched:
        raise ValueError(f"include pattern {pattern!r} matches no module of the model.")
    if not any(type(modules[n]) in supported for n in matched):
        raise ValueError(f"include pattern {pattern!r} matches no module of a supported type {names}.")


def candidate_parameters(
    model: nn.Module,
    include: ModulePattern | Sequence[ModulePattern] | None = None,
    exclude: ModulePattern | Sequence[ModulePattern] | None = None,
) -> dict[str, nn.Parameter]:
    """Parameters (weights and biases) that partial-Bayes conversion may make Bayesian, by full name.

    Normalisation layers are never candidates (they are not of a supported type).
    """
    out: dict[str, nn.Parameter] = {}
    for mname, module in candidate_modules(model, include, exclude, what="partial-Bayesian").items():
        for pname in BAYES_PARAM_NAMES:
            param = getattr(module, pname, None)
            if isinstance(param, nn.Parameter):
                out[_param_name(mname, pname)] = param
    if not out:
        raise ValueError(
            "the model has no selectable parameters (no Conv/ConvTranspose/Linear module after include/exclude)."
        )
    return out


def _resolve_masks(
    candidates: Mapping[str, nn.Parameter],
    selection: Mapping[str, torch.Tensor] | str,
    r_bayes: float | None,
    scope: SelectionScope,
) -> dict[str, torch.Tensor]:
    """Boolean masks per candidate parameter from ``"all"``, bool masks, or scores + ``r_bayes``."""
    if isinstance(selection, str):
        if selection != "all":
            raise ValueError(f"selection must be 'all' or a mapping of masks/scores, got {selection!r}.")
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
    kinds = {v.dtype == torch.bool for v in selection.values()}
    if kinds == {True}:
        if r_bayes is not None:
            raise ValueError("r_bayes is only used with score selections; boolean masks already fix the selection.")
        return {n: v.to(torch.bool) for n, v in selection.items()}
    if kinds == {False}:
        if r_bayes is None:
            raise ValueError("selection holds scores: pass r_bayes in (0, 1] to choose the Top-k entries.")
        return select_topk(selection, r_bayes, scope)
    raise ValueError("selection must hold only boolean masks or only floating-point scores, not a mix.")


def _maybe_copy(model: nn.Module, inplace: bool) -> nn.Module:
    return model if inplace else copy.deepcopy(model)


def to_partial_bayes(
    model: nn.Module,
    selection: Mapping[str, torch.Tensor] | str,
    *,
    r_bayes: float | None = None,
    scope: SelectionScope = "global",
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
    model: a trained deterministic network (any ``nn.Module``).
    selection: one of
        * ``{param name: bool tensor}`` -- exact masks, ``True`` = Bayesian;
        * ``{param name: float tensor}`` -- saliency scores; the Top-k entries by ``r_bayes``/``scope``
          are selected (see :func:`monai_bayes.selection.select_topk`);
        * ``"all"`` -- every entry of every candidate parameter (full mean-field Bayes).
        Parameter names are those of ``model.named_parameters()``.
    r_bayes: fraction in (0, 1] of Bayesian entries, for score selections.
    scope: ``"global"`` (seed 000) or ``"layer"`` Top-k.
    include, exclude: restrict the candidate modules by name pattern or type.
    sigma_init, sigma_relative_scale, sigma_floor: initial σ of the Bayesian entries. Default
        ``"relative"``: ``σ = max(0.05·|μ|, 1e-3)``; a float gives a constant σ.
    prior_mu, prior_sigma: Gaussian prior (seed 000: ``N(0, 1)``).
    inplace: convert ``model`` itself (default) or a deep copy.

    Returns
    -------
    The converted network; layers with no selected entry stay plain modules.
    """
    model = _maybe_copy(model, inplace)
    candidates = candidate_parameters(model, include, exclude)
    masks = _resolve_masks(candidates, selection, r_bayes, scope)
    if not any(bool(m.any()) for m in masks.values()):
        raise ValueError("selection marks no parameter entry as Bayesian.")
    for mname, module in candidate_modules(model, include, exclude, what="partial-Bayesian").items():
        module_masks = {p: masks[_param_name(mname, p)] for p in BAYES_PARAM_NAMES if _param_name(mname, p) in masks}
        if not any(bool(m.any()) for m in module_masks.values()):
            continue
        module.__class__ = partial_bayes_class(type(module))
        module._init_partial_bayes(
            module_masks,
            sigma_init=sigma_init,
            sigma_relative_scale=sigma_relative_scale,
            sigma_floor=sigma_floor,
            prior_mu=prior_mu,
            prior_sigma=prior_sigma,
        )
    return model


def to_full_bayes(model: nn.Module, **kwargs: Any) -> nn.Module:
    """Full mean-field Bayes: :func:`to_partial_bayes` with every candidate entry selected.

    Accepts the keyword arguments of :func:`to_partial_bayes` except ``selection`` / ``r_bayes``.
    """
    for forbidden in ("selection", "r_bayes"):
        if forbidden in kwargs:
            raise ValueError(f"to_full_bayes selects every entry; do not pass {forbidden!r}.")
    return to_partial_bayes(model, "all", **kwargs)


def _last_name(names: Iterable[str]) -> str | None:
    names = list(names)
    return names[-1] if names else None


def to_mc_dropout(
    model: nn.Module,
    p: float = 0.1,
    *,
    placement: str = "auto",
    channel_wise: bool = False,
    include: ModulePattern | Sequence[ModulePattern] | None = None,
    exclude: ModulePattern | Sequence[ModulePattern] | None = None,
    exclude_output_layer: bool = True,
    inplace: bool = True,
) -> nn.Module:
    """Monte-Carlo dropout network (Gal & Ghahramani 2016) from any ``nn.Module``.

    Parameters
    ----------
    p: drop probability in [0, 1).
    placement:
        * ``"existing"`` -- replace the model's dropout modules (e.g. the dropout slots of MONAI
          ``UNet``/``BasicUNet``, which exist even with ``dropout=0``) by :class:`MCDropout` with ``p``;
        * ``"after"`` -- add MC dropout to the *output* of every candidate conv / transposed conv /
          linear layer (for networks without dropout slots: SegResNet, DynUNet, ResNet);
        * ``"auto"`` (default) -- ``"existing"`` if the model has dropout modules, else ``"after"``.
    channel_wise: drop whole channels instead of single activations.
    include, exclude: restrict the converted modules by name pattern or type.
    exclude_output_layer: with ``"after"``, leave the last candidate layer (in module order, the
        network's output head for MONAI networks) without dropout.
    inplace: convert ``model`` itself (default) or a deep copy.
    """
    if not 0.0 <= float(p) < 1.0:
        raise ValueError(f"dropout probability p must be in [0, 1), got {p!r}.")
    if placement not in ("auto", "existing", "after"):
        raise ValueError(f"placement must be 'auto', 'existing' or 'after', got {placement!r}.")
    model = _maybe_copy(model, inplace)
    if placement == "auto":
        has_dropout = any(type(m) in _DROPOUT_TYPES for m in model.modules())
        placement = "existing" if has_dropout else "after"
    if placement == "existing":
        targets = candidate_modules(model, include, exclude, supported=_DROPOUT_TYPES, what="MC dropout")
        if not targets:
            raise ValueError("placement='existing' but the model has no dropout module; use placement='after'.")
        for name in targets:
            _set_submodule(model, name, MCDropout(p, channel_wise))
        return model
    targets = candidate_modules(model, include, exclude, what="MC dropout")
    if exclude_output_layer:
        targets.pop(_last_name(targets), None)
    if not targets:
        raise ValueError("no conv/linear module is left to add MC dropout to (check include/exclude).")
    for module in targets.values():
        module.__class__ = mc_dropout_class(type(module))
        module._init_mc_dropout(p, channel_wise)
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


def bayes_masks_from_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Boolean masks ``{param name: mask}`` of the Bayesian entries stored in a partial-Bayes checkpoint.

    Raises ``ValueError`` if an index in the checkpoint does not fit the model's parameter (a
    checkpoint from another network).
    """
    params = dict(model.named_parameters())
    masks: dict[str, torch.Tensor] = {}
    for key, index in state_dict.items():
        if not key.endswith("_bayes_index"):
            continue
        pname = key[: -len("_bayes_index")]
        rho = state_dict.get(f"{pname}_rho")
        if pname not in params or rho is None:
            raise ValueError(f"checkpoint key {key!r} has no matching parameter {pname!r} (and ρ) in the model.")
        param = params[pname]
        mask = torch.zeros(param.numel(), dtype=torch.bool)
        if index.numel() == 0:
            if rho.numel() != param.numel():
                raise ValueError(
                    f"checkpoint ρ for {pname!r} has {rho.numel()} entries, the model's parameter {param.numel()}."
                )
            mask[:] = True
        else:
            if index.numel() != rho.numel() or int(index.max()) >= param.numel() or int(index.min()) < 0:
                raise ValueError(
                    f"checkpoint index for {pname!r} does not fit the model's parameter of shape {tuple(param.shape)}."
                )
            mask[index.long().cpu()] = True
        masks[pname] = mask.view(param.shape)
    return masks


def load_stochastic_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """Load a (partial/full-Bayes or deterministic) checkpoint into a deterministic ``model``.

    If the checkpoint holds Bayesian entries, ``model`` is first converted (in place) to the same
    partial-Bayes structure; then the state is loaded strictly. Errors name the mismatching keys.
    """
    masks = bayes_masks_from_state_dict(model, state_dict)
    if masks and not any(isinstance(m, PartialBayesLayer) for m in model.modules()):
        to_partial_bayes(model, masks, inplace=True)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as err:
        raise ValueError(f"checkpoint does not match the network {type(model).__name__}: {err}") from err
    return model
