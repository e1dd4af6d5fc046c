"""Global unstructured L1 (magnitude) pruning (seed 003 §2.1), on top of ``torch.nn.utils.prune``.

A fraction ``k`` of the prunable weights with the smallest magnitude, ranked *globally* over all prunable
tensors, is set to zero (Zhu & Gupta 2017; Hooker et al. 2019; PruneCXR). The ranking and the masks are
``torch.nn.utils.prune.global_unstructured`` with ``L1Unstructured``; this module only chooses the
tensors (the weights of every Conv / ConvTranspose / Linear layer, :func:`prunable_parameters`), makes the
masks permanent (``prune.remove``: the zeros are written into ``weight``, so they stay zero at evaluation and
in a saved state dict) and measures the result.

``global_unstructured`` prunes ``round(k · N)`` of the ``N`` prunable entries (its
``_compute_nparams_toprune``), so :func:`global_l1_prune` reaches sparsity ``round(k·N)/N`` exactly.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils import prune

from monai_bayes.layers.candidates import candidate_modules

__all__ = ["global_l1_prune", "prunable_parameters", "pruned_copy", "sparsity", "weight_magnitudes"]

#: a (module, parameter name) pair as torch.nn.utils.prune expects it
PrunableParameter = tuple[nn.Module, str]


def prunable_parameters(model: nn.Module) -> list[PrunableParameter]:
    """The tensors global L1 pruning ranks: ``weight`` of every Conv / ConvTranspose / Linear module.

    Biases and normalisation layers are left alone (PruneCXR / Hooker et al. prune conv and dense weights).

    Parameters
    ----------
    model : nn.Module
        The network.

    Returns
    -------
    list of (nn.Module, str)
        ``(module, "weight")`` pairs in ``named_modules`` order, as ``prune.global_unstructured`` takes them.

    Raises
    ------
    ValueError
        If the network has no Conv / ConvTranspose / Linear weight.
    """
    modules = candidate_modules(model, what="prunable")
    params = [(m, "weight") for m in modules.values() if isinstance(getattr(m, "weight", None), nn.Parameter)]
    if not params:
        raise ValueError(
            f"{type(model).__name__} has no Conv/ConvTranspose/Linear weight to prune (a converted Bayesian network: "
            "prune its posterior mean, networks.to_deterministic(model))."
        )
    return params


def _check_sparsity(k: float) -> float:
    if not isinstance(k, (int, float)) or isinstance(k, bool) or not 0.0 <= float(k) < 1.0:
        raise ValueError(f"sparsity must be a number in [0, 1), got {k!r}.")
    return float(k)


def global_l1_prune(
    model: nn.Module, sparsity: float, parameters: Sequence[PrunableParameter] | None = None
) -> nn.Module:
    """Zero the ``round(sparsity · N)`` smallest-magnitude prunable weights of ``model`` in place.

    Parameters
    ----------
    model : nn.Module
        The network (changed in place).
    sparsity : float
        ``k`` in ``[0, 1)``: the fraction of the ``N`` prunable entries to zero.
    parameters : sequence of (nn.Module, str), optional
        The tensors to rank together (default: :func:`prunable_parameters`).

    Returns
    -------
    nn.Module
        ``model``, with the zeros written into its weights (no ``weight_orig`` / ``weight_mask`` left).

    Raises
    ------
    ValueError
        If ``sparsity`` is outside ``[0, 1)``.
    """
    k = _check_sparsity(sparsity)
    params = list(parameters) if parameters is not None else prunable_parameters(model)
    if k == 0.0:
        return model
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=k)
    for module, name in params:
        prune.remove(module, name)  # weight <- weight_orig * mask: permanent zeros
    return model


def pruned_copy(model: nn.Module, sparsity: float) -> nn.Module:
    """A deep copy of ``model`` pruned to ``sparsity`` (the original is untouched).

    Parameters
    ----------
    model : nn.Module
        The trained network.
    sparsity : float
        ``k`` in ``[0, 1)``.

    Returns
    -------
    nn.Module
        The pruned copy, in ``eval`` mode if ``model`` was.
    """
    return global_l1_prune(copy.deepcopy(model), sparsity)


def sparsity(model: nn.Module, parameters: Sequence[PrunableParameter] | None = None) -> float:
    """Fraction of exactly-zero entries over the prunable weights.

    Parameters
    ----------
    model : nn.Module
        The network.
    parameters : sequence of (nn.Module, str), optional
        The tensors to count (default: :func:`prunable_parameters`).

    Returns
    -------
    float
        ``#zeros / #entries`` in ``[0, 1]``.
    """
    params = list(parameters) if parameters is not None else prunable_parameters(model)
    tensors = [getattr(m, n) for m, n in params]
    zeros = sum(int((t == 0).sum()) for t in tensors)
    return zeros / max(sum(t.numel() for t in tensors), 1)


def weight_magnitudes(model: nn.Module) -> torch.Tensor:
    """``|w|`` of every prunable entry, flattened (the seed's Fig. 1 right histogram).

    Parameters
    ----------
    model : nn.Module
        The network.

    Returns
    -------
    torch.Tensor
        ``(N,)`` float magnitudes, detached, on the weights' device.
    """
    return torch.cat([getattr(m, n).detach().abs().flatten() for m, n in prunable_parameters(model)])
