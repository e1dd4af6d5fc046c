"""Which modules and parameters of a network a converter may change.

This sits with the layer types because it depends only on them (:data:`SUPPORTED_TYPES`, the
stochastic-layer protocol, the parameter names a partial-Bayes layer makes Bayesian). Both the
converters (:mod:`monai_bayes.networks`) and the selection strategies (:mod:`monai_bayes.selection`)
import it: selection scores the candidate parameters and makes masks, converters take masks.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Iterable, Mapping, Sequence

from torch import nn

from monai_bayes.layers.base import StochasticLayer
from monai_bayes.layers.functional import SUPPORTED_TYPES
from monai_bayes.layers.partial import BAYES_PARAM_NAMES

__all__ = ["ModulePattern", "candidate_modules", "candidate_parameters", "parameter_name"]

logger = logging.getLogger(__name__)

#: a module name (exact, a prefix of sub-module names, or an ``fnmatch`` glob) or a module type
ModulePattern = str | type


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


def parameter_name(module_name: str, pname: str) -> str:
    """Full parameter name as in ``model.named_parameters()``.

    Parameters
    ----------
    module_name : str
        Qualified name of the module (``""`` for the model itself).
    pname : str
        Name of the parameter within the module (``"weight"``, ``"bias"``).

    Returns
    -------
    str
        ``"<module_name>.<pname>"``, or ``pname`` for the root module.
    """
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
    model : nn.Module
        The network to search.
    include : ModulePattern or sequence of ModulePattern, optional
        Patterns (module names -- exact, prefix of sub-modules, or glob -- or module types); if
        given, only matching modules are candidates.
    exclude : ModulePattern or sequence of ModulePattern, optional
        Patterns removed from the candidates.
    supported : tuple of type
        The convertible types (exact type match).
    what : str
        The kind of conversion, for error messages.

    Returns
    -------
    dict of str to nn.Module
        The candidate modules in module order.

    Raises
    ------
    ValueError
        If an ``include`` pattern matches nothing, or names a module whose type cannot be converted.
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

    Parameters
    ----------
    model : nn.Module
        The network to search.
    include, exclude : ModulePattern or sequence of ModulePattern, optional
        Restrict the candidate modules, see :func:`candidate_modules`.

    Returns
    -------
    dict of str to nn.Parameter
        ``{name as in model.named_parameters(): parameter}``.

    Raises
    ------
    ValueError
        If no Conv/ConvTranspose/Linear parameter is left after ``include`` / ``exclude``.
    """
    out: dict[str, nn.Parameter] = {}
    for mname, module in candidate_modules(model, include, exclude, what="partial-Bayesian").items():
        for pname in BAYES_PARAM_NAMES:
            param = getattr(module, pname, None)
            if isinstance(param, nn.Parameter):
                out[parameter_name(mname, pname)] = param
    if not out:
        raise ValueError(
            "the model has no selectable parameters (no Conv/ConvTranspose/Linear module after include/exclude)."
        )
    return out
