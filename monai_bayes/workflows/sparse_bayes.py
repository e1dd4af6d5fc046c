"""The sparse-Bayesian training recipe (seed 000, SBN Fig. 2) and its baselines, on MONAI trainers.

:func:`train_sparse_bayes` runs

1. **deterministic training** (NLL) → ``deterministic.pt``;
2. **selection**: gradient saliency ``|Σ_b ∇θ L_b|`` over one epoch (``saliency_criterion``), Top ``r_bayes``
   made Bayesian with μ from the trained weights → ``selection.json`` (per-layer report);
3. **partial-Bayes training**: ELBO with ``num_samples`` MC samples per step and annealed β →
   ``sparse_bayes.pt``.

Each step is also a public function (:func:`train_deterministic`,
:func:`~monai_bayes.selection.select_bayesian_weights`,
:func:`train_bayesian`). With ``output_dir`` set, every finished step leaves its checkpoint and a
rerun resumes after the last finished step (``resume=True``). Baselines go through the same
entry point (``method=``): ``"deterministic"``, ``"mc_dropout"``, ``"full_bayes"`` (r_bayes = 1:
every conv/linear weight, warm-started from step 1), ``"full_bayes_scratch"`` (the same, no step 1, means
drawn ``N(0, 1)``), ``"ensemble"`` (``ensemble_size`` independently initialised
deterministic members). Every training step records parameters, FLOPs per step and wall time
(:class:`~monai_bayes.handlers.TrainingCostHandler`).

All steps are MONAI :class:`~monai.engines.SupervisedTrainer` runs with Ignite handlers, the same
components the bundles configure.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from monai.engines import SupervisedTrainer
from monai.inferers import SimpleInferer
from monai.utils import set_determinism
from torch import nn

from monai_bayes.handlers.cost import TrainingCostHandler
from monai_bayes.handlers.kl_annealing import KLAnnealingHandler
from monai_bayes.handlers.progress import ProgressBarHandler, first_loss
from monai_bayes.inferers.monte_carlo import MonteCarloInferer
from monai_bayes.losses.elbo import ELBOLoss, make_nll
from monai_bayes.networks.checkpoint import load_checkpoint, save_checkpoint
from monai_bayes.networks.convert import init_means_normal, to_full_bayes, to_mc_dropout
from monai_bayes.networks.ensemble import DeepEnsemble
from monai_bayes.selection.report import LayerSelection
from monai_bayes.selection.saliency import SaliencyBatchNorm, SaliencyCriterion, ScoreMethod
from monai_bayes.selection.select import select_bayesian_weights
from monai_bayes.selection.topk import SelectionScope, check_r_bayes
from monai_bayes.utils.atomic import atomic_write_json
from monai_bayes.workflows.methods import METHODS, method_spec

__all__ = [
    "METHODS",
    "OptimizerSettings",
    "RecipeResult",
    "train_bayesian",
    "train_deterministic",
    "train_sparse_bayes",
]

logger = logging.getLogger(__name__)

Loss = nn.Module | Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class OptimizerSettings:
    """Optimizer of every training step (seed 000: SGD, lr 0.01, weight decay 1e-5; momentum 0.9 as the authors'
    ``utils.py`` ``get_optimizer`` builds it; ``momentum`` is used by SGD only).
    """

    name: str = "sgd"
    lr: float = 0.01
    weight_decay: float = 1e-5
    momentum: float = 0.9
    rho_lr: float | None = None  # learning rate of the ρ parameters (default: lr)

    def build(self, network: nn.Module) -> torch.optim.Optimizer:
        """The optimizer over ``network``'s parameters; ρ parameters get their own group (no weight decay)."""
        rho = [p for n, p in network.named_parameters() if n.endswith("_rho")]
        rho_ids = {id(p) for p in rho}
        rest = [p for p in network.parameters() if id(p) not in rho_ids]
        groups: list[dict[str, Any]] = [{"params": rest}]
        if rho:
            groups.append({"params": rho, "weight_decay": 0.0, "lr": self.rho_lr or self.lr})
        if self.name == "sgd":
            return torch.optim.SGD(groups, lr=self.lr, weight_decay=self.weight_decay, momentum=self.momentum)
        if self.name == "adam":
            return torch.optim.Adam(groups, lr=self.lr, weight_decay=self.weight_decay)
        if self.name == "adamw":
            return torch.optim.AdamW(groups, lr=self.lr, weight_decay=self.weight_decay)
        raise ValueError(f"optimizer name must be 'sgd', 'adam' or 'adamw', got {self.name!r}.")


@dataclass
class RecipeResult:
    """What :func:`train_sparse_bayes` produced."""

    method: str
    network: nn.Module
    costs: dict[str, dict[str, Any]] = field(default_factory=dict)  # step name -> TrainingCostHandler summary
    selection: list[LayerSelection] | None = None
    checkpoints: dict[str, Path] = field(default_factory=dict)


# ------------------------------------------------------------------------------------ trainers
def _device(device: torch.device | str | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _run_trainer(
    network: nn.Module,
    loader: Iterable[Any],
    loss_function: Loss,
    max_epochs: int,
    optimizer: OptimizerSettings,
    device: torch.device,
    inferer: Any,
    handlers: Sequence[Any] = (),
    progress: bool = True,
    prepare_batch: Callable[..., Any] | None = None,
) -> dict[str, Any]:
    """Train ``network`` in place with a MONAI SupervisedTrainer; return the cost summary."""
    network.to(device)
    cost = TrainingCostHandler()
    kwargs: dict[str, Any] = {} if prepare_batch is None else {"prepare_batch": prepare_batch}
    trainer = SupervisedTrainer(
        device=device,
        max_epochs=max_epochs,
        train_data_loader=loader,
        network=network,
        optimizer=optimizer.build(network),
        loss_function=loss_function,
        inferer=inferer,
        train_handlers=[cost, *handlers],
        **kwargs,
    )
    if progress:
        ProgressBarHandler(output_transform=first_loss).attach(trainer)
    trainer.run()
    return cost.summary


def _dataset_size(loader: Iterable[Any]) -> int | None:
    dataset = getattr(loader, "dataset", None)
    try:
        return len(dataset) if dataset is not None else None
    except TypeError:
        return None


def train_deterministic(
    network: nn.Module,
    loader: Iterable[Any],
    *,
    loss_function: Loss | str = "ce",
    max_epochs: int = 50,
    optimizer: OptimizerSettings | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
    prepare_batch: Callable[..., Any] | None = None,
) -> dict[str, Any]:
    """SBN step 1 (and the MC-dropout / ensemble-member training): minimise the NLL. Returns the cost summary."""
    nll = make_nll(loss_function) if isinstance(loss_function, str) else loss_function
    return _run_trainer(
        network,
        loader,
        nll,
        max_epochs,
        optimizer or OptimizerSettings(),
        _device(device),
        SimpleInferer(),
        progress=progress,
        prepare_batch=prepare_batch,
    )


def train_bayesian(
    network: nn.Module,
    loader: Iterable[Any],
    *,
    loss_function: Loss | str = "ce",
    max_epochs: int = 50,
    num_samples: int = 5,
    kl_schedule: str = "linear",
    beta_start: float = 0.2,
    beta_end: float = 0.01,
    kl_reduction: str | float = "dataset",
    dataset_size: int | None = None,
    optimizer: OptimizerSettings | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
    prepare_batch: Callable[..., Any] | None = None,
    handlers: Sequence[Any] = (),
) -> dict[str, Any]:
    """SBN step 3: train a partial/full-Bayes network with the ELBO (``num_samples`` samples per step,
    β annealed by ``kl_schedule``); ``handlers`` are attached to the trainer as well (e.g.
    :class:`~monai_bayes.handlers.BMRPruningHandler`). Returns the cost summary.
    """
    nll = make_nll(loss_function) if isinstance(loss_function, str) else loss_function
    if kl_reduction == "dataset" and dataset_size is None:
        dataset_size = _dataset_size(loader)
    elbo = ELBOLoss(network, nll, beta=beta_start, kl_reduction=kl_reduction, dataset_size=dataset_size)
    annealing = KLAnnealingHandler(elbo, schedule=kl_schedule, start=beta_start, end=beta_end)
    inferer = MonteCarloInferer(num_samples=num_samples, activation=None)
    return _run_trainer(
        network,
        loader,
        elbo,
        max_epochs,
        optimizer or OptimizerSettings(),
        _device(device),
        inferer,
        handlers=[annealing, *handlers],
        progress=progress,
        prepare_batch=prepare_batch,
    )


# ------------------------------------------------------------------------------------ recipe
def _fresh_copy(network: nn.Module, seed: int) -> nn.Module:
    """A deep copy of ``network`` with every sub-module re-initialised from ``seed`` (ensemble member)."""
    member = copy.deepcopy(network)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in member.modules():
            if hasattr(module, "reset_parameters"):
                cast("Callable[[], None]", module.reset_parameters)()
    return member


def _cached(output_dir: Path | None, name: str, resume: bool, network: nn.Module, result: RecipeResult) -> bool:
    """Load ``name``'s checkpoint into ``network`` if resuming and it exists; record its path."""
    if output_dir is None:
        return False
    path = output_dir / f"{name}.pt"
    result.checkpoints[name] = path
    if resume and path.is_file():
        load_checkpoint(network, path)
        logger.info("resuming: loaded finished step %r from %s", name, path)
        return True
    return False


def train_sparse_bayes(
    network: nn.Module,
    train_loader: Iterable[Any],
    *,
    method: str = "sparse_bayes",
    output_dir: str | os.PathLike | None = None,
    resume: bool = True,
    loss_function: Loss | str = "ce",
    deterministic_epochs: int = 50,
    bayes_epochs: int = 50,
    r_bayes: float = 0.01,
    selection_method: ScoreMethod | str = "saliency",
    scope: SelectionScope | str = "global",
    saliency_batches: int | None = None,
    saliency_criterion: SaliencyCriterion | str = "abs_of_sum",
    saliency_batch_norm: SaliencyBatchNorm | str = "train",
    sigma_init: float | str = "relative",
    prior_sigma: float = 1.0,
    num_samples: int = 5,
    kl_schedule: str = "linear",
    beta_start: float = 0.2,
    beta_end: float = 0.01,
    kl_reduction: str | float = "dataset",
    dataset_size: int | None = None,
    optimizer: OptimizerSettings | None = None,
    mc_dropout_p: float = 0.1,
    ensemble_size: int = 5,
    device: torch.device | str | None = None,
    seed: int = 0,
    progress: bool = True,
    prepare_batch: Callable[..., Any] | None = None,
) -> RecipeResult:
    """Train ``network`` (an untrained deterministic MONAI network) by ``method``; see module docstring.

    Parameters
    ----------
    method
        a key of :data:`~monai_bayes.workflows.methods.METHOD_REGISTRY` (``"sparse_bayes"`` (default),
        ``"deterministic"``, ``"mc_dropout"``, ``"full_bayes"``, ``"ensemble"``); its entry says which steps run.
    output_dir
        where step checkpoints go (and are resumed from); ``None`` keeps everything in memory.
    deterministic_epochs
        epochs of step 1 (also of MC-dropout and each ensemble member).
    bayes_epochs
        epochs of step 3 (partial/full Bayes).
    r_bayes, selection_method, scope, saliency_batches, saliency_criterion, saliency_batch_norm
        step 2 (``saliency_batches=None``: one epoch; see :class:`~monai_bayes.selection.SelectionSettings`).
    num_samples, kl_schedule, beta_start, beta_end, kl_reduction, dataset_size
        step 3 ELBO
        (see :class:`~monai_bayes.losses.ELBOLoss`, :class:`~monai_bayes.handlers.KLAnnealingHandler`).

    Returns
    -------
    :class:`RecipeResult` with the trained network (converted in place), costs per step and the
    selection report.
    """
    spec = method_spec(method)
    if spec.bayes_training and spec.train_config != "train":
        raise ValueError(
            f"method {method!r} has its own training step ({spec.train_config!r}); train_sparse_bayes runs the "
            "ELBO recipe only -- run it through the bundle (--method) or its library functions."
        )
    if spec.uses_r_bayes:
        check_r_bayes(r_bayes)
    if ensemble_size < 2 and spec.deterministic_output == "members":
        raise ValueError(f"ensemble_size must be >= 2, got {ensemble_size}.")
    set_determinism(seed=seed)
    out = Path(output_dir) if output_dir is not None else None
    result = RecipeResult(method=method, network=network)
    common: dict[str, Any] = dict(
        loss_function=loss_function, device=device, progress=progress, prepare_batch=prepare_batch
    )
    det_kwargs: dict[str, Any] = dict(common, max_epochs=deterministic_epochs, optimizer=optimizer)

    def run_deterministic(net: nn.Module, name: str) -> None:
        if not _cached(out, name, resume, net, result):
            result.costs[name] = train_deterministic(net, train_loader, **det_kwargs)
            _save(out, name, net, result)

    if spec.deterministic_output == "members":
        members = [network if m == 0 else _fresh_copy(network, seed + m) for m in range(ensemble_size)]
        for m, member in enumerate(members):
            run_deterministic(member, f"ensemble_member_{m}")
        result.network = DeepEnsemble(members)
        return result
    if spec.mc_dropout:
        to_mc_dropout(network, mc_dropout_p)
    if spec.from_scratch:
        init_means_normal(network)
    else:
        run_deterministic(network, "deterministic" if spec.deterministic_output == "shared" else method)
    if spec.selection is None:
        return result

    bayes_name = method
    if out is not None and resume and (out / f"{bayes_name}.pt").is_file():
        _cached(out, bayes_name, resume, network, result)
        return result
    if spec.selection == "all":
        to_full_bayes(network, sigma_init=sigma_init, prior_sigma=prior_sigma)
    else:
        network.to(_device(device))
        result.selection = select_bayesian_weights(
            network,
            r_bayes=r_bayes,
            method=selection_method,
            scope=scope,
            loader=train_loader,
            loss_function=make_nll(loss_function) if isinstance(loss_function, str) else loss_function,
            num_batches=saliency_batches,
            saliency_criterion=saliency_criterion,
            saliency_batch_norm=saliency_batch_norm,
            seed=seed,
            sigma_init=sigma_init,
            prior_sigma=prior_sigma,
            device=device,
            prepare_batch=prepare_batch,
            progress=progress,
        )
        if out is not None:
            atomic_write_json(out / "selection.json", [r.as_dict() for r in result.selection])
    result.costs[bayes_name] = train_bayesian(
        network,
        train_loader,
        **common,
        max_epochs=bayes_epochs,
        num_samples=num_samples,
        kl_schedule=kl_schedule,
        beta_start=beta_start,
        beta_end=beta_end,
        kl_reduction=kl_reduction,
        dataset_size=dataset_size,
        optimizer=optimizer,
    )
    _save(out, bayes_name, network, result)
    return result


def _save(output_dir: Path | None, name: str, network: nn.Module, result: RecipeResult) -> None:
    """Save a finished step's checkpoint and the costs measured so far (no-op without ``output_dir``)."""
    if output_dir is not None:
        result.checkpoints[name] = save_checkpoint(network, output_dir / f"{name}.pt")
        atomic_write_json(output_dir / "costs.json", result.costs)
