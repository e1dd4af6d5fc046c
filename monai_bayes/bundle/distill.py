"""``monai-bayes distill``: distil a bundle run's trained model into a deterministic BDK or EnD² student.

Reads the bundle's ``common.json`` + ``evaluate.json`` (with the same overrides the run was trained with,
validated like the pipeline's), loads the method's trained model as the teacher (``evaluate.json``'s
``network``: partial / full Bayes, MC dropout, ensemble, SG-MCMC samples), caches ``S`` teacher samples of the
training images, trains the student (:func:`monai_bayes.distill.train_student`), scores student and teacher on
the evaluation images (:func:`monai_bayes.distill.compare_with_teacher`), times both
(:func:`monai_bayes.distill.inference_speedup`) and writes, under ``<run_dir>/distill_<kind>/``::

    student.pt      the student network's state dict (monai_bayes.networks.save_checkpoint)
    student.json    kind, classes, UNet settings, teacher (method, run, S)
    report.json     per-case scores of both, Spearman of the uncertainty maps, timings

For example::

    monai-bayes distill bundles/lidc_sparse_bayes --kind end2 --set patch_size=64 --epochs 20
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser
from monai.data import CacheDataset, DataLoader
from monai.transforms import Compose

from monai_bayes.bundle.overrides import validate_overrides
from monai_bayes.bundle.runner import bundle_config
from monai_bayes.distill import (
    DistillKind,
    build_student,
    compare_with_teacher,
    inference_speedup,
    init_student_from_teacher,
    save_student,
    train_student,
)
from monai_bayes.utils.atomic import atomic_write_json
from monai_bayes.utils.options import look_up
from monai_bayes.utils.random import seeded_global_rng

__all__ = ["distill_bundle_run", "register"]

logger = logging.getLogger(__name__)

#: the bundle configs whose ids a distillation reads (and whose overrides it accepts)
CONFIGS = ("common", "evaluate")


def _parser(bundle_root: Path, overrides: Mapping[str, Any]) -> ConfigParser:
    files = [bundle_config(bundle_root, name) for name in CONFIGS]
    validate_overrides(overrides, files, where="distill")
    parser = ConfigParser()
    parser.read_config([str(f) for f in files])
    parser.update({"bundle_root": str(bundle_root), **overrides})
    return parser


def _loader(parser: ConfigParser, items_id: str, batch_size: int, shuffle: bool = False) -> DataLoader:
    transforms = Compose(parser.get_parsed_content("base_transforms"))
    dataset = CacheDataset(parser.get_parsed_content(items_id), transform=transforms, progress=False)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=0)


def _summary(values: torch.Tensor) -> dict[str, float]:
    finite = values[torch.isfinite(values)].double()
    if finite.numel() == 0:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    std = float(finite.std()) if finite.numel() > 1 else 0.0
    return {"mean": float(finite.mean()), "std": std, "n": int(finite.numel())}


def distill_bundle_run(
    bundle_root: str | os.PathLike,
    kind: DistillKind | str,
    *,
    overrides: Mapping[str, Any] | None = None,
    epochs: int = 20,
    num_samples: int = 8,
    student_channels: Sequence[int] = (8, 16, 32, 64, 128),
    batch_size: int = 10,
    lr: float = 1e-3,
    seed: int = 0,
    initial_temperature: float = 2.5,
    foreground_weight: float = 10.0,
    output_dir: str | os.PathLike | None = None,
    init_from_teacher: bool = False,
    batch_norm_frozen: bool = False,
    frozen_trunk: bool = False,
    head_channels: int = 16,
    entropy_weight: float = 0.0,
) -> dict[str, Any]:
    """Distil a bundle run's trained model into a student, score both, write the files (module docstring).

    Parameters
    ----------
    bundle_root : str or os.PathLike
        The bundle (e.g. ``bundles/lidc_sparse_bayes``) whose run holds the trained teacher.
    kind : DistillKind or str
        ``"bdk"`` or ``"end2"``.
    overrides : Mapping, optional
        Bundle settings the run was trained with (``method``, ``r_bayes``, ``patch_size``, ...).
    epochs, num_samples, batch_size, lr, seed : int, int, int, float, int
        Student training: epochs, teacher samples ``S`` per image, batch size, Adam rate, seed. With
        ``init_from_teacher``, ``epochs=0`` keeps the student as initialised (the teacher's posterior mean).
    student_channels : Sequence of int
        The student UNet's channels (strides and residual units as the bundle's ``network_def``).
    initial_temperature : float
        EnD²'s ``T_0`` (annealed to 1 over the first half of the epochs).
    foreground_weight : float
        ``γ``: voxels the teacher sees as foreground weigh up to ``1 + γ`` in the loss
        (:func:`~monai_bayes.distill.losses.foreground_voxel_weights`).
    output_dir : str or os.PathLike, optional
        Default ``<run_dir>/distill_<kind>`` (``distill_<kind>_init`` with ``init_from_teacher``).
    init_from_teacher : bool
        Build the student with the teacher's widths (``student_channels`` is ignored) and initialise it from the
        teacher's posterior-mean network (:func:`~monai_bayes.distill.init_student_from_teacher`) before
        distilling.
    batch_norm_frozen : bool
        Keep the student's batch-norm statistics fixed while it trains
        (:func:`~monai_bayes.distill.trainer.freeze_batch_norm`).
    frozen_trunk : bool
        EnD² only, implies ``init_from_teacher``: the student's UNet is the teacher's posterior-mean network,
        frozen (weights and batch-norm statistics), and only a precision head trains
        (``build_student(..., frozen_trunk=True)``, :class:`~monai_bayes.distill.PrecisionHeadNetwork`); the
        output folder defaults to ``distill_end2_frozen_trunk``.
    head_channels : int
        Hidden width of that precision head.
    entropy_weight : float
        EnD² only: ``λ_H`` of the total-entropy matching term (:class:`~monai_bayes.distill.EnD2Loss`).

    Returns
    -------
    dict
        The report written to ``report.json``.

    Raises
    ------
    ValueError
        For an unknown kind or override, a run without a trained model, or ``frozen_trunk`` with BDK.
    """
    kind = look_up("kind", kind, DistillKind)
    if frozen_trunk and kind != DistillKind.END2:
        raise ValueError(f"frozen_trunk needs kind='end2' (a Dirichlet precision head), got kind={kind.value!r}.")
    init_from_teacher = init_from_teacher or frozen_trunk
    root = Path(bundle_root)
    overrides = dict(overrides or {})
    parser = _parser(root, overrides)
    device = parser.get_parsed_content("device")
    layout = parser.get_parsed_content("layout")
    network_def = parser.get_parsed_content("network_def")
    if not layout.model_checkpoint.is_file():
        raise ValueError(
            f"{layout.model_checkpoint}: no trained model; run the bundle's pipeline for this method first."
        )
    teacher = parser.get_parsed_content("network").eval()
    num_classes = int(network_def.out_channels)
    if init_from_teacher:
        student_channels = [int(c) for c in network_def.channels]
    suffix = "_frozen_trunk" if frozen_trunk else "_init" if init_from_teacher else ""
    out = Path(output_dir) if output_dir is not None else layout.run_dir / f"distill_{kind.value}{suffix}"
    out.mkdir(parents=True, exist_ok=True)
    with seeded_global_rng(seed):
        student = build_student(
            kind,
            num_classes,
            spatial_dims=int(network_def.dimensions),
            in_channels=int(network_def.in_channels),
            channels=student_channels,
            strides=list(network_def.strides),
            num_res_units=int(network_def.num_res_units),
            frozen_trunk=frozen_trunk,
            head_channels=head_channels,
        )
        if init_from_teacher:
            init_student_from_teacher(student, teacher)
        if epochs > 0 or not init_from_teacher:
            train_student(
                student,
                teacher,
                _loader(parser, "train_items", batch_size),
                num_samples=num_samples,
                max_epochs=epochs,
                batch_size=batch_size,
                lr=lr,
                device=device,
                seed=seed,
                initial_temperature=initial_temperature,
                foreground_weight=foreground_weight,
                batch_norm_frozen=batch_norm_frozen,
                entropy_weight=entropy_weight,
            )
    teacher_info = {"method": layout.method, "run": layout.run_name, "checkpoint": str(layout.model_checkpoint)}
    save_student(student, out / "student.pt", teacher=teacher_info | {"num_samples": num_samples})
    eval_loader = _loader(parser, "eval_items", batch_size)
    scores = compare_with_teacher(student, teacher, eval_loader, num_samples=num_samples, seed=seed, device=device)
    images = next(iter(eval_loader))["image"].to(device)
    timing = inference_speedup(student, teacher, torch.as_tensor(images), num_samples=num_samples)
    report = {
        "kind": kind.value,
        "teacher": teacher_info | {"num_samples": num_samples},
        "student": {
            "channels": list(student_channels),
            "parameters": sum(p.numel() for p in student.parameters()),
            "trained_parameters": sum(p.numel() for p in student.parameters() if p.requires_grad),
        },
        "teacher_parameters": sum(p.numel() for p in teacher.parameters()),
        "settings": {
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "seed": seed,
            "foreground_weight": foreground_weight,
            "init_from_teacher": init_from_teacher,
            "batch_norm_frozen": batch_norm_frozen,
            "frozen_trunk": frozen_trunk,
            "entropy_weight": entropy_weight,
            "overrides": overrides,
        }
        | ({"initial_temperature": initial_temperature} if kind == DistillKind.END2 else {}),
        "scores": {
            who: {name: _summary(values) for name, values in per_case.items()}
            for who, per_case in ((w, scores[w]) for w in ("teacher", "student"))
        },
        "spearman_total": scores["spearman_total"],
        "spearman_epistemic": scores["spearman_epistemic"],
        "spearman_aleatoric": scores["spearman_aleatoric"],
        "spearman_voxels": "union of the teacher's and the student's predicted foreground, pooled over cases",
        "foreground_voxels": scores["foreground_voxels"],
        "timing": timing | {"batch": list(images.shape)},
    }
    atomic_write_json(out / "report.json", report)
    logger.info("distill %s: %s", kind.value, json.dumps({k: report[k] for k in ("spearman_total", "timing")}))
    return report


def _parse_set(values: Sequence[str]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"monai-bayes distill: --set expects KEY=VALUE, got {item!r}.")
        try:
            overrides[key] = json.loads(raw)
        except json.JSONDecodeError:
            overrides[key] = raw
    return overrides


def _run(args: argparse.Namespace) -> int:
    report = distill_bundle_run(
        args.bundle_root,
        args.kind,
        overrides=_parse_set(args.set),
        epochs=args.epochs,
        num_samples=args.num_samples,
        student_channels=args.student_channels,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        foreground_weight=args.foreground_weight,
        initial_temperature=args.initial_temperature,
        output_dir=args.output_dir,
        init_from_teacher=args.init_from_teacher,
        batch_norm_frozen=args.freeze_batch_norm,
        frozen_trunk=args.frozen_trunk,
        head_channels=args.head_channels,
        entropy_weight=args.entropy_weight,
    )
    print(json.dumps({k: report[k] for k in ("kind", "spearman_total", "timing")}))
    return 0


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``distill`` command to the ``monai-bayes`` parser.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        The top-level sub-command set.

    Returns
    -------
    argparse.ArgumentParser
        The command's parser.
    """
    p = subparsers.add_parser(
        "distill",
        help="distil a bundle run's model into a deterministic BDK / EnD² student",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("bundle_root", type=Path, help="bundle folder (its run of --set method=... is the teacher)")
    p.add_argument("--kind", choices=[k.value for k in DistillKind], required=True, help="bdk or end2")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="bundle setting of the run (JSON value)"
    )
    p.add_argument("--epochs", type=int, default=20, help="student training epochs (default 20)")
    p.add_argument("--num-samples", type=int, default=8, help="teacher samples S per image (default 8)")
    p.add_argument(
        "--student-channels", type=int, nargs="+", default=[8, 16, 32, 64, 128], help="student UNet channels"
    )
    p.add_argument("--batch-size", type=int, default=10, help="batch size (default 10)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument(
        "--foreground-weight", type=float, default=10.0, help="γ: teacher-foreground voxels weigh up to 1 + γ (10)"
    )
    p.add_argument(
        "--freeze-batch-norm", action="store_true", help="keep the student's batch-norm statistics while it trains"
    )
    p.add_argument("--initial-temperature", type=float, default=2.5, help="EnD²'s T_0 (default 2.5)")
    p.add_argument("--output-dir", type=Path, default=None, help="default <run_dir>/distill_<kind>")
    p.add_argument(
        "--init-from-teacher",
        action="store_true",
        help="student of the teacher's widths, initialised from the teacher's posterior-mean network",
    )
    p.add_argument(
        "--frozen-trunk",
        action="store_true",
        help="EnD²: the teacher's posterior-mean network, frozen, plus a trained Dirichlet-precision head",
    )
    p.add_argument("--head-channels", type=int, default=16, help="hidden width of that precision head (16)")
    p.add_argument(
        "--entropy-weight", type=float, default=0.0, help="EnD²: weight of a total-entropy matching term (0: off)"
    )
    p.set_defaults(func=_run)
    return p
