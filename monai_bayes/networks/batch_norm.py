"""Batch-norm recalibration for a chosen nested width (seed 001 §5.1).

A width-``w`` sub-network sees different activations than the network was trained with (fewer input
channels, rescaled outputs), so the running statistics of its batch norms are wrong for it. Seed 001
re-collects them "for 1 epoch with the training data (using fewer data is also feasible)".
:func:`recalibrate_batch_norm` does that: it resets the running mean / variance of every batch norm,
runs ``num_batches`` training batches forward with the batch norms in training mode and cumulative
averaging (``momentum=None``, so the result is the plain average over the batches, independent of
their order) and everything else in eval mode, without gradients. Only ``running_mean``,
``running_var`` and ``num_batches_tracked`` change; parameters, other buffers, train/eval flags,
momentum, sampling mode and width are restored.

:class:`~monai_bayes.handlers.BNRecalibrationHandler` runs it from an Ignite / MONAI engine.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from monai.engines.utils import default_prepare_batch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from monai_bayes.layers.base import SAMPLING_MODES, sampling_mode, stochastic_layers
from monai_bayes.layers.nested import nested_width, width_layers
from monai_bayes.utils.random import seeded_global_rng

__all__ = ["batch_norm_layers", "recalibrate_batch_norm"]

logger = logging.getLogger(__name__)


def batch_norm_layers(network: nn.Module) -> list[tuple[str, _BatchNorm]]:
    """Batch norms of ``network`` that keep running statistics.

    Parameters
    ----------
    network : nn.Module
        Any network.

    Returns
    -------
    list of (str, _BatchNorm)
        ``(qualified name, module)`` in module order.
    """
    return [(n, m) for n, m in network.named_modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


@contextmanager
def _statistics_mode(network: nn.Module, norms: list[tuple[str, _BatchNorm]]) -> Iterator[None]:
    """Everything in eval mode except the batch norms, which accumulate a cumulative average."""
    flags = {m: m.training for m in network.modules()}
    momenta = {m: m.momentum for _, m in norms}
    network.eval()
    for _, m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    try:
        yield
    finally:
        for module, flag in flags.items():
            module.training = flag
        for m, momentum in momenta.items():
            m.momentum = momentum


def recalibrate_batch_norm(
    network: nn.Module,
    data: Iterable[Any],
    *,
    num_batches: int | None = None,
    width: int | None = None,
    mode: str = "sample",
    device: torch.device | str | None = None,
    prepare_batch: Callable[..., Any] = default_prepare_batch,
    seed: int | None = None,
) -> int:
    """Re-estimate the running statistics of every batch norm of ``network`` from ``data``.

    This is the idea of :func:`torch.optim.swa_utils.update_bn` (reset the statistics, set
    ``momentum=None`` for a cumulative average, run the data forward without gradients). We do not
    call it because stochastic networks need more: ``update_bn`` puts the *whole* model in training
    mode, so its dropout layers drop activations during the passes, while here only the batch norms
    train and everything else stays in eval mode; the passes run at a fixed nested ``width`` and
    sampling ``mode``, for at most ``num_batches`` batches, with an optional seeded RNG; batches go
    through MONAI's ``prepare_batch`` (dict batches; ``update_bn`` takes tensors or ``(input, ...)``
    sequences); and every module's own train/eval flag, the width and the sampling mode are restored
    afterwards (``update_bn`` sets the whole model back to the root's flag).

    Parameters
    ----------
    network : nn.Module
        Any network; nested layers run at ``width`` (or their current width when ``None``).
    data : Iterable
        Training batches (a ``DataLoader``; dict batches with ``"image"`` or ``(image, label)`` pairs).
    num_batches : int, optional
        Batches to use (default: all of ``data``, i.e. one epoch as in seed 001).
    width : int, optional
        Nested width (number of kept channel groups) to recalibrate for; requires nested layers.
    mode : str
        Sampling mode of the stochastic layers during the passes: ``"sample"`` (default; the
        activations MC inference will see: Downhill mask unless a width is fixed, weight noise) or
        ``"mean"`` (the deterministic width-``w`` network).
    device : torch.device or str, optional
        Where to run (default: the network's device).
    prepare_batch : Callable
        MONAI-style ``prepare_batch(batch, device, non_blocking)`` returning ``(inputs, ...)``.
    seed : int, optional
        If given, the passes draw their noise from a forked RNG seeded with it (reproducible
        statistics in ``"sample"`` mode; the global RNG state is left as it was).

    Returns
    -------
    int
        The number of batches used (0 if the network has no batch norm with running statistics).

    Raises
    ------
    ValueError
        For a bad ``num_batches`` / ``mode``, a ``width`` without nested layers, or empty ``data``.
    """
    if num_batches is not None and (not isinstance(num_batches, int) or num_batches < 1):
        raise ValueError(f"num_batches must be a positive int or None, got {num_batches!r}.")
    if mode not in SAMPLING_MODES:
        raise ValueError(f"mode must be one of {SAMPLING_MODES}, got {mode!r}.")
    if width is not None and not width_layers(network):
        raise ValueError(f"width={width} needs a nested network (to_nested), {type(network).__name__} has none.")
    norms = batch_norm_layers(network)
    if not norms:
        logger.warning("recalibrate_batch_norm: %s has no batch norm with running statistics.", type(network).__name__)
        return 0
    if device is None:
        device = next(network.parameters()).device
    used = 0
    with ExitStack() as stack:
        if width is not None:
            stack.enter_context(nested_width(network, width))
        if stochastic_layers(network):
            stack.enter_context(sampling_mode(network, mode))
        stack.enter_context(_statistics_mode(network, norms))
        stack.enter_context(torch.no_grad())
        stack.enter_context(seeded_global_rng(seed, device))
        for batch in data:
            if num_batches is not None and used >= num_batches:
                break
            inputs = prepare_batch(batch, device, False)[0]
            network(inputs)
            used += 1
    if used == 0:
        raise ValueError("recalibrate_batch_norm: data yielded no batch.")
    logger.info("recalibrated %d batch norm(s) over %d batch(es) at width %s", len(norms), used, width)
    return used
