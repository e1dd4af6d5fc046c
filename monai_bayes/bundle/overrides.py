"""Settings of a pipeline run: every id of every step config is an override, validated before the first step.

MONAI's ``python -m monai.bundle run --config_file configs/pipeline.json --weight_decay 0.5`` adds
``weight_decay`` to the *pipeline* config. :func:`config_overrides` hands every such entry (everything the
pipeline config file does not define itself) to the runner, so no config keeps a list of forwarded keys --
the idea of MONAI's ``PythonicWorkflow`` / ``run_workflow(**kwargs)``, where every keyword reaches the one
workflow object. :func:`validate_overrides` then checks each override against the step configs it will
reach, before any step starts:

* the id must exist in ``common`` or one of the step configs (else the nearest valid ids are named);
* the value must have the type of the config's default (an int for an int, a number for a float, ...;
  ``$`` expressions and ``@`` references are left to MONAI);
* ranges and files from :data:`SETTING_RULES` (``num_samples >= 1``, ``0 <= mc_dropout_p < 1``, an existing
  ``dataset_dir``, a known ``method``, ...).
"""

from __future__ import annotations

import difflib
import inspect
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from monai.bundle import ConfigParser

from monai_bayes.bundle.datasets import DATASET_KEYWORDS
from monai_bayes.handlers.kl_annealing import KLSchedule
from monai_bayes.handlers.lr_schedule import LRSchedule
from monai_bayes.layers.partial import SIGMA_INIT_NAMES
from monai_bayes.losses.elbo import KLReduction
from monai_bayes.selection.saliency import SaliencyBatchNorm, SaliencyCriterion
from monai_bayes.selection.scopes import SELECTION_REGIONS
from monai_bayes.utils.files import read_json_object
from monai_bayes.workflows.methods import check_method

__all__ = ["SETTING_RULES", "config_overrides", "setting_defaults", "validate_overrides"]

#: ids a config may add that are never settings of a step (MONAI's run/initialize/finalize, metadata)
_WORKFLOW_IDS = frozenset({"_meta_", "run", "initialize", "finalize", "imports"})


def _positive_int(value: Any) -> str | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
    return None if ok else "a positive int (>= 1)"


def _non_negative_int(value: Any) -> str | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    return None if ok else "an int >= 0"


def _optional_positive_int(value: Any) -> str | None:
    return None if value is None or _positive_int(value) is None else "null or a positive int (>= 1)"


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _positive_number(value: Any) -> str | None:
    return None if _number(value) and value > 0 else "a number > 0"


def _optional_positive_number(value: Any) -> str | None:
    return None if value is None or (_number(value) and value > 0) else "null or a number > 0"


def _non_negative_number(value: Any) -> str | None:
    return None if _number(value) and value >= 0 else "a number >= 0"


def _probability(value: Any) -> str | None:
    return None if _number(value) and 0 <= value < 1 else "a number in [0, 1)"


def _fraction(value: Any) -> str | None:
    return None if _number(value) and 0 < value <= 1 else "a number in (0, 1]"


def _list_of(rule: Callable[[Any], str | None], optional: bool = False) -> Callable[[Any], str | None]:
    """A rule for a non-empty list whose every item passes ``rule`` (``optional``: or null)."""

    def check(value: Any) -> str | None:
        if optional and value is None:
            return None
        ok = isinstance(value, list | tuple) and len(value) > 0 and all(rule(v) is None for v in value)
        item = rule(object())  # what one item must be
        return None if ok else f"{'null or ' if optional else ''}a non-empty list of items that are each {item}"

    return check


def _one_of(*choices: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value in choices else f"one of {list(choices)}"

    return check


def _sigma_init(value: Any) -> str | None:
    ok = value in SIGMA_INIT_NAMES or (_number(value) and value > 0)
    return None if ok else f"one of {list(SIGMA_INIT_NAMES)} or a number > 0"


def _relative_or_positive(value: Any) -> str | None:
    """An initial posterior σ of BMR's flat model: ``"relative"`` or a number > 0."""
    return None if value == "relative" or (_number(value) and value > 0) else "'relative' or a number > 0"


def _kl_reduction(value: Any) -> str | None:
    ok = value in tuple(KLReduction) or (_number(value) and value > 0)
    return None if ok else f"one of {[r.value for r in KLReduction]} or a number > 0"


def _method(value: Any) -> str | None:
    try:
        check_method(value)
    except ValueError as err:
        return str(err)
    return None


def _open_unit(value: Any) -> str | None:
    return None if _number(value) and 0 < value < 1 else "a number in (0, 1)"


def _boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "true or false"


def _existing_dir_or_empty(value: Any) -> str | None:
    if value is None or (isinstance(value, str) and value.strip() in ("", "None", "null")):
        return None
    if not isinstance(value, str | os.PathLike):
        return "a folder path (or empty)"
    return None if Path(value).exists() else "an existing file or folder (or empty); it does not exist"


def _dataset_source(value: Any) -> str | None:
    """``dataset_dir``: a folder, empty, or one of the built-in sources (``synthetic``, ``real-annotations``)."""
    if isinstance(value, str) and value.strip() in DATASET_KEYWORDS:
        return None
    problem = _existing_dir_or_empty(value)
    return None if problem is None else f"{problem} (or one of {', '.join(DATASET_KEYWORDS)})"


#: range / choice / file checks of named settings; each returns ``None`` or what was expected
SETTING_RULES: dict[str, Callable[[Any], str | None]] = {
    "method": _method,
    "r_bayes": _fraction,
    "ensemble_size": _positive_int,
    "member_index": _non_negative_int,
    "mc_dropout_p": _probability,
    "seed": _non_negative_int,
    "fold": _non_negative_int,
    "num_cases": _positive_int,
    "patch_size": _positive_int,
    "num_raters": _positive_int,
    "batch_size": _positive_int,
    "num_workers": _non_negative_int,
    "deterministic_epochs": _positive_int,
    "bayes_epochs": _positive_int,
    "optimizer_name": _one_of("sgd", "adam", "adamw"),
    "lr": _positive_number,
    "rho_lr": _optional_positive_number,
    "weight_decay": _non_negative_number,
    "momentum": _non_negative_number,
    "num_samples": _positive_int,
    "eval_samples": _positive_int,
    "eval_chunk_size": _optional_positive_int,
    "val_samples": _positive_int,
    "val_interval": _positive_int,
    "beta_start": _non_negative_number,
    "saliency_criterion": _one_of(*(c.value for c in SaliencyCriterion)),
    "saliency_batch_norm": _one_of(*(m.value for m in SaliencyBatchNorm)),
    "sigma_init": _sigma_init,
    "prior_sigma": _positive_number,
    "kl_reduction": _kl_reduction,
    "kl_schedule": _one_of(*(k.value for k in KLSchedule)),
    "beta_end": _non_negative_number,
    "dataset_dir": _dataset_source,
    "input_dir": _existing_dir_or_empty,
    "nested_groups": _positive_int,
    "nested_always_kept": _non_negative_int,
    "nested_num_samples": _positive_int,
    "nested_prior_keep": _fraction,
    "temperature_start": _positive_number,
    "temperature_min": _positive_number,
    "temperature_decay": _fraction,
    # the sweep's own settings (sweep.json; checked by run_sweep before anything runs)
    "r_bayes_values": _list_of(_fraction),
    "sample_counts": _list_of(_positive_int, optional=True),
    "folds": _list_of(_non_negative_int, optional=True),
    "nested_straight_through": _boolean,
    "latent_dim": _positive_int,
    "latent_beta": _non_negative_number,
    "baseline_epochs": _positive_int,
    "latent_always_kept": _positive_int,
    "latent_prior_keep": _open_unit,
    "latent_temperature": _positive_number,
    "latent_straight_through": _boolean,
    "ssn_rank": _positive_int,
    "ssn_mc_samples": _positive_int,
    "bmr_gamma0": _positive_number,
    "bmr_sigma_init": _relative_or_positive,
    "bmr_rounds": _positive_int,
    "bmr_interval": _positive_int,
    "bmr_alpha0": _positive_number,
    "bmr_beta0": _positive_number,
    "bmr_k_max": _positive_int,
    "hs_tau0": _positive_number,
    "hs_sigma_init": _positive_number,
    "sgmcmc_sampler": _one_of("sghmc", "sgld"),
    "sgmcmc_lr": _positive_number,
    "sgmcmc_momentum": _probability,
    "sgmcmc_temperature": _non_negative_number,
    "sgmcmc_prior_precision": _non_negative_number,
    "sgmcmc_cycles": _positive_int,
    "sgmcmc_epochs_per_cycle": _positive_int,
    "sgmcmc_exploration": _probability,
    "sgmcmc_samples_per_cycle": _positive_int,
    "sgmcmc_thinning": _positive_int,
    "sgmcmc_burn_in_epochs": _non_negative_int,
    "sgmcmc_max_samples": _positive_int,
    "sgmcmc_voxel_likelihood": _boolean,
    "nested_rescale": _boolean,
    "selection_region": _one_of(*SELECTION_REGIONS),
    "lr_schedule": _one_of(*(s.value for s in LRSchedule)),
}


def _calling_parser() -> ConfigParser:
    """The :class:`~monai.bundle.ConfigParser` whose expression is being evaluated up the call stack."""
    frame = inspect.currentframe()
    try:
        while frame is not None:
            candidate = frame.f_locals.get("self")
            if isinstance(candidate, ConfigParser):
                return candidate
            frame = frame.f_back
    finally:
        del frame
    raise RuntimeError("config_overrides() must be called from a bundle config expression ('$...').")


def config_overrides(own_config: str | os.PathLike, parser: ConfigParser | None = None) -> dict[str, Any]:
    """The settings given to a pipeline config on top of its own file (e.g. ``--weight_decay 0.5``).

    Parameters
    ----------
    own_config : str or os.PathLike
        The pipeline / sweep config file; the ids it defines itself are not forwarded.
    parser : ConfigParser, optional
        The parser holding the run's config; default: the parser evaluating the calling expression
        (a config entry ``"$monai_bayes.bundle.config_overrides(...)"``).

    Returns
    -------
    dict
        ``{id: raw value}`` of every top-level entry that the file does not define (values unevaluated:
        a ``$`` expression is evaluated by the step that receives it).

    Raises
    ------
    ValueError
        If ``own_config`` is missing or not a JSON object.
    """
    path = Path(own_config)
    if not path.is_file():
        raise ValueError(f"pipeline config {str(path)!r} not found; pass --bundle_root <bundle folder>.")
    own = ConfigParser.load_config_file(str(path))
    if not isinstance(own, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(own).__name__}.")
    config = (parser if parser is not None else _calling_parser()).get()
    return {k: v for k, v in config.items() if k not in own and k not in _WORKFLOW_IDS}


def setting_defaults(config_files: Iterable[str | os.PathLike]) -> dict[str, Any]:
    """Every top-level id of the given config files with its (raw) default, later files winning.

    Parameters
    ----------
    config_files : iterable of str or os.PathLike
        JSON configs, e.g. ``common.json`` and every step config of a pipeline.

    Returns
    -------
    dict
        ``{id: raw default}`` without MONAI's workflow ids (``run``, ``initialize``, ...).
    """
    defaults: dict[str, Any] = {}
    for f in config_files:
        defaults.update({k: v for k, v in read_json_object(Path(f)).items() if k not in _WORKFLOW_IDS})
    return defaults


def _is_expression(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(("$", "@", "%"))


def _type_error(value: Any, default: Any) -> str | None:
    """What type was expected, if ``value`` does not have the type of ``default``."""
    if default is None or _is_expression(default) or _is_expression(value):
        return None
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "true or false"
    if isinstance(default, int):
        return None if isinstance(value, int) and not isinstance(value, bool) else "an int"
    if isinstance(default, float):
        return None if _number(value) else "a number"
    if isinstance(default, str):
        return None if isinstance(value, str) else "a string"
    if isinstance(default, list):
        return None if isinstance(value, list | tuple) else "a list"
    if isinstance(default, dict):
        return None if isinstance(value, dict) else "a JSON object"
    return None


def _exists(config: Mapping[str, Any], setting_id: str) -> bool:
    node: Any = config
    for part in setting_id.replace("::", "#").split("#"):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False
    return True


def _nested_default(config: Mapping[str, Any], setting_id: str) -> Any:
    node: Any = config
    for part in setting_id.replace("::", "#").split("#"):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def validate_overrides(
    overrides: Mapping[str, Any], config_files: Iterable[str | os.PathLike], *, where: str = "pipeline"
) -> None:
    """Check every override against the configs it will reach, before anything runs.

    Parameters
    ----------
    overrides : Mapping
        ``{id: value}``; ids may be nested (``network_def#channels``).
    config_files : iterable of str or os.PathLike
        ``common.json`` and the step configs of the run.
    where : str
        Named in the error (``"pipeline"``, ``"sweep"``).

    Raises
    ------
    ValueError
        Listing every unknown id (with the nearest valid ids), every value of the wrong type (with the
        default's type) and every value out of range or naming a missing file.
    """
    files = [Path(f) for f in config_files]
    merged: dict[str, Any] = {}
    for f in files:
        merged.update(read_json_object(f))
    defaults = setting_defaults(files)
    problems: list[str] = []
    for key, value in overrides.items():
        if key in ("bundle_root",):
            continue
        if not _exists(merged, key):
            near = difflib.get_close_matches(key.split("#")[0], sorted(defaults), n=3, cutoff=0.6)
            hint = f"; nearest valid: {', '.join(repr(n) for n in near)}" if near else ""
            problems.append(f"unknown setting {key!r} (not an id of {', '.join(f.name for f in files)}){hint}")
            continue
        if key in SETTING_RULES and not _is_expression(value):
            # a rule checks the type as well, and may allow more than the default's type ("relative" or a number)
            expected = SETTING_RULES[key](value)
        else:
            expected = _type_error(value, _nested_default(merged, key))
        if expected is not None:
            problems.append(f"--{key} must be {expected}, got {value!r}")
    if problems:
        raise ValueError(f"{where}: invalid settings, nothing was run:\n  " + "\n  ".join(problems))
