"""A pruning sweep: every trained run × every sparsity, inference only (seed 003 §2.2).

Each of the ``R`` trained models is pruned to each sparsity ``k`` (a fresh copy per ``k``, pruned by
:func:`~monai_bayes.pruning.prune.global_l1_prune`) and evaluated on the same test images. No training
happens in the sweep: its cost is ``R · K`` forward passes over the test set plus the magnitude ranking, which
``benchmarks/pruning_sweep.py`` measures against one training run.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from monai_bayes.pruning.analysis import average_precision
from monai_bayes.pruning.prune import pruned_copy, sparsity

__all__ = ["DEFAULT_SPARSITIES", "PruningSweep", "predict_probabilities", "pruning_sweep"]

#: k ∈ {0, 0.05, …, 0.95} (the seed's 20 sparsities)
DEFAULT_SPARSITIES: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(20))


@torch.no_grad()
def predict_probabilities(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Sigmoid probabilities of a multi-label classifier, in eval mode, batch by batch.

    Parameters
    ----------
    model : nn.Module
        ``(B, 1, H, W) → (B, C)`` logits.
    images : torch.Tensor
        ``(N, 1, H, W)`` test images on the model's device.
    batch_size : int
        Images per forward pass.

    Returns
    -------
    torch.Tensor
        ``(N, C)`` probabilities in ``[0, 1]``.
    """
    was_training = model.training
    model.eval()
    try:
        return torch.cat([torch.sigmoid(model(images[i : i + batch_size])) for i in range(0, len(images), batch_size)])
    finally:
        model.train(was_training)


@dataclass
class PruningSweep:
    """The predictions and per-class AP of ``R`` runs at ``K`` sparsities on ``N`` test images."""

    sparsities: np.ndarray  #: (K,) requested sparsities, 0 first
    probs: np.ndarray  #: (R, K, N, C) sigmoid probabilities
    labels: np.ndarray  #: (N, C) 0/1 test labels
    ap: np.ndarray  #: (R, K, C) per-class average precision
    reached: np.ndarray  #: (R, K) sparsity measured on the pruned weights
    seconds: float  #: wall time of the whole sweep

    def mean_predictions(self, k_index: int) -> np.ndarray:
        """``(N, C)`` run-averaged predictions at sparsity index ``k_index`` (the PIE inputs).

        Parameters
        ----------
        k_index : int
            Index into :attr:`sparsities`.

        Returns
        -------
        np.ndarray
            ``(N, C)`` mean over runs.
        """
        return self.probs[:, k_index].mean(axis=0)


def pruning_sweep(
    models: Sequence[nn.Module],
    images: torch.Tensor,
    labels: torch.Tensor | np.ndarray,
    sparsities: Sequence[float] = DEFAULT_SPARSITIES,
    batch_size: int = 256,
) -> PruningSweep:
    """Prune each trained model to each sparsity and record probabilities and per-class AP.

    Parameters
    ----------
    models : sequence of nn.Module
        ``R`` independently trained networks (left unchanged; each ``k`` prunes a copy).
    images : torch.Tensor
        ``(N, 1, H, W)`` test images on the models' device.
    labels : torch.Tensor or np.ndarray
        ``(N, C)`` 0/1 test labels.
    sparsities : sequence of float
        ``K`` increasing sparsities in ``[0, 1)``, starting at 0.
    batch_size : int
        Images per forward pass.

    Returns
    -------
    PruningSweep
        Probabilities ``(R, K, N, C)``, AP ``(R, K, C)``, the measured sparsity and the wall time.

    Raises
    ------
    ValueError
        If ``models`` is empty or ``sparsities`` does not start at 0 or is not increasing.
    """
    ks = np.asarray(sparsities, dtype=float)
    if not len(models):
        raise ValueError("pruning_sweep needs at least one trained model.")
    if ks.ndim != 1 or len(ks) < 2 or ks[0] != 0.0 or (np.diff(ks) <= 0).any():
        raise ValueError(f"sparsities must increase from 0 (the unpruned reference), got {list(ks)}.")
    y = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels).astype(np.uint8)
    start = time.perf_counter()
    probs = np.zeros((len(models), len(ks), len(images), y.shape[1]), dtype=np.float32)
    reached = np.zeros((len(models), len(ks)))
    for r, model in enumerate(models):
        for i, k in enumerate(ks):
            pruned = pruned_copy(model, float(k))
            reached[r, i] = sparsity(pruned)
            probs[r, i] = predict_probabilities(pruned, images, batch_size).cpu().numpy()
    seconds = time.perf_counter() - start
    ap = np.stack([[average_precision(y, probs[r, i]) for i in range(len(ks))] for r in range(len(models))])
    return PruningSweep(ks, probs, y, ap, reached, seconds)
