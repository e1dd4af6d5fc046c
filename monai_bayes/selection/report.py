"""Where did the Bayesian weights land? Per-layer counts for a converted network."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

from monai_bayes.layers.candidates import candidate_modules
from monai_bayes.layers.partial import PartialBayesLayer

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


def format_selection_report(rows: list[LayerSelection]) -> str:
    """A fixed-width text table of :func:`selection_report` rows plus the total."""
    width = max([len(r.layer) for r in rows] + [5])
    lines = [f"{'layer':<{width}}  {'type':<16} {'bayes':>9} {'params':>10} {'%':>7}"]
    for r in rows:
        lines.append(f"{r.layer:<{width}}  {r.layer_type:<16} {r.num_bayes:>9} {r.num_params:>10} {r.percent:>6.2f}%")
    n_bayes, n_params = sum(r.num_bayes for r in rows), sum(r.num_params for r in rows)
    share = 100.0 * n_bayes / n_params if n_params else 0.0
    lines.append(f"{'total':<{width}}  {'':<16} {n_bayes:>9} {n_params:>10} {share:>6.2f}%")
    return "\n".join(lines)
