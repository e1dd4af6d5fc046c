"""Pruning impact on a segmentation network, per structure-size bin (issue 18, beyond seed 003).

The classification maths of :mod:`monai_bayes.pruning.analysis` carries over with *class* replaced by
*structure-size bin* and *per-class AP* replaced by *per-bin mean Dice*:

* every test case ``n`` gets a size from its reference mask: the **equivalent diameter**
  ``d_n = 2 √(A_n / π)`` in mm, with ``A_n`` the foreground area (pixels × row spacing × column spacing), i.e.
  the diameter of the disc of the same area (:func:`equivalent_diameter_mm`); cases are binned by
  ``np.digitize(d, edges)`` into ``B = len(edges) + 1`` bins ``[edges[b-1], edges[b])``
  (:func:`size_bins`); a case whose reference is empty (no structure, Dice undefined) gets bin ``-1`` and is
  left out;
* each of the ``R`` trained networks is pruned to each sparsity ``k`` (global L1,
  :func:`~monai_bayes.pruning.prune.pruned_copy`), predicts a hard foreground mask per case
  (:func:`predict_foreground`: channel argmax, or sigmoid > 0.5 for a one-channel output), and the per-case
  Dice ``2|P ∩ G| / (|P| + |G|)`` comes from :func:`monai.metrics.compute_dice` (:func:`per_case_dice`);
* the quality matrix ``Q[r, k, b]`` is the mean Dice of run ``r`` at sparsity ``k`` over the cases of bin
  ``b`` (:func:`per_bin_mean`; NaN for an empty bin) — the ``(R, K, C)`` array that
  :func:`~monai_bayes.pruning.analysis.forgettability_curves`, ``welch_mean_ap``, ``first_forgotten_k`` and
  ``frequency_correlation`` take in place of per-class AP.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.metrics import compute_dice
from torch import nn

from monai_bayes.pruning.prune import pruned_copy, sparsity

__all__ = [
    "SegmentationPruningSweep",
    "equivalent_diameter_mm",
    "per_bin_mean",
    "per_case_dice",
    "predict_foreground",
    "segmentation_pruning_sweep",
    "size_bins",
]

#: ``(model, images (N, 1, H, W)) → (N, 1, H, W)`` 0/1 foreground masks
Predictor = Callable[[nn.Module, torch.Tensor], torch.Tensor]


def equivalent_diameter_mm(masks: np.ndarray | torch.Tensor, spacing_mm: np.ndarray | Sequence[float]) -> np.ndarray:
    """Equivalent diameter ``2 √(A / π)`` of each reference mask, ``A`` = foreground area in mm².

    Parameters
    ----------
    masks : np.ndarray or torch.Tensor
        ``(N, H, W)`` or ``(N, 1, H, W)`` binary reference masks.
    spacing_mm : np.ndarray or sequence of float
        ``(2,)`` one (row, column) pixel spacing in mm for all cases, or ``(N, 2)`` one per case.

    Returns
    -------
    np.ndarray
        ``(N,)`` diameters in mm (0 for an empty mask).

    Raises
    ------
    ValueError
        If the masks are not 3-D / 4-D with one channel, or the spacing is not ``(2,)`` or ``(N, 2)``.
    """
    m = np.asarray(masks.cpu() if isinstance(masks, torch.Tensor) else masks)
    if m.ndim == 4 and m.shape[1] == 1:
        m = m[:, 0]
    if m.ndim != 3:
        raise ValueError(f"masks must be (N, H, W) or (N, 1, H, W), got shape {m.shape}.")
    sp = np.asarray(spacing_mm, dtype=float)
    sp = np.broadcast_to(sp, (len(m), 2)) if sp.shape == (2,) else sp
    if sp.shape != (len(m), 2):
        raise ValueError(f"spacing_mm must be (2,) or ({len(m)}, 2) in mm, got shape {sp.shape}.")
    area = (m > 0).reshape(len(m), -1).sum(axis=1) * sp[:, 0] * sp[:, 1]
    return 2.0 * np.sqrt(area / np.pi)


def size_bins(sizes: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Bin index of each case: ``b`` with ``edges[b-1] <= size < edges[b]``; ``-1`` for size 0 (no structure).

    Parameters
    ----------
    sizes : np.ndarray
        ``(N,)`` non-negative sizes (e.g. :func:`equivalent_diameter_mm`, mm).
    edges : sequence of float
        ``B - 1`` increasing positive inner edges (same unit); bin 0 is ``(0, edges[0])``, bin ``B-1`` is
        ``[edges[-1], ∞)``.

    Returns
    -------
    np.ndarray
        ``(N,)`` int bin indices in ``{-1, 0, …, B-1}``.

    Raises
    ------
    ValueError
        If the edges are not increasing and positive or a size is negative.
    """
    e = np.asarray(edges, dtype=float)
    s = np.asarray(sizes, dtype=float)
    if e.ndim != 1 or (e <= 0).any() or (np.diff(e) <= 0).any():
        raise ValueError(f"edges must be increasing positive numbers, got {list(e)}.")
    if (s < 0).any():
        raise ValueError("sizes must be non-negative.")
    return np.where(s > 0, np.digitize(s, e), -1).astype(int)


def per_bin_mean(values: np.ndarray, bins: np.ndarray, num_bins: int) -> np.ndarray:
    """Mean of ``values`` over the cases of each bin (NaN values skipped; NaN for an empty bin).

    Parameters
    ----------
    values : np.ndarray
        ``(..., N)`` per-case values (e.g. Dice ``(R, K, N)``).
    bins : np.ndarray
        ``(N,)`` bin indices from :func:`size_bins` (``-1`` = left out).
    num_bins : int
        ``B``.

    Returns
    -------
    np.ndarray
        ``(..., B)`` per-bin means.

    Raises
    ------
    ValueError
        If ``bins`` does not match the last axis of ``values``.
    """
    v = np.asarray(values, dtype=float)
    b = np.asarray(bins)
    if b.shape != v.shape[-1:]:
        raise ValueError(f"bins {b.shape} must match the last axis of values {v.shape}.")
    out = np.full((*v.shape[:-1], num_bins), np.nan)
    for i in range(num_bins):
        sel = v[..., b == i]
        if sel.size and np.isfinite(sel).any():
            with warnings.catch_warnings():  # an all-NaN row of one run / sparsity stays NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                out[..., i] = np.nanmean(sel, axis=-1)
    return out


@torch.no_grad()
def predict_foreground(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Hard foreground mask of a segmentation network in eval mode.

    Parameters
    ----------
    model : nn.Module
        ``(N, 1, H, W) → (N, C, H, W)`` logits: ``C >= 2`` classes (foreground = channel argmax is not 0) or
        ``C = 1`` (foreground = sigmoid > 0.5).
    images : torch.Tensor
        ``(N, 1, H, W)`` images.

    Returns
    -------
    torch.Tensor
        ``(N, 1, H, W)`` float 0/1 mask.
    """
    was_training = model.training
    model.eval()
    try:
        logits = model(images)
    finally:
        model.train(was_training)
    fg = logits[:, :1] > 0 if logits.shape[1] == 1 else logits.argmax(dim=1, keepdim=True) > 0
    return fg.float()


def per_case_dice(pred: torch.Tensor, reference: torch.Tensor) -> np.ndarray:
    """Foreground Dice ``2|P ∩ G| / (|P| + |G|)`` per case (``monai.metrics.compute_dice``).

    Parameters
    ----------
    pred : torch.Tensor
        ``(N, 1, H, W)`` 0/1 predicted masks.
    reference : torch.Tensor
        ``(N, 1, H, W)`` 0/1 reference masks.

    Returns
    -------
    np.ndarray
        ``(N,)`` Dice in ``[0, 1]``; NaN where the reference is empty (Dice undefined, MONAI ``ignore_empty``).
    """
    dice = compute_dice(pred.float(), reference.float(), include_background=True, ignore_empty=True)
    return dice[:, 0].cpu().numpy().astype(float)


@dataclass
class SegmentationPruningSweep:
    """Per-case Dice of ``R`` runs at ``K`` sparsities on ``N`` cases, and its per-size-bin means."""

    sparsities: np.ndarray  #: (K,) requested sparsities, 0 first
    dice: np.ndarray  #: (R, K, N) per-case foreground Dice (NaN for an empty reference)
    bins: np.ndarray  #: (N,) size bin of each case (-1 = left out)
    quality: np.ndarray  #: (R, K, B) mean Dice per size bin: the ``ap`` argument of the analysis functions
    counts: np.ndarray  #: (B,) cases per bin
    reached: np.ndarray  #: (R, K) sparsity measured on the pruned weights
    seconds: float  #: wall time of the sweep


def segmentation_pruning_sweep(
    models: Sequence[nn.Module],
    images: torch.Tensor,
    reference: torch.Tensor,
    bins: np.ndarray,
    num_bins: int,
    sparsities: Sequence[float],
    predict: Predictor = predict_foreground,
    batch_size: int = 16,
) -> SegmentationPruningSweep:
    """Prune each trained segmentation network to each sparsity; per-case Dice and per-bin mean Dice.

    Parameters
    ----------
    models : sequence of nn.Module
        ``R`` trained networks (left unchanged; each ``k`` prunes a copy). For ``R = 1`` plus a posterior
        mean, pass its deterministic posterior-mean network.
    images : torch.Tensor
        ``(N, 1, H, W)`` test images on the models' device.
    reference : torch.Tensor
        ``(N, 1, H, W)`` 0/1 reference masks.
    bins : np.ndarray
        ``(N,)`` size bins from :func:`size_bins`.
    num_bins : int
        ``B``.
    sparsities : sequence of float
        ``K`` increasing sparsities in ``[0, 1)``, starting at 0.
    predict : callable
        ``(model, images) → (N, 1, H, W)`` 0/1 masks (default :func:`predict_foreground`).
    batch_size : int
        Cases per forward pass.

    Returns
    -------
    SegmentationPruningSweep
        Dice ``(R, K, N)``, per-bin quality ``(R, K, B)``, bin counts, measured sparsity and wall time.

    Raises
    ------
    ValueError
        If ``models`` is empty, ``sparsities`` does not increase from 0, or the shapes disagree.
    """
    ks = np.asarray(sparsities, dtype=float)
    if not len(models):
        raise ValueError("segmentation_pruning_sweep needs at least one trained model.")
    if ks.ndim != 1 or len(ks) < 2 or ks[0] != 0.0 or (np.diff(ks) <= 0).any():
        raise ValueError(f"sparsities must increase from 0 (the unpruned reference), got {list(ks)}.")
    if images.shape[0] != reference.shape[0] or len(bins) != images.shape[0]:
        raise ValueError(
            f"images {tuple(images.shape)}, reference {tuple(reference.shape)} and bins ({len(bins)},) "
            "must have the same number of cases."
        )
    start = time.perf_counter()
    dice = np.zeros((len(models), len(ks), images.shape[0]))
    reached = np.zeros((len(models), len(ks)))
    for r, model in enumerate(models):
        for i, k in enumerate(ks):
            pruned = pruned_copy(model, float(k))
            reached[r, i] = sparsity(pruned)
            pred = torch.cat([predict(pruned, images[j : j + batch_size]) for j in range(0, len(images), batch_size)])
            dice[r, i] = per_case_dice(pred, reference)
    seconds = time.perf_counter() - start
    b = np.asarray(bins, dtype=int)
    counts = np.array([int((b == i).sum()) for i in range(num_bins)])
    return SegmentationPruningSweep(ks, dice, b, per_bin_mean(dice, b, num_bins), counts, reached, seconds)
