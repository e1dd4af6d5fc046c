"""Where did the Bayesian weights land? Per-layer counts for a converted network."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

from monai_bayes.layers.candidates import candidate_modules
from monai_bayes.layers.partial import PartialBayesLayer
from monai_bayes.layers.shared_prefix import MCCostSplit

__all__ = ["LayerSelection", "format_selection_report", "selection_report"]


@dataclass(frozen=True)
class LayerSelection:
    """Bayesian entries of one layer: ``num_bayes`` of ``num_params`` (weights + biases)."""

    layer: str
    layer_type: str
    num_bayes: int
    num_params: int

    @property
    def percent(self) -> float:
        """Share of this layer's entries that are Bayesian, in %."""
        return 100.0 * self.num_bayes / self.num_params if self.num_params else 0.0

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "percent": self.percent}


def selection_report(network: nn.Module) -> list[LayerSelection]:
    """One row per conv / transposed-conv / linear layer, in module order (deterministic layers give 0)."""
    rows = []
    plain = _plain_candidates(network)
    for name, module in network.named_modules():
        if isinstance(module, PartialBayesLayer):
            base = module._base_type.__name__
            n_bayes = module.num_bayes()
        elif name in plain:
            base, n_bayes = type(module).__name__, 0
        else:
            continue
        n_params = sum(p.numel() for p in (module.weight, module.bias) if p is not None)
        rows.append(LayerSelection(name, base, n_bayes, n_params))
    return rows


def _plain_candidates(network: nn.Module) -> set[str]:
    try:
        return set(candidate_modules(network))
    except ValueError:
        return set()


def format_selection_report(
    rows: list[LayerSelection], mc_cost: MCCostSplit | None = None, num_samples: tuple[int, ...] = (8, 16)
) -> str:
    """A fixed-width text table of :func:`selection_report` rows plus the total.

    Parameters
    ----------
    rows : list of LayerSelection
        From :func:`selection_report`.
    mc_cost : MCCostSplit, optional
        From :func:`~monai_bayes.layers.mc_cost_split` on the converted network: adds the share of
        MACs before the first stochastic layer and, per ``S`` in ``num_samples``, the predicted cost
        of an ``S``-sample call with shared prefix in units of ``S`` deterministic forwards.
    num_samples : tuple of int
        Sample counts for the predicted cost.

    Returns
    -------
    str
        The table (one line per row, then the total, then the cost lines).
    """
    width = max([len(r.layer) for r in rows] + [5])
    lines = [f"{'layer':<{width}}  {'type':<16} {'bayes':>9} {'params':>10} {'%':>7}"]
    for r in rows:
        lines.append(f"{r.layer:<{width}}  {r.layer_type:<16} {r.num_bayes:>9} {r.num_params:>10} {r.percent:>6.2f}%")
    n_bayes, n_params = sum(r.num_bayes for r in rows), sum(r.num_params for r in rows)
    share = 100.0 * n_bayes / n_params if n_params else 0.0
    lines.append(f"{'total':<{width}}  {'':<16} {n_bayes:>9} {n_params:>10} {share:>6.2f}%")
    if mc_cost is not None:
        prefix = 100.0 * mc_cost.prefix_macs / mc_cost.total_macs if mc_cost.total_macs else 0.0
        lines.append(f"MACs before the first stochastic layer (computed once per MC call): {prefix:.1f}%")
        for s in num_samples:
            lines.append(f"predicted MC cost, S={s}: {mc_cost.predicted_cost(s):.3f} x ({s} x deterministic forward)")
    return "\n".join(lines)
