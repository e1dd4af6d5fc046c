"""Selection scopes that keep the Bayesian weights late in the network (issue 22, item 2).

Monte-Carlo inference only repeats the layers from the first stochastic one on
(:func:`~monai_bayes.layers.shared_prefix_forward`). Global saliency puts Bayesian weights in the
first convolutions, so every sample is a whole forward. A *scope* restricts the candidate layers
to a named part of the network, found from the order in which an example forward calls them (so it
works for any network, not only UNets):

* ``"decoder"`` -- the layers first called after the bottleneck, i.e. after the last call whose
  output has the fewest spatial elements;
* ``"last"`` -- the last ``n`` layers called (``n = 1``: the head; ``n = 3``: final block + head).

The returned names go to ``include=`` of :func:`~monai_bayes.networks.to_partial_bayes` (with
:func:`restrict_scores` keeping their saliency scores); there
``r_bayes`` is the fraction of the *included* entries and ``scope="layer"`` gives a per-layer budget.
:func:`~monai_bayes.layers.mc_cost_split` then predicts the cost of an ``S``-sample call
(:func:`~monai_bayes.selection.format_selection_report` prints it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import nn

from monai_bayes.layers.functional import SUPPORTED_TYPES

__all__ = ["ScopeName", "call_order", "restrict_scores", "scope_modules"]

ScopeName = Literal["decoder", "last"]


@torch.no_grad()
def call_order(network: nn.Module, example: torch.Tensor) -> list[tuple[str, int]]:
    """Conv / transposed-conv / linear modules in the order ``network(example)`` first calls them.

    Parameters
    ----------
    network : torch.nn.Module
        Any network.
    example : torch.Tensor
        An input ``(B, C_in, *spatial)``.

    Returns
    -------
    list of (str, int)
        ``(module name, spatial elements of its output)`` per module (1 for outputs without spatial dims).
    """
    order: list[tuple[str, int]] = []
    seen: set[str] = set()

    def make_hook(name: str) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> None:
            if name not in seen and isinstance(out, torch.Tensor):
                seen.add(name)
                order.append((name, int(out.shape[2:].numel()) if out.dim() > 2 else 1))

        return hook

    handles = [
        m.register_forward_hook(make_hook(n)) for n, m in network.named_modules() if isinstance(m, SUPPORTED_TYPES)
    ]
    was_training = network.training
    try:
        network.eval()
        network(example)
    finally:
        network.train(was_training)
        for h in handles:
            h.remove()
    return order


def scope_modules(network: nn.Module, example: torch.Tensor, scope: ScopeName, last_n: int = 3) -> list[str]:
    """Names of the candidate modules in ``scope``, in call order (pass them as ``include=``).

    Parameters
    ----------
    network : torch.nn.Module
        The (deterministic) network.
    example : torch.Tensor
        An input ``(B, C_in, *spatial)`` of the size used at inference.
    scope : {"decoder", "last"}
        See the module docstring.
    last_n : int
        Number of final layers for ``scope="last"``.

    Returns
    -------
    list of str
        Module names.

    Raises
    ------
    ValueError
        For an unknown scope, ``last_n < 1``, or a network without conv / linear layers or without
        layers after its bottleneck.
    """
    order = call_order(network, example)
    if not order:
        raise ValueError(f"{type(network).__name__} calls no conv / transposed-conv / linear module.")
    if scope == "last":
        if not isinstance(last_n, int) or last_n < 1:
            raise ValueError(f"last_n must be a positive int, got {last_n!r}.")
        return [name for name, _ in order[-last_n:]]
    if scope == "decoder":
        smallest = min(size for _, size in order)
        bottleneck = max(i for i, (_, size) in enumerate(order) if size == smallest)
        decoder = [name for name, _ in order[bottleneck + 1 :]]
        if not decoder:
            raise ValueError(f"{type(network).__name__} has no layer after its bottleneck ({order[bottleneck][0]}).")
        return decoder
    raise ValueError(f"scope must be 'decoder' or 'last', got {scope!r}.")


def restrict_scores(scores: Mapping[str, torch.Tensor], modules: Sequence[str]) -> dict[str, torch.Tensor]:
    """The scores of the parameters that belong to ``modules`` (``"<module>.<param>"`` names).

    Parameters
    ----------
    scores : mapping of str to torch.Tensor
        ``{parameter name: score tensor}`` (e.g. :func:`~monai_bayes.selection.saliency_scores`).
    modules : sequence of str
        Module names, e.g. from :func:`scope_modules`.

    Returns
    -------
    dict of str to torch.Tensor
        The subset of ``scores``, in its order.

    Raises
    ------
    ValueError
        If no score belongs to ``modules``.
    """
    wanted = set(modules)
    kept = {name: s for name, s in scores.items() if name.rsplit(".", 1)[0] in wanted}
    if not kept:
        raise ValueError(f"no scored parameter belongs to the {len(wanted)} scope modules, e.g. {sorted(wanted)[:3]}.")
    return kept
