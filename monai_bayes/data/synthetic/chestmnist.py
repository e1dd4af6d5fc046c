"""Synthetic ChestMNIST: a MedMNIST-format ``.npz`` with long-tailed, co-occurring labels.

Labels follow the 14 ChestX-ray14 findings with a long-tailed prevalence spanning more than two
orders of magnitude (infiltration ≈ 20 % … hernia ≈ 0.15 %) and realistic co-occurrence
(effusion–atelectasis–infiltration, cardiomegaly–edema–effusion, mass–nodule,
consolidation–pneumonia–infiltration), drawn with a Gaussian copula. Each finding leaves a visible
trace in the small radiograph-like image (enlarged heart, blunted costophrenic angle, bright spot,
hyperlucent lung …), so the labels are learnable, the rare classes hardest.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.stats import norm

from monai_bayes.data.chestmnist import CHESTMNIST_CLASSES

__all__ = ["CHESTMNIST_PREVALENCE", "sample_chestmnist_labels", "write_chestmnist_npz"]

#: Target prevalence per class (same order as :data:`CHESTMNIST_CLASSES`).
CHESTMNIST_PREVALENCE = np.array(
    [0.11, 0.03, 0.13, 0.20, 0.055, 0.06, 0.012, 0.045, 0.04, 0.02, 0.022, 0.015, 0.03, 0.0015]
)
_GROUPS = [(0, 2, 3), (1, 9, 2), (4, 5), (8, 6, 3), (10, 7), (11, 12)]


def _correlation(rho: float = 0.45) -> np.ndarray:
    c = np.eye(len(CHESTMNIST_CLASSES))
    for g in _GROUPS:
        for i in g:
            for j in g:
                if i != j:
                    c[i, j] = max(c[i, j], rho)
    w, v = np.linalg.eigh(c)  # make it positive definite
    c = v @ np.diag(np.clip(w, 1e-3, None)) @ v.T
    d = np.sqrt(np.diag(c))
    return c / d[:, None] / d[None, :]


def sample_chestmnist_labels(
    rng: np.random.Generator, n: int, prevalence: np.ndarray = CHESTMNIST_PREVALENCE
) -> np.ndarray:
    """``(n, 14)`` uint8 multi-label matrix with the given prevalence and grouped co-occurrence.

    Every class gets at least one positive when ``n >= 14``.
    """
    z = rng.multivariate_normal(np.zeros(len(prevalence)), _correlation(), size=n, method="cholesky")
    labels = (z > norm.ppf(1 - prevalence)[None]).astype(np.uint8)
    if n >= len(prevalence):
        for c in np.flatnonzero(labels.sum(axis=0) == 0):
            labels[rng.integers(n), c] = 1
    return labels


@functools.lru_cache(maxsize=4)
def _anatomy(size: int) -> dict[str, np.ndarray]:
    """The label-independent layers of a ``size`` × ``size`` radiograph (computed once per size, read-only)."""
    s = np.linspace(-1, 1, size, dtype=np.float32)
    x, y = np.meshgrid(s, s)

    def ell(cx: float, cy: float, a: float, b: float, edge: float = 0.04) -> np.ndarray:
        r = np.sqrt(((x - cx) / a) ** 2 + ((y - cy) / b) ** 2)
        return 1 / (1 + np.exp((r - 1) / edge * min(a, b)))

    lungs = np.maximum(ell(-0.42, -0.02, 0.3, 0.62), ell(0.42, -0.02, 0.3, 0.62))
    ribs = sum(
        0.05 * np.exp(-(((y + 0.6 - 0.22 * k - 0.1 * (x * side) ** 2) / 0.03) ** 2)) * lungs
        for side in (-1, 1)
        for k in range(6)
    )
    layers = {
        "x": x,
        "y": y,
        "body": 0.15 + 0.55 * ell(0, 0.05, 0.92, 0.98, 0.08),
        "lungs": lungs,
        "heart": 0.35 * ell(0.12, 0.3, 0.22, 0.22 * 0.8),
        "heart_enlarged": 0.35 * ell(0.12, 0.3, 0.22 * 1.35, 0.22 * 1.35 * 0.8),
        "spine": 0.2 * ell(0, -0.4, 0.08, 0.5),
        "ribs": np.asarray(ribs),
        "hernia": 0.3 * ell(0.0, 0.55, 0.15, 0.1),
    }
    for a in layers.values():
        a.setflags(write=False)
    return layers


def _render(rng: np.random.Generator, labels: np.ndarray, size: int) -> np.ndarray:
    """One noisy, unsmoothed ``(size, size)`` float image whose findings follow ``labels`` ``(14,)``."""
    a = _anatomy(size)
    x, y, lungs = a["x"], a["y"], a["lungs"]

    def ell(cx: float, cy: float, ax: float, b: float, edge: float = 0.04) -> np.ndarray:
        r = np.sqrt(((x - cx) / ax) ** 2 + ((y - cy) / b) ** 2)
        return 1 / (1 + np.exp((r - 1) / edge * min(ax, b)))

    lab = labels.astype(bool)
    dark = 0.45 + (0.12 if lab[10] else 0.0)  # emphysema: hyperlucent
    img = a["body"] - dark * lungs
    img = img + a["heart_enlarged" if lab[1] else "heart"] + a["spine"] + a["ribs"]
    if lab[2]:  # effusion: dense bottom of a lung
        side = rng.choice([-1, 1])
        img = img + 0.3 * (y > 0.35 - 0.15 * rng.random()) * (x * side > 0.1) * lungs
    if lab[0]:  # atelectasis: band
        img = img + 0.2 * np.exp(-(((y - rng.uniform(0, 0.4)) / 0.05) ** 2)) * lungs
    for c, amp, width in ((3, 0.18, 0.35), (8, 0.25, 0.25), (6, 0.2, 0.3), (9, 0.15, 0.9)):  # opacities
        if lab[c]:
            cx, cy = rng.choice([-0.42, 0.42]) + rng.normal(0, 0.08), rng.uniform(-0.3, 0.4)
            img = img + amp * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / width**2) * lungs
    if lab[4]:  # mass
        img = img + 0.35 * ell(rng.choice([-0.4, 0.4]), rng.uniform(-0.3, 0.3), 0.12, 0.12, 0.2)
    if lab[5]:  # nodule
        img = img + 0.35 * ell(rng.choice([-0.4, 0.4]) + rng.normal(0, 0.1), rng.uniform(-0.4, 0.3), 0.05, 0.05, 0.3)
    if lab[7]:  # pneumothorax: dark apex without markings
        side = rng.choice([-1, 1])
        img = img - 0.15 * ((y < -0.2) & (x * side > 0.55)) * lungs
    if lab[11]:  # fibrosis: reticular texture
        img = img + 0.08 * (np.sin(x * 40) * np.sin(y * 40) > 0.5) * lungs
    if lab[12]:  # pleural thickening
        img = img + 0.2 * (lungs > 0.2) * (lungs < 0.6)
    if lab[13]:  # hernia
        img = img + a["hernia"]
    return img + rng.normal(0, 0.02, img.shape)


def _render_images(rng: np.random.Generator, labels: np.ndarray, size: int, chunk: int = 4096) -> np.ndarray:
    """``(N, size, size)`` uint8 images for ``(N, 14)`` labels, smoothed (Gaussian, σ = 0.5 px) a chunk at a time."""
    images = np.zeros((len(labels), size, size), np.uint8)
    for start in range(0, len(labels), chunk):
        raw = np.stack([_render(rng, lab, size) for lab in labels[start : start + chunk]])
        smooth = ndimage.gaussian_filter(raw, (0, 0.5, 0.5))  # per image: no smoothing across the stack axis
        images[start : start + chunk] = np.clip(smooth * 255, 0, 255).astype(np.uint8)
    return images


def write_chestmnist_npz(
    path: str | os.PathLike[str],
    num_train: int = 2000,
    num_val: int = 300,
    num_test: int = 600,
    *,
    size: int = 28,
    seed: int = 0,
    prevalence: np.ndarray = CHESTMNIST_PREVALENCE,
) -> Path:
    """Write a ChestMNIST-format ``.npz`` (``{train,val,test}_{images,labels}``).

    Parameters
    ----------
    path
        Output ``.npz`` (written to a temporary name and renamed).
    num_train, num_val, num_test
        Split sizes.
    size
        Image side (28 like ChestMNIST, or 64 / 128 / 224 like MedMNIST+).
    seed
        Seed.
    prevalence
        ``(14,)`` target class prevalence.

    Returns
    -------
    Path
        The file: images ``(N, size, size)`` uint8, labels ``(N, 14)`` uint8.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, Any] = {}
    for i, (split, n) in enumerate((("train", num_train), ("val", num_val), ("test", num_test))):
        rng = np.random.default_rng([seed, i])
        labels = sample_chestmnist_labels(rng, n, np.asarray(prevalence, dtype=float))
        images = _render_images(rng, labels, size)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
