"""Multi-label classification metrics (ChestMNIST): per-class AP and AUROC, accuracy, ECE, NLL, uncertainty.

Inputs are NumPy arrays on the host (a test set of a few thousand images × 14 labels); predictions are either
``(N, C)`` probabilities or ``(N, S, C)`` Monte-Carlo samples of per-label sigmoid probabilities.

* AP: the step-wise average precision ``Σ_n (R_n − R_{n−1}) P_n`` over distinct thresholds (scikit-learn /
  torchmetrics convention); AUROC: Mann–Whitney ``U / (n₊ n₋)`` with ties counted ½.
* accuracy: fraction of correct label decisions at ``p ≥ 0.5`` over all ``N × C`` entries (MedMNIST's
  multi-label ACC).
* ECE: 15 equal-width bins pooled over all ``N × C`` entries (torchmetrics' binary ECE,
  :func:`~monai_bayes.metrics.calibration.compute_pooled_calibration_error`).
* NLL: mean binary cross-entropy of the predictive mean.
* per-image uncertainty (nats, summed over labels): predictive entropy ``Σ_c H[p̄_c]``, mutual information
  ``Σ_c (H[p̄_c] − E_s H[p_{s,c}])`` (:mod:`monai_bayes.uncertainty`, sigmoid convention), and sample
  disagreement ``mean_c std_s p_{s,c}``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import stats

from monai_bayes.metrics.calibration import compute_pooled_calibration_error
from monai_bayes.uncertainty import uncertainty_maps

__all__ = ["auroc", "average_precision", "image_uncertainty", "multilabel_metrics"]


def _check_labels(labels: np.ndarray, name: str = "labels") -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2 or (labels.size and not np.isin(labels, (0, 1)).all()):
        raise ValueError(f"{name} must be an (N, C) 0/1 multi-label matrix, got shape {labels.shape}.")
    return labels.astype(bool)


def average_precision(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Per-class average precision ``AP = Σ_n (R_n − R_{n−1}) P_n`` over the distinct score thresholds.

    The step-wise (non-interpolated) AP of scikit-learn / torchmetrics: tied scores form one threshold.

    Parameters
    ----------
    labels : np.ndarray
        ``(N, C)`` 0/1 ground truth.
    scores : np.ndarray
        ``(N, C)`` scores (probabilities); higher means more likely positive.

    Returns
    -------
    np.ndarray
        ``(C,)`` AP in ``[0, 1]``; NaN for a class without positives.

    Raises
    ------
    ValueError
        If the shapes differ or ``labels`` is not 0/1.
    """
    y = _check_labels(labels)
    s = np.asarray(scores, dtype=float)
    if s.shape != y.shape:
        raise ValueError(f"scores {s.shape} and labels {y.shape} must have the same (N, C) shape.")
    out = np.full(y.shape[1], np.nan)
    for c in range(y.shape[1]):
        npos = int(y[:, c].sum())
        if npos == 0:
            continue
        order = np.argsort(-s[:, c], kind="stable")
        sc, yc = s[order, c], y[order, c]
        last = np.r_[np.flatnonzero(np.diff(sc) != 0), len(sc) - 1]  # last index of each tied group
        tp = np.cumsum(yc)[last]
        precision = tp / (last + 1)
        recall = tp / npos
        out[c] = float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
    return out


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve of a binary problem (Mann–Whitney U / (n₊ n₋), ties count ½).

    Parameters
    ----------
    labels : np.ndarray
        ``(N,)`` 0/1 (or bool) ground truth.
    scores : np.ndarray
        ``(N,)`` scores, higher meaning positive.

    Returns
    -------
    float
        AUROC in ``[0, 1]``; NaN if one class is empty.
    """
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, dtype=float).ravel()
    npos, nneg = int(y.sum()), int((~y).sum())
    if npos == 0 or nneg == 0:
        return math.nan
    ranks = stats.rankdata(s)  # average ranks for ties
    return float((ranks[y].sum() - npos * (npos + 1) / 2) / (npos * nneg))


def image_uncertainty(samples: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image uncertainty of ``(N, S, C)`` sigmoid probability samples, summed / averaged over labels.

    Parameters
    ----------
    samples : np.ndarray
        ``(N, S, C)`` probabilities of ``S`` Monte-Carlo samples (``S = 1`` gives zero MI and disagreement).

    Returns
    -------
    dict of str to np.ndarray
        ``{"entropy": (N,), "mutual_information": (N,), "disagreement": (N,)}`` (nats, nats, probability).
    """
    p = torch.as_tensor(np.asarray(samples, dtype=np.float64))
    if p.dim() != 3:
        raise ValueError(f"samples must be (N, S, C), got {tuple(p.shape)}.")
    maps = uncertainty_maps(p, "sigmoid")
    return {
        "entropy": maps["total"].sum(dim=1).numpy(),
        "mutual_information": maps["epistemic"].sum(dim=1).numpy(),
        "disagreement": p.std(dim=1, unbiased=False).mean(dim=1).numpy(),
    }


def multilabel_metrics(labels: np.ndarray, samples: np.ndarray, num_bins: int = 15) -> dict[str, object]:
    """Every classification metric of the ChestMNIST bundle (module docstring).

    Parameters
    ----------
    labels : np.ndarray
        ``(N, C)`` 0/1 ground truth.
    samples : np.ndarray
        ``(N, S, C)`` sigmoid probability samples (or ``(N, C)`` for one deterministic prediction).
    num_bins : int
        ECE bins.

    Returns
    -------
    dict
        ``AP`` and ``AUROC`` ``(C,)`` arrays, scalars ``mAP``, ``mean_AUROC``, ``accuracy``, ``ECE``, ``NLL``,
        ``mean_entropy``, ``mean_MI``, and the per-image uncertainty arrays (:func:`image_uncertainty`).
    """
    y = _check_labels(labels)
    s = np.asarray(samples, dtype=np.float64)
    s = s[:, None] if s.ndim == 2 else s
    if s.shape[0] != y.shape[0] or s.shape[2] != y.shape[1]:
        raise ValueError(f"samples {s.shape} must be (N, S, C) for labels {y.shape}.")
    mean = s.mean(axis=1)
    ap = average_precision(y, mean)
    roc = np.array([auroc(y[:, c], mean[:, c]) for c in range(y.shape[1])])
    eps = 1e-7
    pm = np.clip(mean, eps, 1 - eps)
    nll = float(-(y * np.log(pm) + (~y) * np.log(1 - pm)).mean())
    ece = compute_pooled_calibration_error(
        torch.as_tensor(mean.reshape(1, 1, -1)), torch.as_tensor(y.reshape(1, 1, -1).astype(np.float64)), num_bins
    )
    unc = image_uncertainty(s)
    return {
        "AP": ap,
        "AUROC": roc,
        "mAP": float(np.nanmean(ap)),
        "mean_AUROC": float(np.nanmean(roc)),
        "accuracy": float(((mean >= 0.5) == y).mean()),
        "ECE": float(ece[0]),
        "NLL": nll,
        "mean_entropy": float(unc["entropy"].mean()),
        "mean_MI": float(unc["mutual_information"].mean()),
        **unc,
    }
