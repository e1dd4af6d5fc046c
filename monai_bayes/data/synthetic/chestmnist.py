"""Synthetic ChestMNIST: a MedMNIST-format ``.npz`` with long-tailed, co-occurring labels.

**Label model.** Marginal prevalences are the published NIH ChestX-ray14 class counts
(:data:`CHESTMNIST_CLASS_COUNTS`, Wang et al. 2017, ``Data_Entry_2017.csv``: 112,120 images; infiltration
17.7 % … hernia 0.20 %, an 88× span) — ChestMNIST is the same images and labels at 28². Dependencies are a
Gaussian copula: a latent ``z ~ N(0, R)`` per image and ``y_c = [z_c > Φ⁻¹(1 − p_c)]``, so each pair's joint
frequency is the bivariate normal orthant probability ``Φ₂(−t_a, −t_b; R_ab)`` (computed exactly with Owen's
T, :func:`bivariate_upper_orthant`). :func:`fit_label_copula` fits ``R`` to any label matrix by matching every
pair's observed co-occurrence (e.g. a real ``chestmnist.npz``'s train labels; the fit is then projected to the
nearest positive-definite correlation). The default ``R`` has latent correlation 0.45 inside the clinically
documented co-occurring groups of ChestX-ray14 (effusion–atelectasis–infiltration, cardiomegaly–edema–effusion,
mass–nodule, consolidation–pneumonia–infiltration, emphysema–pneumothorax, fibrosis–pleural thickening) and 0
elsewhere: it reproduces the *shape* of the published co-occurrence graph, not a published pairwise table
(none is shipped here); fit the copula to the real labels when they are available.

**Images.** Each finding leaves a learnable trace in a small radiograph-like image (enlarged heart, blunted
costophrenic angle, bright spot, hyperlucent lung …); the four opacities (infiltration, consolidation,
pneumonia, edema) share one Gaussian-blob mechanism at different sizes and strengths, so their traces partly
overlap, and the rare classes are the hardest. Numbers measured on this data say nothing about performance on
real chest X-rays.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.optimize import brentq
from scipy.special import owens_t
from scipy.stats import norm

from monai_bayes.data.chestmnist import CHESTMNIST_CLASSES

__all__ = [
    "CHESTMNIST_CLASS_COUNTS",
    "CHESTMNIST_NUM_IMAGES",
    "CHESTMNIST_PREVALENCE",
    "bivariate_upper_orthant",
    "default_correlation",
    "fit_label_copula",
    "sample_chestmnist_labels",
    "write_chestmnist_npz",
]

#: Published image counts per finding in NIH ChestX-ray14 (Wang et al. 2017; 112,120 images), in
#: :data:`CHESTMNIST_CLASSES` order.
CHESTMNIST_CLASS_COUNTS = np.array(
    [11559, 2776, 13317, 19894, 5782, 6331, 1431, 5302, 4667, 2303, 2516, 1686, 3385, 227]
)
#: Number of images those counts refer to.
CHESTMNIST_NUM_IMAGES = 112120
#: Target prevalence per class: the published counts over the image count.
CHESTMNIST_PREVALENCE = CHESTMNIST_CLASS_COUNTS / CHESTMNIST_NUM_IMAGES
_GROUPS = [(0, 2, 3), (1, 9, 2), (4, 5), (8, 6, 3), (10, 7), (11, 12)]


def _nearest_correlation(c: np.ndarray, floor: float = 1e-3) -> np.ndarray:
    """Clip the eigenvalues of a symmetric matrix at ``floor`` and rescale to unit diagonal."""
    w, v = np.linalg.eigh((c + c.T) / 2)
    c = v @ np.diag(np.clip(w, floor, None)) @ v.T
    d = np.sqrt(np.diag(c))
    return c / d[:, None] / d[None, :]


def default_correlation(rho: float = 0.45) -> np.ndarray:
    """The default latent correlation: ``rho`` inside each documented co-occurrence group, 0 elsewhere.

    Parameters
    ----------
    rho : float
        Latent correlation within a group.

    Returns
    -------
    np.ndarray
        ``(14, 14)`` positive-definite correlation matrix.
    """
    c = np.eye(len(CHESTMNIST_CLASSES))
    for g in _GROUPS:
        for i in g:
            for j in g:
                if i != j:
                    c[i, j] = max(c[i, j], rho)
    return _nearest_correlation(c)


def bivariate_upper_orthant(p_a: float, p_b: float, rho: float) -> float:
    """``P(y_a = 1, y_b = 1)`` under the copula: ``P(z_a > t_a, z_b > t_b)``, ``t = Φ⁻¹(1 − p)``.

    Exact, via Owen's T: ``Φ₂(h, k; ρ) = ½Φ(h) + ½Φ(k) − T(h, a_h) − T(k, a_k) − β`` with
    ``a_h = (k − ρh) / (h√(1−ρ²))``, ``a_k = (h − ρk) / (k√(1−ρ²))``, ``β = ½`` when ``hk < 0`` (else 0),
    evaluated at ``h = −t_a``, ``k = −t_b``.

    Parameters
    ----------
    p_a, p_b : float
        Marginal prevalences in ``(0, 1)``, not 0.5 (a zero threshold).
    rho : float
        Latent correlation in ``(−1, 1)``.

    Returns
    -------
    float
        The joint prevalence.
    """
    h, k = norm.ppf(p_a), norm.ppf(p_b)  # -t_a, -t_b
    r = np.sqrt(1 - rho**2)
    beta = 0.5 if h * k < 0 else 0.0
    t_h, t_k = owens_t(h, (k - rho * h) / (h * r)), owens_t(k, (h - rho * k) / (k * r))
    return float(0.5 * norm.cdf(h) + 0.5 * norm.cdf(k) - t_h - t_k - beta)


def fit_label_copula(labels: np.ndarray, bound: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Fit the Gaussian copula to a multi-label matrix by matching every pair's co-occurrence frequency.

    Parameters
    ----------
    labels : np.ndarray
        ``(N, C)`` 0/1 labels (e.g. a real ChestMNIST ``train_labels``); every class needs positives and negatives.
    bound : float
        Latent correlations are searched in ``[−bound, bound]`` (a pair never seen together gets the lower end
        of what its marginals allow).

    Returns
    -------
    tuple of np.ndarray
        ``(prevalence (C,), correlation (C, C))``, the correlation projected to the nearest positive definite one.

    Raises
    ------
    ValueError
        If a class is always or never present.
    """
    y = np.asarray(labels, dtype=float)
    p = y.mean(axis=0)
    if ((p <= 0) | (p >= 1)).any():
        raise ValueError(f"every class needs positives and negatives to fit the copula, prevalences {p}.")
    p = np.where(p == 0.5, 0.5 + 1e-9, p)
    joint = (y.T @ y) / len(y)
    c = np.eye(len(p))
    for a in range(len(p)):
        for b in range(a + 1, len(p)):

            def gap(rho: float, a: int = a, b: int = b) -> float:
                return bivariate_upper_orthant(p[a], p[b], rho) - joint[a, b]

            lo, hi = gap(-bound), gap(bound)
            c[a, b] = c[b, a] = -bound if lo >= 0 else bound if hi <= 0 else brentq(gap, -bound, bound, xtol=1e-6)
    return p, _nearest_correlation(c)


def sample_chestmnist_labels(
    rng: np.random.Generator,
    n: int,
    prevalence: np.ndarray = CHESTMNIST_PREVALENCE,
    correlation: np.ndarray | None = None,
) -> np.ndarray:
    """``(n, C)`` uint8 multi-label matrix drawn from the Gaussian copula (module docstring).

    Every class gets at least one positive when ``n >= C``.

    Parameters
    ----------
    rng : np.random.Generator
        Random source.
    n : int
        Number of images.
    prevalence : np.ndarray
        ``(C,)`` marginal prevalences.
    correlation : np.ndarray, optional
        ``(C, C)`` latent correlation (default: :func:`default_correlation`).

    Returns
    -------
    np.ndarray
        ``(n, C)`` uint8 labels.
    """
    prevalence = np.asarray(prevalence, dtype=float)
    corr = default_correlation() if correlation is None else np.asarray(correlation, dtype=float)
    if corr.shape != (len(prevalence), len(prevalence)):
        raise ValueError(f"correlation must be ({len(prevalence)}, {len(prevalence)}), got {corr.shape}.")
    z = rng.multivariate_normal(np.zeros(len(prevalence)), corr, size=n, method="cholesky")
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
    correlation: np.ndarray | None = None,
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
        ``(14,)`` target class prevalence (default: the published ChestX-ray14 counts).
    correlation
        ``(14, 14)`` latent copula correlation (default :func:`default_correlation`; or from
        :func:`fit_label_copula` on real labels).

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
        labels = sample_chestmnist_labels(rng, n, np.asarray(prevalence, dtype=float), correlation)
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
