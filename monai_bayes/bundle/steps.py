"""Library functions that bundle configs call for method-dependent steps (no logic in the JSON).

* :func:`training_network` -- the network trained by the deterministic step (MC dropout added for
  the ``mc_dropout`` method);
* :func:`run_selection` -- SBN step 2 from a saved deterministic checkpoint, saving the converted
  network and the per-layer report;
* :func:`build_network` -- the trained network of any method, ready for evaluation or inference.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from monai_bayes.bundle.distributed import barrier, is_main_process
from monai_bayes.bundle.layout import RunLayout
from monai_bayes.layers.candidates import candidate_modules
from monai_bayes.layers.horseshoe import horseshoe_median_state_dict
from monai_bayes.layers.shared_prefix import MCCostSplit, mc_cost_split
from monai_bayes.networks.checkpoint import load_checkpoint, load_stochastic_state_dict, save_checkpoint
from monai_bayes.networks.convert import init_means_normal, to_full_bayes, to_mc_dropout
from monai_bayes.networks.ensemble import DeepEnsemble
from monai_bayes.networks.samples import is_samples_file, load_samples, sample_ensemble
from monai_bayes.selection.report import format_selection_report, selection_report
from monai_bayes.selection.scopes import SELECTION_REGIONS, region_modules
from monai_bayes.selection.select import select_bayesian_weights
from monai_bayes.utils.atomic import atomic_path, atomic_write_json
from monai_bayes.workflows.methods import METHOD_REGISTRY, method_spec

__all__ = [
    "PUBLISHED_EXTRAS",
    "PUBLISHED_INFO",
    "PUBLISHED_MEANS",
    "build_network",
    "load_published_network",
    "method_network",
    "posterior_mean_state_dict",
    "publish_model",
    "published_mc_samples",
    "read_published_info",
    "run_selection",
    "selection_summary_path",
    "split_published_state",
    "training_network",
]

logger = logging.getLogger(__name__)


def method_network(
    network_def: nn.Module,
    method: str,
    settings: Mapping[str, Any],
    settings_file: str | os.PathLike,
    device: torch.device | str | None = None,
) -> nn.Module:
    """The architecture of a method with its own network (Prob. U-Net, SSN), built from ``network_def``.

    The settings are written to ``settings_file`` (the run's ``network.json``, rank 0, atomically) so that
    evaluation and inference rebuild the same architecture (:func:`build_network`).

    Parameters
    ----------
    network_def : nn.Module
        The bundle's U-Net (its channels, strides, norm are reused).
    method : str
        A method whose registry entry has a ``network_builder``.
    settings : mapping
        The builder's settings (e.g. ``{"latent_dim": 6}``), JSON-serialisable.
    settings_file : str or os.PathLike
        Where to record them.
    device : torch.device or str, optional
        Where to put the network.

    Returns
    -------
    nn.Module
        The untrained network.

    Raises
    ------
    ValueError
        If ``method`` trains ``network_def`` itself.
    """
    builder = method_spec(method).network_builder
    if builder is None:
        own = [m for m, s in METHOD_REGISTRY.items() if s.network_builder is not None]
        raise ValueError(f"method {method!r} trains network_def itself; method_network applies to {own}.")
    network = builder(network_def, settings)
    if is_main_process():
        atomic_write_json(settings_file, dict(settings))
    return network.to(torch.device(device)) if device is not None else network


def _read_network_settings(checkpoint: Path) -> dict[str, Any]:
    path = checkpoint.parent / "network.json"
    settings = _read_json(path)
    if settings is None:
        raise ValueError(
            f"{path} does not exist: the training step of this method writes it next to {checkpoint.name}."
        )
    return settings


def training_network(network_def: nn.Module, method: str, mc_dropout_p: float = 0.1) -> nn.Module:
    """The network the deterministic training step trains: ``network_def`` (with MC dropout for ``mc_dropout``)."""
    return to_mc_dropout(network_def, mc_dropout_p) if method_spec(method).mc_dropout else network_def


def _require(path: str | os.PathLike, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what} {str(path)!r} does not exist; run the step that writes it first.")
    return path


def run_selection(
    network_def: nn.Module,
    method: str,
    deterministic_checkpoint: str | os.PathLike,
    output_checkpoint: str | os.PathLike,
    report_path: str | os.PathLike,
    *,
    loader: Iterable[Any] | None = None,
    loss_function: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    r_bayes: float = 0.01,
    score_method: str = "saliency",
    scope: str = "global",
    saliency_criterion: str = "abs_of_sum",
    saliency_batch_norm: str = "train",
    num_batches: int | None = None,
    seed: int = 0,
    sigma_init: float | str = "relative",
    prior_sigma: float = 1.0,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    device: torch.device | str = "cpu",
    region: str = "all",
    num_samples: int = 8,
) -> Path:
    """SBN step 2 as a bundle step: load the deterministic model, make its Top ``r_bayes`` weights
    Bayesian (``full_bayes``: all of them), save the converted network and the per-layer report.

    A ``from_scratch`` method (``full_bayes_scratch``) loads nothing: the untrained ``network_def`` gets means
    ``μ ~ N(0, 1)`` (:func:`~monai_bayes.networks.init_means_normal`) before every weight is made Bayesian.
    ``saliency_criterion`` / ``saliency_batch_norm`` are the :class:`~monai_bayes.selection.SelectionSettings`
    fields of the same names. Returns the path of the converted checkpoint.

    ``region`` (the bundles' ``selection_region``, one of :data:`~monai_bayes.selection.SELECTION_REGIONS`)
    restricts the candidate layers: anything but ``"all"`` finds the region's modules
    (:func:`~monai_bayes.selection.region_modules`) from one forward of the first item of the first batch of
    ``loader`` (the real input size, on ``device``) and selects only among them (``r_bayes`` is then the
    fraction of the region's entries); an explicit ``include`` is intersected with it. ``"all"`` draws
    nothing before the selection, so its result is the same as without the argument. After the selection
    the predicted cost of a ``num_samples``-sample MC call with shared prefix
    (:func:`~monai_bayes.layers.mc_cost_split` on the same example item) is logged and written with the
    region to ``selection_summary.json`` next to ``report_path`` (not written without a ``loader``).

    Raises
    ------
    ValueError
        For a method without a selection step, a missing checkpoint, an unknown ``region``, a region
        without ``loader``, or an ``include`` that shares no module with the region.
    """
    spec = method_spec(method)
    if spec.selection is None:
        with_selection = [m for m, s in METHOD_REGISTRY.items() if s.selection is not None]
        raise ValueError(f"the selection step applies to {with_selection}, not {method!r}.")
    if region not in SELECTION_REGIONS:
        raise ValueError(f"selection_region must be one of {list(SELECTION_REGIONS)}, got {region!r}.")
    if region != "all" and loader is None:
        raise ValueError(f"selection_region {region!r} needs a loader (its first item is the example input).")
    if spec.from_scratch:
        network = init_means_normal(network_def, include=include, exclude=exclude)
    else:
        network = load_checkpoint(network_def, _require(deterministic_checkpoint, "deterministic checkpoint"))
    network.to(torch.device(device))
    example = None
    if region != "all":
        assert loader is not None
        example = _example_input(loader, device)
        include = _region_include(network, example, region, include, exclude)
    if spec.selection == "all":
        to_full_bayes(network, include=include, exclude=exclude, sigma_init=sigma_init, prior_sigma=prior_sigma)
        rows = selection_report(network)
    else:
        rows = select_bayesian_weights(
            network,
            r_bayes=r_bayes,
            method=score_method,
            scope=scope,
            saliency_criterion=saliency_criterion,
            saliency_batch_norm=saliency_batch_norm,
            loader=loader,
            loss_function=loss_function,
            num_batches=num_batches,
            seed=seed,
            include=include,
            exclude=exclude,
            sigma_init=sigma_init,
            prior_sigma=prior_sigma,
            device=device,
        )
    if example is None and loader is not None:  # "all": drawn only now, so the selection is as without a region
        example = _example_input(loader, device)
    cost = _predicted_cost(network, example) if example is not None else None
    if is_main_process():  # under torchrun every rank holds the same selection; rank 0 writes it
        table = format_selection_report(rows, cost, num_samples=(num_samples,))
        logger.info("Bayesian weights per layer (selection_region %r):\n%s", region, table)
        atomic_write_json(report_path, [r.as_dict() for r in rows])
        if cost is not None:
            atomic_write_json(
                selection_summary_path(report_path), _selection_summary(region, include, cost, num_samples)
            )
        save_checkpoint(network, output_checkpoint)
    barrier()
    return Path(output_checkpoint)


def selection_summary_path(report_path: str | os.PathLike) -> Path:
    """Where :func:`run_selection` writes its summary: ``selection_summary.json`` next to ``report_path``."""
    return Path(report_path).with_name("selection_summary.json")


def _example_input(loader: Iterable[Any], device: torch.device | str) -> torch.Tensor:
    """The first item of the first batch of ``loader`` (``(1, C_in, *spatial)``, on ``device``)."""
    batch = next(iter(loader), None)
    if batch is None:
        raise ValueError("the selection loader yields no batch; an example input is needed.")
    image = batch["image"] if isinstance(batch, Mapping) else batch[0]
    return torch.as_tensor(image[:1]).to(torch.device(device))


def _predicted_cost(network: nn.Module, example: torch.Tensor) -> MCCostSplit:
    """:func:`~monai_bayes.layers.mc_cost_split` in eval mode without gradients (no norm statistics change)."""
    was_training = network.training
    try:
        network.eval()
        with torch.no_grad():
            return mc_cost_split(network, example)
    finally:
        network.train(was_training)


def _region_include(
    network: nn.Module,
    example: torch.Tensor,
    region: str,
    include: Sequence[str] | None,
    exclude: Sequence[str] | None,
) -> list[str]:
    """The region's modules, intersected with the modules an explicit ``include`` / ``exclude`` leaves."""
    modules = region_modules(network, example, region) or []
    if include is None and exclude is None:
        return modules
    allowed = set(candidate_modules(network, include, exclude))
    kept = [name for name in modules if name in allowed]
    if not kept:
        raise ValueError(
            f"selection_region {region!r} ({modules}) and include={list(include or [])} /"
            f" exclude={list(exclude or [])} share no module."
        )
    return kept


def _selection_summary(
    region: str, include: Sequence[str] | None, cost: MCCostSplit, num_samples: int
) -> dict[str, Any]:
    """``selection_summary.json``: the region, its modules and the predicted MC cost at ``num_samples``."""
    return {
        "region": region,
        "modules": list(include) if include is not None else None,
        "num_samples": num_samples,
        "prefix_macs": cost.prefix_macs,
        "suffix_macs": cost.suffix_macs,
        "predicted_mc_cost": cost.predicted_cost(num_samples),
    }


def build_network(
    network_def: nn.Module,
    method: str,
    checkpoint: str | os.PathLike | None = None,
    *,
    member_checkpoints: Sequence[str | os.PathLike] = (),
    mc_dropout_p: float = 0.1,
    device: torch.device | str | None = None,
) -> nn.Module:
    """The trained network of ``method``, weights loaded (``weights_only=True``), on ``device``.

    * ``deterministic`` / ``sparse_bayes`` / ``full_bayes``: ``checkpoint`` (a partial/full-Bayes
      checkpoint rebuilds its Bayesian structure from the stored indices);
    * ``mc_dropout``: MC dropout is added first (the checkpoint holds no dropout state);
    * ``ensemble``: one copy of ``network_def`` per entry of ``member_checkpoints``;
    * ``prob_unet`` / ``bn3_prob_unet`` / ``ssn``: the method's own architecture from ``network_def`` and the
      ``network.json`` its training step wrote next to ``checkpoint`` (:func:`method_network`).
    * a posterior-samples file (``sgmcmc``, :func:`~monai_bayes.networks.save_samples`): a
      :class:`~monai_bayes.networks.DeepEnsemble` with one member per stored sample.

    A checkpoint of another architecture raises ``ValueError`` naming the file.
    """
    if method_spec(method).deterministic_output == "members":
        if len(member_checkpoints) < 2:
            raise ValueError(f"an ensemble needs >= 2 member checkpoints, got {len(member_checkpoints)}.")
        members = [
            load_checkpoint(copy.deepcopy(network_def), _require(p, "ensemble member checkpoint"))
            for p in member_checkpoints
        ]
        network: nn.Module = DeepEnsemble(members)
    else:
        if checkpoint is None:
            raise ValueError(f"method {method!r} needs a checkpoint.")
        path = _require(checkpoint, "model checkpoint")
        builder = method_spec(method).network_builder
        if builder is not None:  # the method's own architecture, as its training step recorded it
            network = builder(network_def, _read_network_settings(path))
        else:
            network = training_network(network_def, method, mc_dropout_p)
        if is_samples_file(path):
            network = sample_ensemble(network, load_samples(path))
        else:
            network = load_checkpoint(network, path)
    return network.to(torch.device(device)) if device is not None else network


#: file names of a published model under ``<bundle>/models``
PUBLISHED_MEANS = "model.pt"
PUBLISHED_EXTRAS = "model_bayes.pt"
PUBLISHED_INFO = "model.json"


#: state-dict suffixes of the partial/full-Bayes extras: σ parameters, index buffers, the stored prior
PARTIAL_BAYES_EXTRAS: tuple[str, ...] = ("_rho", "_bayes_index", "bayes_prior")


def posterior_mean_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict of the posterior-mean network: a stochastic checkpoint without its Bayesian
    extras (``*_rho``, ``*_bayes_index``, ``bayes_prior``); the means are the ``weight``/``bias`` entries themselves.
    It loads strictly into the deterministic architecture (e.g. for MONAI ``ckpt_export``).
    """
    return {k: v for k, v in state.items() if not k.endswith(PARTIAL_BAYES_EXTRAS)}


def split_published_state(
    state: dict[str, torch.Tensor], base_keys: Iterable[str]
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Split a trained model's state dict into what ``network_def`` loads strictly and the rest.

    Parameters
    ----------
    state : dict
        State dict of the trained (possibly stochastic) network.
    base_keys : iterable of str
        ``network_def.state_dict()`` keys of the plain (deterministic) architecture.

    Returns
    -------
    tuple of dict
        ``(means, extras)``: ``means`` has exactly ``base_keys`` (the posterior-mean network: partial-Bayes
        and BN3 layers keep their means in ``weight``), ``extras`` the stochastic parameters and buffers
        (``*_rho``, ``*_bayes_index``, BN3 ordering and noise), empty for a deterministic network.

    Raises
    ------
    ValueError
        If ``state`` lacks some of ``base_keys`` (a checkpoint of another architecture).
    """
    base = list(base_keys)
    missing = [k for k in base if k not in state]
    if missing:
        raise ValueError(f"the trained model has no entries {missing[:5]} of network_def; another architecture?")
    keys = set(base)
    return {k: state[k] for k in base}, {k: v for k, v in state.items() if k not in keys}


def _checkpoint_state(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}.")
    for key in ("state_dict", "network", "model"):  # CheckpointSaver / Ignite layouts
        if len(state) == 1 and isinstance(state.get(key), dict):
            state = state[key]
    return state


def publish_model(
    bundle_root: str | os.PathLike,
    layout: RunLayout,
    *,
    mc_dropout_p: float = 0.1,
    base_keys: Iterable[str] | None = None,
) -> Path | None:
    """Publish a run's final model in ``<bundle>/models`` (the MONAI model-zoo place).

    Writes ``models/model.pt`` -- the posterior-mean weights, which load strictly into ``network_def``
    (so MONAI's ``ckpt_export network_def --ckpt_file models/model.pt`` and ``verify_net_in_out`` work on
    it) --, ``models/model_bayes.pt`` -- the stochastic extras (``*_rho``, ``*_bayes_index``; O(k) for k
    Bayesian weights), only for a stochastic method -- and ``models/model.json`` (run, method, r_bayes,
    MC-dropout rate), which :func:`load_published_network` reads back. Ensembles (several files) are not
    published; returns ``None`` for them.

    Parameters
    ----------
    bundle_root : str or os.PathLike
        The bundle folder.
    layout : RunLayout
        The run whose ``model_checkpoint`` is published.
    mc_dropout_p : float
        Recorded for ``mc_dropout`` runs (the checkpoint holds no dropout state).
    base_keys : iterable of str, optional
        ``network_def.state_dict()`` keys; default: every entry except the partial-Bayes extras.

    Returns
    -------
    Path or None
        ``models/model.pt``.
    """
    if is_samples_file(layout.model_checkpoint):
        logger.info("posterior samples are not published to models/model.pt; use %s", layout.model_checkpoint)
        return None
    if layout.spec.deterministic_output == "members":
        logger.info("ensembles are not published to models/model.pt (one file per member); use %s", layout.root)
        return None
    if layout.spec.network_builder is not None:
        logger.info(
            "%s has its own architecture (not network_def); not published to models/model.pt, use %s with %s",
            layout.method, layout.model_checkpoint, layout.network_settings,
        )  # fmt: skip
        return None
    models = Path(bundle_root) / "models"
    state = _checkpoint_state(_require(layout.model_checkpoint, "model checkpoint"))
    if base_keys is None:
        means = posterior_mean_state_dict(state)
        extras = {k: v for k, v in state.items() if k not in means}
    else:
        means, extras = split_published_state(state, base_keys)
    if any(k.endswith("hs_layer_loc") for k in state):
        # Tiered-FF keeps μ of ŵ (non-centred units) in weight/bias: publish the posterior-median weights as the
        # means, and the stochastic weight/bias entries with the extras (loading merges extras over means)
        median = horseshoe_median_state_dict(state)
        changed = {k for k in means if not torch.equal(median[k], state[k])}
        means = {k: median[k] for k in means}
        extras = {**extras, **{k: state[k] for k in changed}}
    info: dict[str, Any] = {"run": layout.run_name, "method": layout.method, "source": str(layout.model_checkpoint)}
    if layout.spec.uses_r_bayes:
        info["r_bayes"] = layout.r_bayes
    if layout.spec.mc_dropout:
        info["mc_dropout_p"] = mc_dropout_p
    _publish(models, means, extras, info)
    logger.info("published %s as %s", layout.model_checkpoint, models / PUBLISHED_MEANS)
    return models / PUBLISHED_MEANS


def _publish(
    models: Path, means: dict[str, torch.Tensor], extras: dict[str, torch.Tensor], info: dict[str, Any]
) -> None:
    """Write model.pt, model_bayes.pt (or remove a stale one) and model.json, each atomically."""
    with atomic_path(models / PUBLISHED_MEANS) as tmp:
        torch.save(means, tmp)
    extras_path = models / PUBLISHED_EXTRAS
    if extras:
        with atomic_path(extras_path) as tmp:
            torch.save(extras, tmp)
        info = {**info, "extras": PUBLISHED_EXTRAS}
    elif extras_path.is_file():
        extras_path.unlink()
    stale = models / "model_mean.pt"  # earlier layout: the means now are model.pt itself
    if stale.is_file():
        stale.unlink()
    atomic_write_json(models / PUBLISHED_INFO, info)


def read_published_info(models_dir: str | os.PathLike) -> dict[str, Any]:
    """``models/model.json`` of a published model; without one, a deterministic model (or partial Bayes,
    when ``model_bayes.pt`` is there).

    Parameters
    ----------
    models_dir : str or os.PathLike
        The bundle's ``models`` folder.

    Returns
    -------
    dict
        At least ``"method"``.
    """
    models = Path(models_dir)
    info = _read_json(models / PUBLISHED_INFO)
    if info is None:
        return {"method": "sparse_bayes" if (models / PUBLISHED_EXTRAS).is_file() else "deterministic"}
    if not isinstance(info.get("method"), str):
        raise ValueError(f"{models / PUBLISHED_INFO}: expected a 'method' entry, got {info!r}.")
    return info


def published_mc_samples(models_dir: str | os.PathLike, num_samples: int) -> int:
    """Monte-Carlo samples for the published model: 1 for a deterministic one, else ``num_samples``."""
    from monai_bayes.bundle.inference import num_mc_samples

    return num_mc_samples(read_published_info(models_dir)["method"], num_samples)


def load_published_network(
    network_def: nn.Module,
    models_dir: str | os.PathLike,
    *,
    device: torch.device | str | None = None,
) -> nn.Module:
    """The published model of a bundle, ready for Monte-Carlo inference.

    Parameters
    ----------
    network_def : nn.Module
        The plain architecture (converted in place).
    models_dir : str or os.PathLike
        The bundle's ``models`` folder (:func:`publish_model`'s layout).
    device : torch.device or str, optional
        Where to put the network.

    Returns
    -------
    nn.Module
        ``network_def`` with the means of ``model.pt``, rebuilt to the stochastic structure of
        ``model_bayes.pt`` (partial/full Bayes) or with MC dropout added, per ``model.json``.

    Raises
    ------
    ValueError
        Naming the file: missing weights, or weights of another architecture.
    """
    models = Path(models_dir)
    info = read_published_info(models)
    means_path = _require(models / PUBLISHED_MEANS, "published model")
    state = _checkpoint_state(means_path)
    extras_path = models / PUBLISHED_EXTRAS
    if info.get("extras") or extras_path.is_file():
        state = {**state, **_checkpoint_state(_require(extras_path, "Bayesian extras of the published model"))}
    network = training_network(network_def, info["method"], float(info.get("mc_dropout_p", 0.1)))
    try:
        load_stochastic_state_dict(network, state)
    except ValueError as err:
        raise ValueError(f"{means_path}: {err}") from err
    return network.to(torch.device(device)) if device is not None else network


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)
