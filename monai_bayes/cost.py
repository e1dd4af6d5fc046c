"""Training-cost accounting: parameter counts and FLOPs of a training step."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from monai_bayes.layers.base import stochastic_layers

__all__ = ["count_flops", "count_parameters"]


def count_parameters(network: nn.Module) -> dict[str, int]:
    """Parameter counts of ``network``.

    Returns
    -------
    ``{"total": all trainable tensors' entries (means, ρ, ...), "bayesian": Bayesian weight entries
    (k; each has a mean and a ρ), "deterministic": total − 2·bayesian}``.
    """
    total = sum(p.numel() for p in network.parameters())
    bayes = sum(getattr(layer, "num_bayes", lambda: 0)() for _, layer in stochastic_layers(network))
    return {"total": total, "bayesian": bayes, "deterministic": total - 2 * bayes}


def count_flops(step: Callable[[], object]) -> int:
    """Floating-point operations counted by :class:`torch.utils.flop_counter.FlopCounterMode` while
    running ``step()`` (e.g. one forward + backward). Counts matmul/conv-type operators (the
    dominant cost); element-wise operations are not counted.
    """
    with FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())
