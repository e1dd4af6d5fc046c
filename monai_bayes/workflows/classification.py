"""Multi-label classification (ChestMNIST; seed 000's classification setting, seed 003's models).

The segmentation bundle runner (``bundle/runner.py``) drives per-step MONAI configs built around dictionary
transforms, sliding-window MC inference and multi-rater evaluators; a 14-label image classifier needs none of
that, so classification gets this small workflow instead of a second set of step configs. It reuses the same
recipe: :func:`~monai_bayes.workflows.train_sparse_bayes` (the method registry decides which steps run, MONAI
``SupervisedTrainer`` inside, checkpoints and resume) with a sigmoid BCE loss and the seed's static β = 0.01
for classification, and :class:`~monai_bayes.inferers.MonteCarloInferer` for the posterior samples.

The two seed-002 methods with their own step 3 (``bmr``, ``tiered_ff``) start from the same shared
``deterministic.pt`` and then run the library recipes the LIDC bundle's ``train_bmr.json`` /
``train_tiered_ff.json`` run: :func:`~monai_bayes.workflows.train_bmr` (flat model, ELBO with β = 1, then
``bmr_rounds`` × {BMR pass, ``bmr_interval`` epochs}) and :func:`~monai_bayes.networks.to_horseshoe_bayes` +
:func:`~monai_bayes.workflows.train_bayesian` (β = 1, as many epochs as the BMR run). Both divide the KL by
the number of training images (every image is one likelihood term of the BCE, a mean over its labels).

Network: MONAI's 2D :class:`~monai.networks.nets.ResNet` in the ResNet18 layout (basic blocks, ``[2, 2, 2, 2]``)
with a 3×3 stride-1 stem for 28² inputs; ``width`` sets the first stage's channels (64 = ResNet18).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.networks.nets import ResNet
from torch import nn
from torch.utils.data import DataLoader, Dataset

from monai_bayes.data.chestmnist import load_chestmnist
from monai_bayes.inferers.monte_carlo import MonteCarloInferer
from monai_bayes.networks.checkpoint import load_checkpoint, save_checkpoint
from monai_bayes.networks.convert import to_deterministic, to_horseshoe_bayes
from monai_bayes.reduction import DEFAULT_GAMMA0
from monai_bayes.utils import atomic_write_json
from monai_bayes.workflows.bmr import train_bmr
from monai_bayes.workflows.methods import MethodSpec, method_spec
from monai_bayes.workflows.sparse_bayes import OptimizerSettings, RecipeResult, train_bayesian, train_sparse_bayes

__all__ = [
    "ClassificationData",
    "ClassificationTraining",
    "build_resnet18",
    "load_classification_data",
    "num_eval_samples",
    "posterior_mean_network",
    "predict_samples",
    "train_classifier",
]


@dataclass
class ClassificationData:
    """Images ``(N, 1, H, W)`` float32 in ``[0, 1]`` and labels ``(N, C)`` float32 per split."""

    images: dict[str, torch.Tensor]
    labels: dict[str, torch.Tensor]


def load_classification_data(path: str | os.PathLike[str], max_items: int | None = None) -> ClassificationData:
    """Read a MedMNIST ``.npz`` (any of the sizes 28 / 64 / 128 / 224) into tensors.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.npz`` (validated by :func:`~monai_bayes.data.load_chestmnist`).
    max_items : int, optional
        Keep only the first ``max_items`` images of each split (a quick run on a real file).

    Returns
    -------
    ClassificationData
        ``train`` / ``val`` / ``test`` images and labels.
    """
    raw = load_chestmnist(path)
    images, labels = {}, {}
    for split, d in raw.items():
        im, lab = d["images"][:max_items], d["labels"][:max_items]
        images[split] = torch.from_numpy(im.astype(np.float32) / 255.0)[:, None]
        labels[split] = torch.from_numpy(lab.astype(np.float32))
    return ClassificationData(images, labels)


class _DictDataset(Dataset):
    """``{"image": (1, H, W), "label": (C,)}`` items, the keys MONAI's default ``prepare_batch`` reads."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[i], "label": self.labels[i]}


def build_resnet18(num_classes: int = 14, in_channels: int = 1, width: int = 64) -> nn.Module:
    """MONAI 2D ResNet18 layout with a 3×3 stride-1 stem (for 28² inputs).

    Parameters
    ----------
    num_classes : int
        Output logits (14 ChestMNIST findings).
    in_channels : int
        Image channels.
    width : int
        Channels of the first stage (64 = ResNet18; the stages have ``width · (1, 2, 4, 8)``).

    Returns
    -------
    nn.Module
        ``(B, in_channels, H, W) → (B, num_classes)`` logits.
    """
    if width < 1:
        raise ValueError(f"width must be a positive int, got {width!r}.")
    return ResNet(
        block="basic",
        layers=[2, 2, 2, 2],
        block_inplanes=[width, 2 * width, 4 * width, 8 * width],
        spatial_dims=2,
        n_input_channels=in_channels,
        conv1_t_size=3,
        conv1_t_stride=1,
        num_classes=num_classes,
    )


@dataclass(frozen=True)
class ClassificationTraining:
    """Training settings of every method (seed 000 classification: static β = 0.01, r_bayes = 1 %)."""

    deterministic_epochs: int = 5
    bayes_epochs: int = 2
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-5
    r_bayes: float = 0.01
    beta: float = 0.01
    num_samples: int = 2
    mc_dropout_p: float = 0.1
    ensemble_size: int = 3
    bmr_gamma0: float = DEFAULT_GAMMA0
    bmr_rounds: int = 5
    bmr_interval: int = 1
    hs_tau0: float = 0.1

    def __post_init__(self) -> None:
        positive_ints = ("deterministic_epochs", "bayes_epochs", "batch_size", "num_samples", "ensemble_size")
        for name in (*positive_ints, "bmr_rounds", "bmr_interval"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}.")
        for name in ("lr", "beta", "bmr_gamma0", "hs_tau0"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}.")
        if not 0 < self.r_bayes <= 1:
            raise ValueError(f"r_bayes must be in (0, 1], got {self.r_bayes!r}.")
        if not 0 <= self.mc_dropout_p < 1:
            raise ValueError(f"mc_dropout_p must be in [0, 1), got {self.mc_dropout_p!r}.")


def train_classifier(
    method: str,
    data: ClassificationData,
    output_dir: str | os.PathLike[str],
    *,
    seed: int = 0,
    width: int = 64,
    settings: ClassificationTraining | None = None,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> RecipeResult:
    """Train one ChestMNIST classifier by ``method`` (resuming the finished steps in ``output_dir``).

    Parameters
    ----------
    method : str
        A key of :data:`~monai_bayes.workflows.METHOD_REGISTRY` (deterministic, sparse_bayes, full_bayes,
        mc_dropout, ensemble, bmr, tiered_ff).
    data : ClassificationData
        The training split is used.
    output_dir : str or os.PathLike
        Checkpoints of the run (``deterministic.pt`` is shared by the methods that start from it).
    seed : int
        Seed of the initialisation, data order, selection and MC noise.
    width : int
        ResNet width (:func:`build_resnet18`).
    settings : ClassificationTraining, optional
        Epochs, optimiser and Bayesian settings.
    device : torch.device or str
        Where to train.
    progress : bool
        Show progress bars on a terminal.

    Returns
    -------
    RecipeResult
        The trained network (converted in place), cost summaries and checkpoint paths.
    """
    spec = method_spec(method)
    cfg = settings or ClassificationTraining()
    torch.manual_seed(seed)
    network = build_resnet18(int(data.labels["train"].shape[1]), int(data.images["train"].shape[1]), width)
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        _DictDataset(data.images["train"], data.labels["train"]),
        batch_size=cfg.batch_size,
        shuffle=True,
        generator=generator,
    )
    if spec.train_config in REDUCTION_STEPS:
        return _train_reduction(spec, network, loader, output_dir, cfg, seed=seed, device=device, progress=progress)
    return train_sparse_bayes(
        network,
        loader,
        method=spec.name,
        output_dir=output_dir,
        loss_function=nn.BCEWithLogitsLoss(),
        deterministic_epochs=cfg.deterministic_epochs,
        bayes_epochs=cfg.bayes_epochs,
        r_bayes=cfg.r_bayes,
        num_samples=cfg.num_samples,
        kl_schedule="constant",
        beta_start=cfg.beta,
        beta_end=cfg.beta,
        optimizer=OptimizerSettings(name="adam", lr=cfg.lr, weight_decay=cfg.weight_decay),
        mc_dropout_p=cfg.mc_dropout_p,
        ensemble_size=cfg.ensemble_size,
        device=device,
        seed=seed,
        progress=progress,
    )


REDUCTION_STEPS = ("train_bmr", "train_tiered_ff")
"""Step-3 configs of the registry methods :func:`train_classifier` runs through :func:`_train_reduction`."""


def _train_reduction(
    spec: MethodSpec,
    network: nn.Module,
    loader: DataLoader,
    output_dir: str | os.PathLike[str],
    cfg: ClassificationTraining,
    *,
    seed: int,
    device: torch.device | str,
    progress: bool,
) -> RecipeResult:
    """``bmr`` / ``tiered_ff``: the shared deterministic step, then the seed-002 recipe (resumed if saved).

    Parameters
    ----------
    spec : MethodSpec
        The registry entry (its ``train_config`` is one of :data:`REDUCTION_STEPS`).
    network : nn.Module
        The untrained ResNet (trained, then converted in place).
    loader : DataLoader
        Training batches ``{"image", "label"}``.
    output_dir : str or os.PathLike
        Checkpoints: ``deterministic.pt`` (shared), ``<method>.pt`` and, for BMR, ``<method>_prune_report.json``
        (``{"passes": [PruneReport.as_dict(), ...]}``).
    cfg : ClassificationTraining
        Epochs, optimiser, ``bmr_*`` and ``hs_tau0`` settings.
    seed : int
        Seed of the run.
    device : torch.device or str
        Where to train.
    progress : bool
        Show progress bars.

    Returns
    -------
    RecipeResult
        The trained network, the costs of the steps trained in this call and the checkpoint paths.
    """
    loss = nn.BCEWithLogitsLoss()
    opt = OptimizerSettings(name="adam", lr=cfg.lr, weight_decay=cfg.weight_decay)
    result = train_sparse_bayes(
        network,
        loader,
        method="deterministic",
        output_dir=output_dir,
        loss_function=loss,
        deterministic_epochs=cfg.deterministic_epochs,
        optimizer=opt,
        device=device,
        seed=seed,
        progress=progress,
    )
    result.method = spec.name
    path = Path(output_dir) / f"{spec.name}.pt"
    result.checkpoints[spec.name] = path
    if path.is_file():  # load_checkpoint rebuilds the masks / horseshoe layers from the state dict
        load_checkpoint(network, path)
        return result
    num_items = len(loader.dataset)  # type: ignore[arg-type]
    common: dict[str, Any] = dict(
        loss_function=loss,
        num_samples=cfg.num_samples,
        kl_reduction="dataset",
        dataset_size=num_items,
        optimizer=opt,
        device=device,
        progress=progress,
    )
    if spec.train_config == "train_bmr":
        bmr = train_bmr(
            network,
            loader,
            gamma0=cfg.bmr_gamma0,
            flat_epochs=cfg.bayes_epochs,
            rounds=cfg.bmr_rounds,
            epochs_per_round=cfg.bmr_interval,
            **common,
        )
        result.costs[spec.name] = bmr.cost
        atomic_write_json(
            Path(output_dir) / f"{spec.name}_prune_report.json", {"passes": [r.as_dict() for r in bmr.passes]}
        )
    else:
        to_horseshoe_bayes(network, tau0=cfg.hs_tau0)
        result.costs[spec.name] = train_bayesian(
            network,
            loader,
            max_epochs=cfg.bayes_epochs + cfg.bmr_rounds * cfg.bmr_interval,
            kl_schedule="constant",
            beta_start=1.0,
            beta_end=1.0,
            **common,
        )
    save_checkpoint(network, path)
    return result


@torch.no_grad()
def predict_samples(
    network: nn.Module, images: torch.Tensor, num_samples: int, batch_size: int = 256, seed: int = 0
) -> torch.Tensor:
    """Sigmoid probability samples of a (possibly stochastic) classifier, in eval mode.

    Parameters
    ----------
    network : nn.Module
        ``(B, 1, H, W) → (B, C)`` logits; stochastic layers are sampled, an ensemble gives one sample per member.
    images : torch.Tensor
        ``(N, 1, H, W)`` on the network's device.
    num_samples : int
        ``S`` (1 for a deterministic network).
    batch_size : int
        Images per pass.
    seed : int
        Seed of the MC noise (the same samples on every call).

    Returns
    -------
    torch.Tensor
        ``(N, S, C)`` probabilities.
    """
    network.eval()
    inferer = MonteCarloInferer(num_samples=num_samples, activation="sigmoid", output="samples", seed=seed)
    return torch.cat([inferer(images[i : i + batch_size], network) for i in range(0, len(images), batch_size)])


def posterior_mean_network(network: nn.Module) -> nn.Module:
    """The deterministic network with the posterior means (what pruning ranks for a Bayesian model).

    Parameters
    ----------
    network : nn.Module
        A converted (partial / full Bayes, MC dropout) or plain network.

    Returns
    -------
    nn.Module
        A plain copy with the same weights in the original classes.
    """
    return to_deterministic(network, inplace=False)


def num_eval_samples(method: str, eval_samples: int, ensemble_size: int) -> int:
    """MC samples a method is evaluated with (the registry's ``mc_samples``).

    Parameters
    ----------
    method : str
        Registry key.
    eval_samples : int
        The configured count for stochastic methods.
    ensemble_size : int
        Members of an ensemble.

    Returns
    -------
    int
        1, ``ensemble_size`` or ``eval_samples``.
    """
    kind = method_spec(method).mc_samples
    return 1 if kind == "one" else ensemble_size if kind == "members" else eval_samples
