"""ISIC 2018 Task 1 (lesion boundary segmentation): JPEG images with PNG masks.

On-disk layout of the official download (any parent folder; names matched case-insensitively)::

    ISIC2018_Task1-2_Training_Input/ISIC_0000000.jpg …          (2594 images)
    ISIC2018_Task1_Training_GroundTruth/ISIC_0000000_segmentation.png …
    ISIC2018_Task1-2_Validation_Input/…                          (100)
    ISIC2018_Task1_Validation_GroundTruth/…
    ISIC2018_Task1-2_Test_Input/…                                (1000)
    ISIC2018_Task1_Test_GroundTruth/…

Masks are 8-bit PNGs with 0 (background) and 255 (lesion). When no official split folders are
found, every ``ISIC_<id>.jpg`` under the root is paired with an ``ISIC_<id>_segmentation.png``
anywhere under the root, and the pairs are split (seeded) in the official 2594 : 100 : 1000
proportions.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import Dataset
from monai.transforms import Compose, MapTransform
from PIL import Image

from monai_bayes.data.cache import DATALIST_NAME, reusable_cache, safe_name, stale_cache_of_ours
from monai_bayes.data.errors import DataFormatError, OnError, SkipReport, check_on_error
from monai_bayes.data.splits import split_by_sizes
from monai_bayes.utils.atomic import atomic_save_npy, atomic_write_json, staging_dir

__all__ = [
    "ISIC_OFFICIAL_SIZES",
    "ISICDataset",
    "LoadISICd",
    "find_isic_pairs",
    "load_isic_pair",
    "prepare_isic_dataset",
]

#: Official ISIC 2018 Task 1 split sizes (seed 000 §3).
ISIC_OFFICIAL_SIZES = {"training": 2594, "validation": 100, "test": 1000}
SPLITS = ("training", "validation", "test")
_IMAGE_RE = re.compile(r"^(ISIC_\d+)\.jpe?g$", re.IGNORECASE)
_MASK_RE = re.compile(r"^(ISIC_\d+)_segmentation\.png$", re.IGNORECASE)
_SPLIT_DIR_RE = {
    "training": (re.compile(r"training_input", re.I), re.compile(r"training_groundtruth", re.I)),
    "validation": (re.compile(r"validation_input", re.I), re.compile(r"validation_groundtruth", re.I)),
    "test": (re.compile(r"test_input", re.I), re.compile(r"test_groundtruth", re.I)),
}


def _scan(folder: Path, pattern: re.Pattern[str]) -> dict[str, Path]:
    return {m.group(1).upper(): p for p in sorted(folder.rglob("*")) if p.is_file() and (m := pattern.match(p.name))}


def find_isic_pairs(
    root: str | os.PathLike[str],
    *,
    seed: int = 0,
    on_error: OnError = "raise",
    report: SkipReport | None = None,
) -> dict[str, list[dict[str, str]]]:
    """List image / mask pairs per split.

    Parameters
    ----------
    root
        Folder holding the official split folders, or any folder of ``ISIC_<id>.jpg`` and
        ``ISIC_<id>_segmentation.png`` files.
    seed
        Seed of the split when there are no official split folders.
    on_error
        An image without a mask raises a :class:`DataFormatError`, or (``"skip"``) is listed in
        ``report`` and left out.
    report
        Collects skipped items.

    Returns
    -------
    dict
        ``{"training" | "validation" | "test": [{"image", "label", "case_id"}, ...]}`` with
        absolute paths; ``"official"`` tells whether official split folders were used.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: ISIC root folder does not exist")
    on_error = check_on_error(on_error)
    report = report if report is not None else SkipReport()
    dirs = [p for p in root.rglob("*") if p.is_dir()] + [root]
    out: dict[str, Any] = {}
    official = False
    for split in SPLITS:
        in_re, gt_re = _SPLIT_DIR_RE[split]
        in_dirs = [d for d in dirs if in_re.search(d.name)]
        if not in_dirs:
            continue
        official = True
        gt_dirs = [d for d in dirs if gt_re.search(d.name)]
        if not gt_dirs:
            report.warn(
                in_dirs[0], f"{split} images without a ground-truth folder (masks not downloaded?); split left empty"
            )
            out[split] = []
            continue
        images = {k: v for d in in_dirs for k, v in _scan(d, _IMAGE_RE).items()}
        masks = {k: v for d in gt_dirs for k, v in _scan(d, _MASK_RE).items()}
        out[split] = _pair(images, masks, split, on_error, report)
    if not official:
        images, masks = _scan(root, _IMAGE_RE), _scan(root, _MASK_RE)
        pairs = _pair(images, masks, "all", on_error, report)
        by_id = {p["case_id"]: p for p in pairs}
        parts = split_by_sizes(list(by_id), [ISIC_OFFICIAL_SIZES[s] for s in SPLITS], seed=seed)
        for split, ids in zip(SPLITS, parts):
            out[split] = [by_id[i] for i in sorted(ids)]
    if not any(out.get(s) for s in SPLITS):
        raise DataFormatError("no ISIC_<id>.jpg images with ISIC_<id>_segmentation.png masks found", root)
    out["official"] = official
    return out


def _pair(
    images: dict[str, Path], masks: dict[str, Path], split: str, on_error: OnError, report: SkipReport
) -> list[dict[str, str]]:
    pairs = []
    for cid, img in sorted(images.items()):
        mask = masks.get(cid)
        if mask is None:
            err = DataFormatError(f"no mask {cid}_segmentation.png for this image ({split} split)", img)
            report.handle(on_error, img, err)
            continue
        pairs.append({"image": str(img), "label": str(mask), "case_id": cid})
    for cid in sorted(set(masks) - set(images)):
        report.warn(masks[cid], f"mask without image {cid}.jpg; ignored")
    return pairs


def load_isic_pair(
    image: str | os.PathLike[str], label: str | os.PathLike[str], size: Sequence[int] | None = (224, 224)
) -> tuple[np.ndarray, np.ndarray]:
    """Read one ISIC image and its mask, optionally resized.

    Parameters
    ----------
    image, label
        JPEG and PNG paths.
    size
        ``(H, W)`` after resizing (image bilinear, mask nearest), or ``None`` to keep the size.

    Returns
    -------
    (image, label)
        ``(3, H, W)`` float32 in [0, 1] and ``(1, H, W)`` uint8 in {0, 1} (mask > 127).

    Raises
    ------
    DataFormatError
        Unreadable file, or image and mask of different sizes.
    """
    try:
        with Image.open(image) as im:
            im.load()
            rgb = im.convert("RGB")
        with Image.open(label) as lm:
            lm.load()
            gray = lm.convert("L")
    except Image.DecompressionBombError as e:  # a tiny file claiming a huge image: refused before decoding
        raise DataFormatError(f"image / mask refused as a decompression bomb ({e})", image) from e
    except (OSError, ValueError, SyntaxError) as e:  # PIL raises SyntaxError on some broken headers
        raise DataFormatError(f"cannot read image / mask ({type(e).__name__}: {e})", image) from e
    if rgb.size != gray.size:
        raise DataFormatError(
            f"image is {rgb.size[0]}x{rgb.size[1]} but its mask {label} is {gray.size[0]}x{gray.size[1]}", image
        )
    if size is not None:
        h, w = int(size[0]), int(size[1])
        rgb = rgb.resize((w, h), Image.Resampling.BILINEAR)
        gray = gray.resize((w, h), Image.Resampling.NEAREST)
    img = np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1) / 255.0
    lab = (np.asarray(gray) > 127).astype(np.uint8)[None]
    return img, lab


class LoadISICd(MapTransform):
    """Load ``d["image"]`` (JPEG path) and ``d["label"]`` (PNG path) with :func:`load_isic_pair`."""

    def __init__(
        self, size: Sequence[int] | None = (224, 224), image_key: str = "image", label_key: str = "label"
    ) -> None:
        super().__init__([image_key, label_key])
        self.size = size
        self.image_key, self.label_key = image_key, label_key

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        d = dict(data)
        d[self.image_key], d[self.label_key] = load_isic_pair(d[self.image_key], d[self.label_key], self.size)
        return d


class ISICDataset(Dataset):
    """ISIC 2018 Task 1 read straight from the JPEG / PNG files (a MONAI ``Dataset``).

    Items are ``{"image": (3, H, W) float32 in [0, 1], "label": (1, H, W) uint8, "case_id"}`` after
    resizing to ``size``; ``transform`` runs afterwards. For repeated epochs, convert once with
    :func:`prepare_isic_dataset` and load the ``.npy`` cache instead.

    Parameters
    ----------
    root
        ISIC folder (see :func:`find_isic_pairs`).
    split
        ``"training"``, ``"validation"`` or ``"test"``.
    size
        ``(H, W)``; default 224 × 224 as in seed 000 §3.
    transform
        Further MONAI transforms.
    seed, on_error
        See :func:`find_isic_pairs`.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "training",
        size: Sequence[int] | None = (224, 224),
        transform: Callable[..., Any] | None = None,
        seed: int = 0,
        on_error: OnError = "raise",
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.report = SkipReport()
        pairs = find_isic_pairs(root, seed=seed, on_error=on_error, report=self.report)
        load = LoadISICd(size)
        super().__init__(pairs.get(split, []), Compose([load, transform]) if transform is not None else load)


def prepare_isic_dataset(
    raw_dir: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str],
    *,
    size: Sequence[int] = (224, 224),
    seed: int = 0,
    on_error: OnError = "raise",
    overwrite: bool = False,
    show_progress: bool = True,
) -> Path:
    """Resize every ISIC pair once and write ``.npy`` files plus a datalist.

    Parameters
    ----------
    raw_dir
        ISIC folder (see :func:`find_isic_pairs`).
    cache_dir
        Output folder: ``datalist.json``, ``report.json``, ``images/<case>_image.npy``
        (``(3, H, W)`` float32 in [0, 1]) and ``<case>_label.npy`` (``(1, H, W)`` uint8). Built in
        a temporary folder and renamed; reused if finished with the same settings.
    size
        ``(H, W)``.
    seed, on_error
        See :func:`find_isic_pairs`; with ``"skip"`` unreadable pairs are skipped too.
    overwrite
        Replace a different existing cache.
    show_progress
        progress bar (drawn on a terminal only).

    Returns
    -------
    Path
        ``cache_dir/datalist.json`` with ``"training"``, ``"validation"``, ``"test"`` lists of
        ``{"image", "label", "case_id"}`` (paths relative to the datalist) and ``"official_split"``.
    """
    from monai_bayes.utils.progress import progress_bar

    raw_dir, cache_dir = Path(raw_dir), Path(cache_dir)
    on_error = check_on_error(on_error)
    config = {
        "kind": "isic2018",
        "version": 1,
        "raw_dir": str(raw_dir.resolve()),
        "size": [int(s) for s in size],
        "seed": int(seed),
    }
    if not overwrite and (done := reusable_cache(cache_dir, config)) is not None:
        return done
    overwrite = overwrite or stale_cache_of_ours(cache_dir, "images")
    report = SkipReport()
    pairs = find_isic_pairs(raw_dir, seed=seed, on_error=on_error, report=report)
    total = sum(len(pairs[s]) for s in SPLITS if s in pairs)
    with staging_dir(cache_dir, overwrite=overwrite) as tmp:
        (tmp / "images").mkdir()
        datalist: dict[str, Any] = {"name": "isic2018", "config": config, "official_split": pairs["official"]}
        bar = progress_bar(total=total, desc="ISIC images", unit="img", enabled=None if show_progress else False)
        for split in SPLITS:
            items = []
            for p in pairs.get(split, []):
                bar.update()
                try:
                    img, lab = load_isic_pair(p["image"], p["label"], size)
                except DataFormatError as e:
                    report.handle(on_error, p["image"], e)
                    continue
                stem = safe_name(p["case_id"])
                rel_i, rel_l = f"images/{stem}_image.npy", f"images/{stem}_label.npy"
                atomic_save_npy(tmp / rel_i, img)
                atomic_save_npy(tmp / rel_l, lab)
                items.append({"image": rel_i, "label": rel_l, "case_id": p["case_id"], "split": split})
            datalist[split] = items
        bar.close()
        datalist["numTraining"] = len(datalist["training"])
        datalist["report"] = "report.json"
        atomic_write_json(tmp / "report.json", report.to_dict())
        atomic_write_json(tmp / DATALIST_NAME, datalist)
    return cache_dir / DATALIST_NAME
