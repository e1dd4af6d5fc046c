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
import shutil
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from monai_bayes.bundle.distributed import barrier, is_main_process
from monai_bayes.bundle.layout import RunLayout, check_method
from monai_bayes.networks.checkpoint import load_checkpoint, save_checkpoint
from monai_bayes.networks.convert import to_full_bayes, to_mc_dropout
from monai_bayes.networks.ensemble import DeepEnsemble
from monai_bayes.selection.report import format_selection_report, selection_report
from monai_bayes.selection.select import select_bayesian_weights
from monai_bayes.utils.atomic import atomic_path, atomic_write_json

__all__ = [
    "build_network",
    "posterior_mean_state_dict",
    "publish_model",
    "published_checkpoint",
    "run_selection",
    "training_network",
]

logger = logging.getLogger(__name__)


def training_network(network_def: nn.Module, method: str, mc_dropout_p: float = 0.1) -> nn.Module:
    """The network the deterministic training step trains: ``network_def`` (with MC dropout for ``mc_dropout``)."""
    check_method(method)
    return to_mc_dropout(network_def, mc_dropout_p) if method == "mc_dropout" else network_def


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
    num_batches: int | None = None,
    seed: int = 0,
    sigma_init: float | str = "relative",
    prior_sigma: float = 1.0,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    device: torch.device | str = "cpu",
) -> Path:
    """SBN step 2 as a bundle step: load the deterministic model, make its Top ``r_bayes`` weights
    Bayesian (``full_bayes``: all of them), save the converted network and the per-layer report.

    Returns the path of the converted checkpoint.
    """
    check_method(method)
    if method not in ("sparse_bayes", "full_bayes"):
        raise ValueError(f"the selection step applies to 'sparse_bayes' and 'full_bayes', not {method!r}.")
    network = load_checkpoint(network_def, _require(deterministic_checkpoint, "deterministic checkpoint"))
    network.to(torch.device(device))
    if method == "full_bayes":
        to_full_bayes(network, include=include, exclude=exclude, sigma_init=sigma_init, prior_sigma=prior_sigma)
        rows = selection_report(network)
    else:
        rows = select_bayesian_weights(
            network,
            r_bayes=r_bayes,
            method=score_method,
            scope=scope,
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
    if is_main_process():  # under torchrun every rank holds the same selection; rank 0 writes it
        logger.info("Bayesian weights per layer:\n%s", format_selection_report(rows))
        atomic_write_json(report_path, [r.as_dict() for r in rows])
        save_checkpoint(network, output_checkpoint)
    barrier()
    return Path(output_checkpoint)


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
    * ``ensemble``: one copy of ``network_def`` per entry of ``member_checkpoints``.

    A checkpoint of another architecture raises ``ValueError`` naming the file.
    """
    check_method(method)
    if method == "ensemble":
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
        network = training_network(network_def, method, mc_dropout_p)
        network = load_checkpoint(network, _require(checkpoint, "model checkpoint"))
    return network.to(torch.device(device)) if device is not None else network


def posterior_mean_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict of the posterior-mean network: a stochastic checkpoint without its Bayesian
    extras (``*_rho``, ``*_bayes_index``); the means are the ``weight``/``bias`` entries themselves.
    It loads strictly into the deterministic architecture (e.g. for MONAI ``ckpt_export``)."""
    return {k: v for k, v in state.items() if not k.endswith(("_rho", "_bayes_index"))}


def publish_model(bundle_root: str | os.PathLike, layout: RunLayout) -> Path | None:
    """Copy a run's final model to ``<bundle>/models/model.pt`` (the MONAI model-zoo place, used by
    ``inference.json`` and the PACS pipeline), write the posterior-mean weights to
    ``models/model_mean.pt`` (loads into ``network_def``, for ``ckpt_export``), and record in
    ``models/model.json`` which run it is. Ensembles (several files) are not published; returns
    ``None`` for them."""
    if layout.method == "ensemble":
        logger.info("ensembles are not published to models/model.pt (one file per member); use %s", layout.root)
        return None
    models = Path(bundle_root) / "models"
    target = models / "model.pt"
    source = _require(layout.model_checkpoint, "model checkpoint")
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
    with atomic_path(models / "model_mean.pt") as tmp:
        torch.save(posterior_mean_state_dict(torch.load(source, map_location="cpu", weights_only=True)), tmp)
    info = {"run": layout.run_name, "method": layout.method, "source": str(layout.model_checkpoint)}
    if layout.method == "sparse_bayes":
        info["r_bayes"] = layout.r_bayes
    atomic_write_json(models / "model.json", info)
    logger.info("published %s as %s", layout.model_checkpoint, target)
    return target


def published_checkpoint(bundle_root: str | os.PathLike, layout: RunLayout) -> Path:
    """``models/model.pt`` if it holds this run's model (per ``models/model.json``), else the run's own checkpoint."""
    models = Path(bundle_root) / "models"
    info = _read_json(models / "model.json")
    if info is not None and info.get("run") == layout.run_name and (models / "model.pt").is_file():
        return models / "model.pt"
    return layout.model_checkpoint


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)
