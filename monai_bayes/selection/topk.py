"""Top-k selection of Bayesian entries from per-parameter scores (seed 000, SBN §2.2 step 2).

Scores are a mapping ``{parameter name: tensor shaped like the parameter}`` (e.g. accumulated
``|∇θ|``). :func:`select_topk` keeps the ``k = ⌊r_bayes · N + 1/2⌋`` highest-scoring entries, either
over the whole network (``scope="global"``, the seed's choice) or within each layer
(``scope="layer"``: the parameters of one module, e.g. its weight and bias, compete together).
Ties are broken by position (earlier parameter, then lower flat index), so the selection is a
deterministic function of the scores.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from monai.utils import StrEnum

from monai_bayes.utils.options import look_up

__all__ = ["SelectionScope", "check_r_bayes", "num_selected", "select_topk"]


class SelectionScope(StrEnum):
    """Where the Top-k entries compete: over the whole network (the seed's choice) or within each layer."""

    GLOBAL = "global"
    LAYER = "layer"


def check_r_bayes(r_bayes: float) -> float:
    """Validate ``r_bayes`` ∈ (0, 1] (fraction of parameters made Bayesian)."""
    if isinstance(r_bayes, bool) or not isinstance(r_bayes, (int, float)) or not 0.0 < float(r_bayes) <= 1.0:
        raise ValueError(f"r_bayes must be a fraction in (0, 1], got {r_bayes!r}.")
    return float(r_bayes)


def num_selected(r_bayes: float, total: int) -> int:
    """``k = ⌊r_bayes · total + 1/2⌋`` (round half up), at least 1 and at most ``total``."""
    return min(total, max(1, int(check_r_bayes(r_bayes) * total + 0.5)))


def _module_of(param_name: str) -> str:
    return param_name.rsplit(".", 1)[0] if "." in param_name else ""


def _topk_flat(scores: list[torch.Tensor], k: int) -> list[torch.Tensor]:
    """Boolean masks (one per score tensor) marking the k largest entries of their concatenation."""
    flat = torch.cat([s.detach().reshape(-1).float() for s in scores])
    if torch.isnan(flat).any():
        raise ValueError("scores contain NaN; cannot rank parameters.")
    order = torch.sort(flat, descending=True, stable=True).indices[:k]
    chosen = torch.zeros_like(flat, dtype=torch.bool)
    chosen[order] = True
    masks, start = [], 0
    for s in scores:
        masks.append(chosen[start : start + s.numel()].view(s.shape))
        start += s.numel()
    return masks


def select_topk(
    scores: Mapping[str, torch.Tensor], r_bayes: float, scope: SelectionScope | str = SelectionScope.GLOBAL
) -> dict[str, torch.Tensor]:
    """Boolean masks of the Top-k scored entries.

    Parameters
    ----------
    scores
        ``{parameter name: score tensor shaped like the parameter}``; higher = more salient.
    r_bayes
        fraction in (0, 1] of the entries to select (of all scored entries for
        ``scope="global"``, of each module's entries for ``scope="layer"``; at least one each).
    scope
        ``"global"`` or ``"layer"``.

    Returns
    -------
    ``{parameter name: bool tensor}``, same keys and shapes as ``scores``.
    """
    check_r_bayes(r_bayes)
    scope = look_up("scope", scope, SelectionScope)
    if not scores:
        raise ValueError("scores is empty: there are no parameters to select from.")
    names = list(scores)
    if scope == SelectionScope.GLOBAL:
        total = sum(scores[n].numel() for n in names)
        masks = _topk_flat([scores[n] for n in names], num_selected(r_bayes, total))
        return dict(zip(names, masks))
    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault(_module_of(n), []).append(n)
    out: dict[str, torch.Tensor] = {}
    for members in groups.values():
        total = sum(scores[n].numel() for n in members)
        out.update(zip(members, _topk_flat([scores[n] for n in members], num_selected(r_bayes, total))))
    return {n: out[n] for n in names}
