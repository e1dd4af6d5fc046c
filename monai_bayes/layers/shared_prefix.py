"""Shared-prefix Monte-Carlo execution: everything before the first stochastic layer runs once.

A batched Monte-Carlo pass (:func:`~monai_bayes.layers.mc_samples`) pushes ``S`` stacked copies of
the input (``S·B`` items, sample-major) through the whole network. Every layer before the first
stochastic one computes the same thing ``S`` times. :func:`shared_prefix_forward` instead runs the
network on the ``B`` items once, with a *lazily expanded sample dimension*:

* the input is marked *shared* (batch ``B``, identical for every sample);
* a forward pre-hook on every stochastic layer expands a shared input to ``S·B`` items
  (``torch.cat([x] * S)``) and marks the result *expanded*;
* a :class:`~torch.overrides.TorchFunctionMode` follows every torch operation: outputs of an
  operation on an expanded tensor are expanded, of a shared one shared; when an operation mixes the
  two -- the ``torch.cat`` of a MONAI ``SkipConnection`` or ``BasicUNet`` up-sampling block, the
  ``+`` of a residual unit -- it expands the shared operands first.

Nothing is specific to a network: the split follows the data flow of the actual call, so it works
for MONAI ``UNet``, ``BasicUNet``, ``SegResNet``, ``DynUNet`` (2D and 3D) and anything else whose
operations act item-wise along the batch dim (true for inference with batch-norm in ``eval()``).
The outputs equal those of the stacked pass for the same noise (up to float rounding of the
batch-size dependent kernels), which :func:`shared_prefix_forward` checks for a shared tensor
whose batch dim changed.

:func:`mc_cost_split` uses the same tracking to report how much of a network's conv / linear work
lies before the first stochastic layer, and the predicted cost of an ``S``-sample call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.weak import WeakIdKeyDictionary

from monai_bayes.layers.base import StochasticLayer, stochastic_layers

__all__ = ["MCCostSplit", "SharedPrefixMode", "mc_cost_split", "shared_prefix_forward"]

_SHARED = 1
_EXPANDED = 2


def _tensors_in(args: tuple[Any, ...], kwargs: dict[str, Any] | None) -> Iterator[torch.Tensor]:
    """Tensors among the positional and keyword arguments of a torch call (one level into lists)."""
    values = list(args) + (list(kwargs.values()) if kwargs else [])
    for value in values:
        if isinstance(value, torch.Tensor):
            yield value
        elif isinstance(value, (list, tuple)):
            yield from (v for v in value if isinstance(v, torch.Tensor))


class SharedPrefixMode(TorchFunctionMode):
    """Torch-function mode tracking which activations are shared (batch ``B``) or expanded (``S·B``).

    Parameters
    ----------
    num_samples : int
        ``S``, the number of samples an expanded tensor holds (sample-major blocks of ``B`` items).
    batch_size : int
        ``B``, the batch size of the shared input.
    """

    def __init__(self, num_samples: int, batch_size: int) -> None:
        super().__init__()
        self.num_samples = num_samples
        self.batch_size = batch_size
        self._kind: WeakIdKeyDictionary = WeakIdKeyDictionary()

    # ------------------------------------------------------------------------ marks
    def mark_shared(self, t: torch.Tensor) -> torch.Tensor:
        """Mark ``t`` (batch ``B``) as identical for every sample; returns ``t``."""
        self._kind[t] = _SHARED
        return t

    def mark_expanded(self, t: torch.Tensor) -> torch.Tensor:
        """Mark ``t`` (batch ``S·B``, sample-major) as holding one block per sample; returns ``t``."""
        self._kind[t] = _EXPANDED
        return t

    def kind(self, t: torch.Tensor) -> int:
        """``0`` (not an activation, e.g. a parameter), ``1`` (shared) or ``2`` (expanded)."""
        return self._kind.get(t, 0)

    def expand(self, t: torch.Tensor) -> torch.Tensor:
        """The ``S·B``-item version of a shared tensor (``torch.cat([t] * S)``), marked expanded.

        Raises
        ------
        ValueError
            If the shared tensor's batch dim is no longer ``B`` (an operation mixed the batch with
            other dims, which shared-prefix execution cannot follow).
        """
        if t.dim() == 0 or t.shape[0] != self.batch_size:
            raise ValueError(
                "shared-prefix Monte Carlo: a shared activation of shape "
                f"{tuple(t.shape)} meets a sample-expanded one, but its first dim is not the batch size "
                f"{self.batch_size}; run this network with shared_prefix=False."
            )
        out = t.repeat(self.num_samples, *([1] * (t.dim() - 1)))
        self._kind[out] = _EXPANDED
        return out

    # ------------------------------------------------------------------------ dispatch
    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        kinds = {self.kind(t) for t in _tensors_in(args, kwargs)}
        if _SHARED in kinds and _EXPANDED in kinds:
            args = tuple(self._expand_value(a) for a in args)
            kwargs = {k: self._expand_value(v) for k, v in kwargs.items()}
        out = func(*args, **kwargs)
        mark = _EXPANDED if _EXPANDED in kinds else _SHARED if _SHARED in kinds else 0
        if mark:
            for t in _tensors_in((out,), None):
                if not isinstance(t, nn.Parameter):
                    self._kind[t] = mark
        return out

    def _expand_value(self, value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return self.expand(value) if self.kind(value) == _SHARED else value
        if isinstance(value, (list, tuple)):
            return type(value)(self._expand_value(v) for v in value)
        return value


@contextmanager
def _expanding_stochastic_inputs(
    model: nn.Module, mode: SharedPrefixMode, sparse_shared_input: bool = False
) -> Iterator[None]:
    """Forward hooks around every stochastic layer of ``model``: shared inputs are expanded before the layer.

    With ``sparse_shared_input``, a layer that :meth:`~monai_bayes.layers.base.StochasticLayer.takes_shared_input`
    gets its shared input as is (its ``_shared_input`` flag set for that call) and its ``S·B``-item output
    is marked expanded afterwards.
    """

    def pre_hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        first = args[0] if args else None
        layer = cast(StochasticLayer, module)
        if (
            sparse_shared_input
            and isinstance(first, torch.Tensor)
            and mode.kind(first) == _SHARED
            and layer.takes_shared_input()
        ):
            layer._shared_input = True
            return None
        return tuple(mode.expand(a) if isinstance(a, torch.Tensor) and mode.kind(a) == _SHARED else a for a in args)

    def post_hook(module: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        layer = cast(StochasticLayer, module)
        if getattr(layer, "_shared_input", False):
            layer._shared_input = False
            if isinstance(out, torch.Tensor):
                mode.mark_expanded(out)

    handles = []
    for _, layer in stochastic_layers(model):
        handles.append(layer.register_forward_pre_hook(pre_hook))
        handles.append(layer.register_forward_hook(post_hook))
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        for _, layer in stochastic_layers(model):  # an exception inside a layer must not leave the flag set
            if getattr(layer, "_shared_input", False):
                layer._shared_input = False


def shared_prefix_forward(
    network: nn.Module,
    x: torch.Tensor,
    num_samples: int,
    *args: Any,
    sparse_shared_input: bool = False,
    **kwargs: Any,
) -> torch.Tensor:
    """``network(torch.cat([x] * S))`` with everything before the first stochastic layer run once.

    Call it inside :func:`~monai_bayes.layers.mc_samples` ``(network, S)`` (and, for reproducible
    samples, :func:`~monai_bayes.layers.fixed_noise`), exactly like the stacked pass it replaces.

    Parameters
    ----------
    network : torch.nn.Module
        Any network; its stochastic layers (:func:`~monai_bayes.layers.stochastic_layers`) mark
        where the per-sample part starts.
    x : torch.Tensor
        Input batch ``(B, C_in, *spatial)`` (a plain tensor, not a ``MetaTensor``).
    num_samples : int
        ``S``.
    *args, **kwargs
        Passed on to ``network``.
    sparse_shared_input : bool
        Let stochastic layers whose input is still shared compute their ``S`` samples from it directly
        (:meth:`~monai_bayes.layers.base.StochasticLayer.takes_shared_input`; for a partial-Bayes conv, one dense
        conv plus one small conv for all ``S`` sparse perturbations,
        :func:`~monai_bayes.layers.functional.forward_with_sparse_samples_shared`) instead of expanding the
        input first. Same outputs up to float rounding.

    Returns
    -------
    torch.Tensor
        ``(S·B, C_out, *spatial_out)``, sample-major -- the layout of the stacked pass.

    Raises
    ------
    TypeError
        If the network does not return one tensor.
    ValueError
        If an operation changed the batch dim of a shared activation that later meets a
        sample-expanded one.
    """
    mode = SharedPrefixMode(num_samples, x.shape[0])
    with _expanding_stochastic_inputs(network, mode, sparse_shared_input), mode:
        out = network(mode.mark_shared(x), *args, **kwargs)
        if not isinstance(out, torch.Tensor):
            raise TypeError(
                f"shared-prefix Monte Carlo needs a network returning one tensor, got {type(out).__name__}."
            )
        if mode.kind(out) != _EXPANDED:  # no stochastic layer on the path: the whole net is the prefix
            out = mode.expand(out)
    return out


@dataclass(frozen=True)
class MCCostSplit:
    """Multiply-accumulate counts of a network's conv / linear layers, split at the first stochastic layer.

    Attributes
    ----------
    prefix_macs : int
        MACs (per input batch) of the layers whose input is the same for every sample.
    suffix_macs : int
        MACs (per input batch, per sample) of the layers at or after the first stochastic layer.
    """

    prefix_macs: int
    suffix_macs: int

    @property
    def total_macs(self) -> int:
        """MACs of one deterministic forward."""
        return self.prefix_macs + self.suffix_macs

    def predicted_cost(self, num_samples: int, shared_prefix: bool = True) -> float:
        """Predicted cost of an ``S``-sample call in units of ``S`` deterministic forwards.

        ``(prefix + S·suffix) / (S·total)`` with ``shared_prefix``, 1.0 without.
        """
        if not shared_prefix or self.total_macs == 0:
            return 1.0
        return (self.prefix_macs + num_samples * self.suffix_macs) / (num_samples * self.total_macs)


def _layer_macs(module: nn.Module, x: torch.Tensor, out: torch.Tensor) -> int:
    """Multiply-accumulates of one conv / transposed conv / linear call, per item of its batch.

    Conv: output elements × ``C_in/groups · k``; transposed conv: input elements × ``C_out/groups · k``
    (each input element scatters one kernel patch); linear: output elements × ``in_features``.
    """
    w = cast(torch.Tensor, module.weight)
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        return int(x[0].numel() * w[0].numel())
    if isinstance(module, nn.Linear):
        return int(out[0].numel() * w.shape[1])
    return int(out[0].numel() * w[0].numel())


@torch.no_grad()
def mc_cost_split(network: nn.Module, example: torch.Tensor) -> MCCostSplit:
    """Split the conv / linear MACs of ``network(example)`` at the first stochastic layer.

    Runs one shared-prefix pass with ``S = 1`` and classifies every conv, transposed conv and linear
    call by whether its input is shared (prefix) or sample-expanded (suffix). Uses the call's data
    flow, so skip connections are accounted where they meet the per-sample path.

    Parameters
    ----------
    network : torch.nn.Module
        A network with stochastic layers (a plain network is all prefix).
    example : torch.Tensor
        An input ``(B, C_in, *spatial)``; MACs are per batch of this size.

    Returns
    -------
    MCCostSplit
        Prefix and suffix MACs.
    """
    mode = SharedPrefixMode(1, example.shape[0])
    counts = {_SHARED: 0, _EXPANDED: 0}
    kinds = (nn.Linear, nn.modules.conv._ConvNd)

    def hook(module: nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> None:
        kind = mode.kind(args[0]) if args and isinstance(args[0], torch.Tensor) else 0
        if kind and isinstance(out, torch.Tensor):
            counts[kind] += _layer_macs(module, args[0], out) * example.shape[0]

    handles = [m.register_forward_hook(hook) for m in network.modules() if isinstance(m, kinds)]
    try:
        with _expanding_stochastic_inputs(network, mode), mode:
            network(mode.mark_shared(example))
    finally:
        for h in handles:
            h.remove()
    return MCCostSplit(prefix_macs=counts[_SHARED], suffix_macs=counts[_EXPANDED])
