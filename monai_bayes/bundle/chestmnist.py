"""The ChestMNIST bundle's pipeline: train the methods, evaluate them, sweep L1 pruning, write the results.

``bundles/chestmnist_bayes/configs/pipeline.json`` holds every setting and calls :func:`run_chestmnist_pipeline`;
an override the config does not define is refused (:func:`check_no_unknown_settings`) and every value is
validated by :class:`ChestMNISTPipeline` before the first training step.

Steps: (1) the dataset — a real MedMNIST ``chestmnist[_<size>].npz`` from ``dataset_dir`` or a synthetic one
written to ``cache_dir``; (2) ``num_runs`` independently seeded deterministic ResNets (and, from each, a
sparse-Bayes model: saliency → Top 1 % → ELBO with static β); (3) the other methods once; (4) metrics of every
method on the test split; (5) the pruning sweep (every run × every sparsity, inference only) of the
deterministic models and of the sparse-Bayes posterior means; (6) the seed-003 statistics, tables, report and
figure list (:mod:`monai_bayes.pruning.report`).
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import platform
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monai_bayes.data.chestmnist import CHESTMNIST_CLASSES
from monai_bayes.data.synthetic.chestmnist import write_chestmnist_npz
from monai_bayes.metrics.classification import multilabel_metrics
from monai_bayes.pruning.prune import weight_magnitudes
from monai_bayes.pruning.report import analyze_pruning, write_pruning_results
from monai_bayes.pruning.sweep import DEFAULT_SPARSITIES, pruning_sweep
from monai_bayes.utils.atomic import atomic_write_json
from monai_bayes.utils.files import read_json_if_exists
from monai_bayes.workflows.classification import (
    ClassificationData,
    ClassificationTraining,
    load_classification_data,
    num_eval_samples,
    posterior_mean_network,
    predict_samples,
    train_classifier,
)
from monai_bayes.workflows.methods import check_method

__all__ = ["ChestMNISTPipeline", "check_no_unknown_settings", "chestmnist_file", "run_chestmnist_pipeline"]

logger = logging.getLogger(__name__)

#: MedMNIST file names per image size (``medmnist`` ≥ 3: ``chestmnist_<size>.npz`` for MedMNIST+)
MEDMNIST_SIZES = (28, 64, 128, 224)


def chestmnist_file(dataset_dir: str | os.PathLike[str], size: int) -> Path:
    """The official MedMNIST file of ChestMNIST at ``size`` in ``dataset_dir``.

    Parameters
    ----------
    dataset_dir : str or os.PathLike
        Folder holding the ``.npz`` (as ``medmnist`` downloads it).
    size : int
        28 (``chestmnist.npz``) or 64 / 128 / 224 (``chestmnist_<size>.npz``).

    Returns
    -------
    Path
        The file.

    Raises
    ------
    ValueError
        For another size.
    FileNotFoundError
        If the file is missing (the message names it).
    """
    if size not in MEDMNIST_SIZES:
        raise ValueError(f"image_size must be one of the MedMNIST sizes {MEDMNIST_SIZES}, got {size!r}.")
    name = "chestmnist.npz" if size == 28 else f"chestmnist_{size}.npz"
    path = Path(dataset_dir) / name
    if not path.is_file():
        raise FileNotFoundError(f"dataset_dir {str(dataset_dir)!r} has no {name} (MedMNIST layout for size {size}).")
    return path


@dataclass(frozen=True)
class ChestMNISTPipeline:
    """Every setting of the pipeline (the ids of ``configs/pipeline.json``), validated once."""

    bundle_root: str = "."
    dataset_dir: str = ""
    image_size: int = 28
    max_items: int | None = None
    num_train: int = 1200
    num_val: int = 100
    num_test: int = 500
    methods: tuple[str, ...] = ("deterministic", "sparse_bayes", "full_bayes", "mc_dropout", "ensemble")
    num_runs: int = 3
    width: int = 16
    eval_samples: int = 8
    sparsities: tuple[float, ...] = DEFAULT_SPARSITIES
    pie_sparsity: float = 0.9
    pie_fraction: float = 0.05
    forgetting_drop: float = 0.2
    seed: int = 0
    runs_dir: str = "runs"
    results_dir: str = "results"
    cache_dir: str = "cache"
    command: str = ""
    training: ClassificationTraining = field(default_factory=ClassificationTraining)

    def __post_init__(self) -> None:
        for name in ("num_train", "num_val", "num_test", "num_runs", "width", "eval_samples"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}.")
        if self.num_runs < 2:
            raise ValueError(f"num_runs must be >= 2 (Welch's t-test compares runs), got {self.num_runs}.")
        if self.image_size not in MEDMNIST_SIZES:
            raise ValueError(f"image_size must be one of {MEDMNIST_SIZES}, got {self.image_size!r}.")
        if self.dataset_dir and not Path(self.dataset_dir).is_dir():
            raise ValueError(f"dataset_dir {self.dataset_dir!r} is not a folder (leave it empty for synthetic data).")
        for m in self.methods:
            check_method(m)
        if "deterministic" not in self.methods:
            raise ValueError(f"methods must include 'deterministic' (the pruned models), got {list(self.methods)}.")
        ks = np.asarray(self.sparsities, dtype=float)
        if len(ks) < 2 or ks[0] != 0 or (np.diff(ks) <= 0).any() or ks[-1] >= 1:
            raise ValueError(f"sparsities must increase from 0 and stay below 1, got {list(self.sparsities)}.")
        if not np.isclose(ks, self.pie_sparsity).any():
            raise ValueError(f"pie_sparsity {self.pie_sparsity} must be one of the sparsities {list(ks)}.")
        if not 0 < self.pie_fraction < 1 or not 0 < self.forgetting_drop < 1:
            raise ValueError(
                f"pie_fraction and forgetting_drop must be in (0, 1), got {self.pie_fraction}, {self.forgetting_drop}."
            )

    def path(self, name: str) -> Path:
        """``runs_dir`` / ``results_dir`` / ``cache_dir`` resolved against ``bundle_root``.

        Parameters
        ----------
        name : str
            The setting's name.

        Returns
        -------
        Path
            The folder.
        """
        p = Path(getattr(self, name))
        return p if p.is_absolute() else Path(self.bundle_root) / p


def check_no_unknown_settings(overrides: Mapping[str, Any]) -> None:
    """Refuse settings that ``pipeline.json`` does not define (they would otherwise be silently ignored).

    Parameters
    ----------
    overrides : mapping
        From :func:`~monai_bayes.bundle.config_overrides` on the pipeline config.

    Raises
    ------
    ValueError
        Naming the unknown ids.
    """
    if overrides:
        raise ValueError(
            f"unknown setting(s) {sorted(overrides)} for the ChestMNIST pipeline; the settings are the ids of "
            "configs/pipeline.json."
        )


def _dataset(cfg: ChestMNISTPipeline) -> Path:
    if cfg.dataset_dir:
        return chestmnist_file(cfg.dataset_dir, cfg.image_size)
    name = f"synthetic_chestmnist_{cfg.image_size}_{cfg.num_train}_{cfg.num_val}_{cfg.num_test}_s{cfg.seed}.npz"
    path = cfg.path("cache_dir") / name
    if not path.is_file():
        write_chestmnist_npz(path, cfg.num_train, cfg.num_val, cfg.num_test, size=cfg.image_size, seed=cfg.seed)
    return path


def _train(method: str, data: ClassificationData, run_dir: Path, seed: int, cfg: ChestMNISTPipeline) -> Any:
    """Train (or resume) one method in ``run_dir``; record its wall time the first time it trains."""
    timing_path = run_dir / "train_seconds.json"
    timing = read_json_if_exists(timing_path) or {}
    start = time.perf_counter()
    result = train_classifier(method, data, run_dir, seed=seed, width=cfg.width, settings=cfg.training)
    if result.costs:  # something was trained (not only resumed)
        timing[method] = time.perf_counter() - start
        atomic_write_json(timing_path, timing)
    return result.network, timing.get(method)


def _command_line() -> str:
    """The command that is running, with ``python -m monai.bundle`` for MONAI's entry point."""
    argv = list(sys.argv)
    if argv and argv[0].replace(os.sep, "/").endswith("monai/bundle/__main__.py"):
        argv[0] = "python -m monai.bundle"
    return " ".join(argv)


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _methods_tables(
    metrics: Mapping[str, Mapping[str, Any]], freq: np.ndarray
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    summary = [
        {
            "method": m,
            "mAP": f"{v['mAP']:.3f}",
            "mean AUROC": f"{v['mean_AUROC']:.3f}",
            "accuracy": f"{v['accuracy']:.3f}",
            "ECE": f"{v['ECE']:.3f}",
            "NLL": f"{v['NLL']:.3f}",
            "mean entropy (nats)": f"{v['mean_entropy']:.3f}",
            "mean MI (nats)": f"{v['mean_MI']:.4f}",
        }
        for m, v in metrics.items()
    ]
    per_class = [
        {"class": c, "train frequency": f"{freq[j]:.4f}"} | {f"AP {m}": f"{v['AP'][j]:.3f}" for m, v in metrics.items()}
        for j, c in enumerate(CHESTMNIST_CLASSES)
    ]
    return summary, per_class


def bmr_pass_rows(report_path: Path) -> list[dict[str, str]]:
    """One row per BMR pass of a run: the fraction of the flat model's weights pruned so far.

    Parameters
    ----------
    report_path : Path
        ``<run>/bmr_prune_report.json`` written by :func:`~monai_bayes.workflows.train_classifier`.

    Returns
    -------
    list of dict
        ``pass``, ``pruned``, ``entries``, ``pruned fraction`` (formatted cells).

    Raises
    ------
    ValueError
        Naming the file, if it is missing or holds no ``passes`` list.
    """
    report = read_json_if_exists(report_path)
    if not isinstance(report, dict) or not isinstance(report.get("passes"), list):
        raise ValueError(f"{report_path}: expected the BMR prune report {{'passes': [...]}} of the bmr run.")
    return [
        {
            "pass": str(k),
            "pruned": str(p["pruned"]),
            "entries": str(p["entries"]),
            "pruned fraction": f"{p['fraction']:.3f}",
        }
        for k, p in enumerate(report["passes"], 1)
    ]


def run_chestmnist_pipeline(overrides: Mapping[str, Any] | None = None, **settings: Any) -> Path:
    """Run the whole ChestMNIST pipeline (module docstring) and return the results folder.

    Parameters
    ----------
    overrides : mapping, optional
        Settings the pipeline config does not define (refused, :func:`check_no_unknown_settings`).
    **settings
        The fields of :class:`ChestMNISTPipeline`; ``training`` may be a mapping of
        :class:`~monai_bayes.workflows.classification.ClassificationTraining` fields.

    Returns
    -------
    Path
        ``results_dir`` with the CSV tables, ``report.md``, ``figures.json`` and ``provenance.json``.
    """
    check_no_unknown_settings(overrides or {})
    training = settings.pop("training", {})
    training = training if isinstance(training, ClassificationTraining) else ClassificationTraining(**training)
    for key in ("methods", "sparsities"):
        if key in settings:
            settings[key] = tuple(settings[key])
    cfg = ChestMNISTPipeline(training=training, **settings)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    data = load_classification_data(_dataset(cfg), cfg.max_items)
    runs = cfg.path("runs_dir")
    det_models: list[torch.nn.Module] = []
    sb_means: list[torch.nn.Module] = []
    det_seconds: float | None = None
    first_sb: torch.nn.Module | None = None
    for i in range(cfg.num_runs):
        net, seconds = _train("deterministic", data, runs / f"run_{i}", cfg.seed + i, cfg)
        det_models.append(net.eval())
        det_seconds = seconds if i == 0 else det_seconds
        if "sparse_bayes" in cfg.methods:
            sb, _ = _train("sparse_bayes", data, runs / f"run_{i}", cfg.seed + i, cfg)
            sb_means.append(posterior_mean_network(sb).eval())
            if i == 0:
                first_sb = sb
    images, labels = data.images["test"], data.labels["test"].numpy().astype(np.uint8)
    metrics, samples = {}, {}
    for method in cfg.methods:
        if method == "deterministic":
            net = det_models[0]
        elif method == "sparse_bayes" and first_sb is not None:
            net = first_sb
        else:
            net, _ = _train(method, data, runs / "run_0", cfg.seed, cfg)
        s = predict_samples(net, images, num_eval_samples(method, cfg.eval_samples, cfg.training.ensemble_size))
        samples[method] = s.numpy()
        metrics[method] = multilabel_metrics(labels, samples[method])
    sweeps = {"deterministic": pruning_sweep(det_models, images, labels, cfg.sparsities)}
    if sb_means:
        sweeps["sparse_bayes (posterior mean)"] = pruning_sweep(sb_means, images, labels, cfg.sparsities)
    train_labels = data.labels["train"].numpy().astype(np.uint8)
    tables = analyze_pruning(
        sweeps,
        train_labels,
        CHESTMNIST_CLASSES,
        magnitudes=weight_magnitudes(det_models[0]).numpy(),
        uncertainty_samples={m: s for m, s in samples.items() if m != "deterministic"},
        pie_sparsity=cfg.pie_sparsity,
        pie_fraction=cfg.pie_fraction,
        drop=cfg.forgetting_drop,
    )
    summary, per_class = _methods_tables(metrics, train_labels.mean(axis=0))
    timing = [
        {
            "what": f"pruning sweep, {name} ({sw.probs.shape[0]} runs × {len(sw.sparsities)} sparsities)",
            "seconds": f"{sw.seconds:.1f}",
            "× one training run": f"{sw.seconds / det_seconds:.2f}" if det_seconds else "n/a",
        }
        for name, sw in sweeps.items()
    ]
    timing.insert(
        0,
        {
            "what": f"one training run (deterministic, {cfg.training.deterministic_epochs} epochs)",
            "seconds": f"{det_seconds:.1f}" if det_seconds else "n/a (resumed)",
            "× one training run": "1.00",
        },
    )
    results = cfg.path("results_dir")
    source = "real MedMNIST file" if cfg.dataset_dir else "synthetic (says nothing about real CXR performance)"
    provenance = {
        "command": cfg.command or _command_line(),
        "commit": _commit(),
        "seed": cfg.seed,
        "machine": f"{os.cpu_count()}-core {platform.machine()}, torch {torch.__version__}",
        "date": datetime.date.today().isoformat(),
        "notes": (
            f"ChestMNIST {cfg.image_size}², {source}: train {len(train_labels)}, test {len(labels)} images; "
            f"ResNet18 layout width {cfg.width}; {cfg.num_runs} runs; settings {json.dumps(asdict(cfg), default=str)}"
        ),
    }
    extra = {"methods": summary, "per_class_ap": per_class, "timing": timing}
    if "bmr" in cfg.methods:
        extra["bmr_passes"] = bmr_pass_rows(runs / "run_0" / "bmr_prune_report.json")
    return write_pruning_results(tables, results, provenance, extra_tables=extra)
