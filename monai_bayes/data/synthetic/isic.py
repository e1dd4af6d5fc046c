"""Synthetic ISIC 2018 Task 1: dermoscopy-like RGB JPEGs with 0/255 PNG lesion masks.

Each image shows skin (tone, illumination gradient, vignetting, texture, a few hairs) with one
pigmented lesion: an irregular, lobulated outline, brown colour with darker blotches, and a
boundary whose sharpness varies from case to case (fuzzy boundaries are where segmentations
disagree). Image sizes vary, so readers must resize. The official folder layout and the
2594 : 100 : 1000 split proportions are used.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from monai_bayes.data.isic import ISIC_OFFICIAL_SIZES, SPLITS
from monai_bayes.data.splits import split_by_sizes
from monai_bayes.utils.atomic import atomic_write_json, finished_cache, staging_dir

__all__ = ["make_isic_image", "write_isic_cases"]

_DIRS = {
    "training": ("ISIC2018_Task1-2_Training_Input", "ISIC2018_Task1_Training_GroundTruth"),
    "validation": ("ISIC2018_Task1-2_Validation_Input", "ISIC2018_Task1_Validation_GroundTruth"),
    "test": ("ISIC2018_Task1-2_Test_Input", "ISIC2018_Task1_Test_GroundTruth"),
}


def make_isic_image(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Render one lesion image.

    Returns
    -------
    (rgb, mask)
        ``(H, W, 3)`` uint8 and ``(H, W)`` uint8 in {0, 255}.
    """
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = (xx - width / 2) / (width / 2), (yy - height / 2) / (height / 2)
    skin = np.array([rng.uniform(195, 235), rng.uniform(145, 185), rng.uniform(120, 160)], dtype=np.float32)
    grad = 1 + 0.12 * (rng.uniform(-1, 1) * u + rng.uniform(-1, 1) * v)
    vignette = 1 - rng.uniform(0.1, 0.3) * np.clip(u**2 + v**2 - 0.3, 0, None)
    tex = ndimage.gaussian_filter(rng.standard_normal((height, width)).astype(np.float32), 2.0) * 18
    img = skin[None, None] * (grad * vignette)[..., None] + tex[..., None]

    # lesion: lobulated outline in polar form
    cx, cy = width * rng.uniform(0.4, 0.6), height * rng.uniform(0.4, 0.6)
    r0 = min(height, width) * rng.uniform(0.15, 0.32)
    theta = np.arctan2(yy - cy, xx - cx)
    rad = np.ones_like(theta)
    for k in range(2, 7):
        rad += rng.normal(0, 0.12 / k**0.7) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    aspect = rng.uniform(0.7, 1.0)
    d = np.hypot((xx - cx), (yy - cy) / aspect) / (r0 * rad)
    mask = d <= 1.0
    fuzz = rng.uniform(0.03, 0.25)  # boundary sharpness
    member = 0.5 * (1 - np.tanh(np.clip((d - 1) / fuzz * 2, -30, 30)))
    red = rng.uniform(90, 160)
    brown = np.array([red, red * rng.uniform(0.5, 0.65), red * rng.uniform(0.3, 0.42)], dtype=np.float32)
    blotch = ndimage.gaussian_filter(rng.standard_normal((height, width)).astype(np.float32), min(height, width) / 25)
    blotch = 0.75 + 0.5 * (blotch - blotch.min()) / max(np.ptp(blotch), 1e-6)
    lesion = brown[None, None] * blotch[..., None]
    img = img * (1 - member[..., None]) + lesion * member[..., None]

    # hairs: dark thin curves
    for _ in range(int(rng.integers(0, 5))):
        t = np.linspace(0, 1, 400)
        x0, y0 = rng.uniform(0, width), rng.uniform(0, height)
        ang = rng.uniform(0, np.pi)
        length = rng.uniform(0.3, 0.9) * max(height, width)
        bend = rng.uniform(-0.3, 0.3)
        px = x0 + np.cos(ang + bend * t) * length * (t - 0.5)
        py = y0 + np.sin(ang + bend * t) * length * (t - 0.5)
        ok = (px >= 0) & (px < width) & (py >= 0) & (py < height)
        hair = np.zeros((height, width), np.float32)
        hair[py[ok].astype(int), px[ok].astype(int)] = 1
        hair = np.clip(ndimage.gaussian_filter(hair, 0.7) * 4, 0, 1)
        img = img * (1 - 0.7 * hair[..., None]) + 40 * 0.7 * hair[..., None]
    img += rng.normal(0, 3, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), (mask * 255).astype(np.uint8)


def write_isic_cases(
    out_dir: str | os.PathLike[str],
    num_cases: int = 40,
    seed: int = 0,
    *,
    size_range: tuple[int, int] = (192, 320),
    with_test_masks: bool = True,
    overwrite: bool = False,
) -> dict[str, list[dict[str, str]]]:
    """Write synthetic ISIC 2018 Task 1 data in the official folder layout.

    Parameters
    ----------
    out_dir
        Output folder (built under a temporary name, renamed when complete; a finished folder
        written with the same arguments is reused).
    num_cases
        Total number of images, split 2594 : 100 : 1000 (every split gets at least one).
    seed
        Seed of everything.
    size_range
        Range of the image height; widths are 4:3.
    with_test_masks
        Also write the test ground-truth folder.
    overwrite
        Replace a different existing ``out_dir``.

    Returns
    -------
    dict
        ``{split: [{"image", "label", "case_id"}, ...]}`` with absolute paths (also in
        ``out_dir/manifest.json``).
    """
    root = Path(out_dir)
    config = {
        "kind": "synthetic-isic",
        "version": 1,
        "num_cases": int(num_cases),
        "seed": int(seed),
        "size_range": [int(v) for v in size_range],
        "with_test_masks": bool(with_test_masks),
    }
    if num_cases < 3:
        raise ValueError(f"num_cases must be >= 3 (one per split), got {num_cases}")
    if (done := finished_cache(root, "manifest.json")) is not None and not overwrite:
        with open(done, encoding="utf-8") as f:
            m = json.load(f)
        if m.get("config") == config:
            return {
                s: [{k: str(root / v) if k != "case_id" else v for k, v in it.items()} for it in m[s]] for s in SPLITS
            }
    ids = [f"ISIC_{i:07d}" for i in range(num_cases)]
    parts = dict(zip(SPLITS, split_by_sizes(ids, [ISIC_OFFICIAL_SIZES[s] for s in SPLITS], seed=seed)))
    manifest: dict[str, Any] = {"config": config}
    with staging_dir(root, overwrite=overwrite) as tmp:
        for split in SPLITS:
            in_dir, gt_dir = (tmp / d for d in _DIRS[split])
            in_dir.mkdir()
            if split != "test" or with_test_masks:
                gt_dir.mkdir()
            (in_dir / "LICENSE.txt").write_text("Synthetic images generated by monai_bayes; no real patient data.\n")
            items = []
            for cid in sorted(parts[split]):
                rng = np.random.default_rng([seed, int(cid.split("_")[1])])
                h = int(rng.integers(size_range[0], size_range[1] + 1))
                rgb, mask = make_isic_image(rng, h, round(h * 4 / 3))
                Image.fromarray(rgb).save(in_dir / f"{cid}.jpg", quality=92)
                item = {"image": (in_dir / f"{cid}.jpg").relative_to(tmp).as_posix(), "label": "", "case_id": cid}
                if gt_dir.is_dir():
                    Image.fromarray(mask).save(gt_dir / f"{cid}_segmentation.png")
                    item["label"] = (gt_dir / f"{cid}_segmentation.png").relative_to(tmp).as_posix()
                items.append(item)
            manifest[split] = items
        atomic_write_json(tmp / "manifest.json", manifest)
    return {
        s: [{k: str(root / v) if (k != "case_id" and v) else v for k, v in it.items()} for it in manifest[s]]
        for s in SPLITS
    }
