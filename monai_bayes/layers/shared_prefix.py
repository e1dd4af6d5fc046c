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
  ``+`` of a residual unit -- it expands the shared operands first;
* *split convolution* (``split_conv=True``): a channel ``torch.cat`` of shared and expanded tensors is
  not materialised. The mode returns a placeholder (a zero-stride expanded empty tensor of the
  concatenation's shape, marked expanded) and records the parts. When the next operation is a
  convolution or transposed convolution with ``groups=1`` (``F.conv{1,2,3}d``,
  ``F.conv_transpose{1,2,3}d``, also inside a partial-Bayes layer's mean pass), it runs as
  ``conv(x_e, W[:, E]) + conv(x_s, W[:, Sh])``: the expanded channels ``E`` on ``S·B`` items, the
  shared channels ``Sh`` *once* on ``B`` items (with the bias), broadcast over the samples (for a
  transposed conv the weight's input-channel dim is 0). ``index_select`` along the channels gathers
  only the selected channels; metadata queries (shape, dtype, ...) read the placeholder; any other
  operation gets the real concatenation, materialised once. Outputs are therefore the same whatever
  consumes the concatenation.

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

#: (transposed) convolutions a lazy concatenation can feed without being materialised; value: transposed
_CONV_FUNCS: dict[Callable[..., Any], bool] = {
    torch.conv1d: False,
    torch.conv2d: False,
    torch.conv3d: False,
    torch.conv_transpose1d: True,
    torch.conv_transpose2d: True,
    torch.conv_transpose3d: True,
}
_CAT_FUNCS = (torch.cat, torch.concat, torch.concatenate)
#: tensor methods / properties that only read metadata: a placeholder answers them as the real tensor would
_METADATA_METHODS = frozenset(
    {"size", "dim", "ndimension", "numel", "nelement", "element_size", "get_device", "is_floating_point"}
)
_METADATA_PROPERTIES = frozenset({"shape", "dtype", "device", "ndim", "is_cuda", "layout", "requires_grad", "is_meta"})


@dataclass
class _LazyCat:
    """A channel concatenation of shared (``B`` items) and expanded (``S·B`` items) parts, not yet materialised."""

    parts: list[torch.Tensor]
    shared: list[bool]
    value: torch.Tensor | None = None  # the materialised concatenation, once something needed it

    def channel_ranges(self, want_shared: bool) -> list[tuple[int, int]]:
        """``(start, stop)`` channel ranges of the shared (or expanded) parts in the concatenation."""
        ranges, start = [], 0
        for part, shared in zip(self.parts, self.shared):
            if shared == want_shared:
                ranges.append((start, start + part.shape[1]))
            start += part.shape[1]
        return ranges

    def joined(self, want_shared: bool) -> torch.Tensor:
        """The shared (``B`` items) or the expanded (``S·B`` items) parts, concatenated along the channels."""
        parts = [p for p, sh in zip(self.parts, self.shared) if sh == want_shared]
        return parts[0] if len(parts) == 1 else torch.cat(parts, 1)


def _is_metadata_query(func: Callable[..., Any]) -> bool:
    """Whether ``func`` reads only a tensor's metadata (its shape, dtype, device, ...), not its values."""
    name = getattr(func, "__name__", "")
    if name == "__get__":
        owner = getattr(func, "__self__", None)
        return getattr(owner, "__name__", "") in _METADATA_PROPERTIES
    return name in _METADATA_METHODS and getattr(func, "__objclass__", None) is torch._C.TensorBase


def _cat_dim(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    return int(args[1]) if len(args) > 1 else int(kwargs.get("dim", kwargs.get("axis", 0)))


def _take_channels(t: torch.Tensor, ranges: list[tuple[int, int]], dim: int) -> torch.Tensor:
    """The channel ``ranges`` of ``t`` along ``dim``, concatenated (a view for a single range)."""
    pieces = [t.narrow(dim, a, b - a) for a, b in ranges]
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim)


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
    split_conv : bool
        Keep channel concatenations of shared and expanded tensors lazy and split the convolution that
        reads them (see the module doc).

    Attributes
    ----------
    split_convs : int
        Convolutions run split on a lazy concatenation (shared channels once).
    materialised : int
        Lazy concatenations that an operation other than a convolution needed in full.
    """

    def __init__(self, num_samples: int, batch_size: int, split_conv: bool = False) -> None:
        super().__init__()
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.split_conv = split_conv
        self.split_convs = 0
        self.materialised = 0
        self._kind: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self._lazy: WeakIdKeyDictionary = WeakIdKeyDictionary()

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

    def shared_channels(self, t: torch.Tensor) -> int:
        """Channels of a lazy concatenation ``t`` that are shared by all samples (0 for any other tensor)."""
        lazy = self._lazy.get(t)
        return 0 if lazy is None else sum(b - a for a, b in lazy.channel_ranges(True))

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
        if self.split_conv:
            if func in _CAT_FUNCS:
                lazy = self._lazy_cat(args, kwargs)
                if lazy is not None:
                    return lazy
            if any(t in self._lazy for t in _tensors_in(args, kwargs)):
                if _is_metadata_query(func):
                    return func(*args, **kwargs)
                out = self._on_lazy_input(func, args, kwargs)
                if out is not None:
                    return out
                args = tuple(self._materialise_value(a) for a in args)
                kwargs = {k: self._materialise_value(v) for k, v in kwargs.items()}
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

    # ------------------------------------------------------------------------ lazy concatenation
    def _lazy_cat(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor | None:
        """A placeholder for a channel ``torch.cat`` of shared and expanded tensors (``None``: not such a cat)."""
        tensors = args[0] if args else kwargs.get("tensors")
        if not isinstance(tensors, (list, tuple)) or not tensors:
            return None
        if not all(isinstance(t, torch.Tensor) and t.dim() >= 2 for t in tensors):
            return None
        if _cat_dim(args, kwargs) % tensors[0].dim() != 1:
            return None
        parts: list[torch.Tensor] = []
        shared: list[bool] = []
        for t in tensors:  # a lazy operand contributes its own parts
            inner = self._lazy.get(t)
            if inner is not None and inner.value is None:
                parts.extend(inner.parts)
                shared.extend(inner.shared)
            elif inner is not None:  # already materialised: never keep a placeholder as a part
                parts.append(cast(torch.Tensor, inner.value))
                shared.append(False)
            else:
                parts.append(t)
                shared.append(self.kind(t) == _SHARED)
        S, B = self.num_samples, self.batch_size
        ok_kinds = all(self.kind(p) in (_SHARED, _EXPANDED) for p in parts)
        sizes_ok = all(p.shape[0] == (B if sh else S * B) for p, sh in zip(parts, shared))
        same = all(p.shape[2:] == parts[0].shape[2:] and p.dtype == parts[0].dtype for p in parts)
        if not (ok_kinds and sizes_ok and same and any(shared) and not all(shared)):
            return None
        first = parts[0]
        shape = (S * B, sum(p.shape[1] for p in parts), *first.shape[2:])
        placeholder = torch.empty((), dtype=first.dtype, device=first.device).expand(shape)
        self._lazy[placeholder] = _LazyCat(parts, shared)
        self._kind[placeholder] = _EXPANDED
        return placeholder

    def _materialise(self, t: torch.Tensor) -> torch.Tensor:
        """The real concatenation behind a placeholder (computed once): shared parts broadcast over the samples."""
        lazy = self._lazy[t]
        if lazy.value is None:
            S, B = self.num_samples, self.batch_size
            out = torch.empty(t.shape, dtype=t.dtype, device=t.device)
            blocks = out.view(S, B, *t.shape[1:])
            start = 0
            for part, shared in zip(lazy.parts, lazy.shared):
                c = part.shape[1]
                blocks[:, :, start : start + c].copy_(part.view(1 if shared else S, B, *part.shape[1:]))
                start += c
            lazy.value = out
            self._kind[out] = _EXPANDED
            self.materialised += 1
        return lazy.value

    def _materialise_value(self, value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return self._materialise(value) if value in self._lazy else value
        if isinstance(value, (list, tuple)):
            return type(value)(self._materialise_value(v) for v in value)
        return value

    def _on_lazy_input(self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run ``func`` on a lazy concatenation without materialising it, or ``None`` when it cannot."""
        x = args[0] if args else None
        if not isinstance(x, torch.Tensor) or x not in self._lazy or self._lazy[x].value is not None:
            return None
        if func in _CONV_FUNCS:
            return self._split_conv(func, x, args, kwargs)
        if getattr(func, "__name__", "") == "index_select" and len(args) == 3 and int(args[1]) % x.dim() == 1:
            return self._index_select_channels(x, cast(torch.Tensor, args[2]))
        return None

    def _split_conv(
        self, func: Callable[..., Any], x: torch.Tensor, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> torch.Tensor | None:
        """``conv(x_e, W[:, E])`` on ``S·B`` items + ``conv(x_s, W[:, Sh]) + bias`` once on ``B`` items, broadcast."""
        names = ("input", "weight", "bias")
        call = dict(zip(names, args[:3]), **{k: v for k, v in kwargs.items() if k in names})
        rest = {k: v for k, v in kwargs.items() if k not in names}
        weight, bias = call.get("weight"), call.get("bias")
        groups = args[6] if len(args) > 6 else rest.get("groups", 1)
        if groups != 1 or not isinstance(weight, torch.Tensor) or weight in self._lazy or self.kind(weight):
            return None
        if isinstance(bias, torch.Tensor) and self.kind(bias):
            return None
        lazy = self._lazy[x]
        w_dim = 0 if _CONV_FUNCS[func] else 1  # the weight's input-channel dim
        shared_ranges, expanded_ranges = lazy.channel_ranges(True), lazy.channel_ranges(False)
        x_s, x_e = lazy.joined(True), lazy.joined(False)
        y_s = func(x_s, _take_channels(weight, shared_ranges, w_dim), bias, *args[3:], **rest)
        y_e = func(x_e, _take_channels(weight, expanded_ranges, w_dim), None, *args[3:], **rest)
        S, B = self.num_samples, self.batch_size
        y_e.view(S, B, *y_e.shape[1:]).add_(y_s.unsqueeze(0))
        self._kind[y_e] = _EXPANDED
        self.split_convs += 1
        return y_e

    def _index_select_channels(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """``x.index_select(1, index)`` of a lazy concatenation, copying only the selected channels."""
        lazy = self._lazy[x]
        S, B = self.num_samples, self.batch_size
        out = torch.empty((S * B, len(index), *x.shape[2:]), dtype=x.dtype, device=x.device)
        blocks = out.view(S, B, *out.shape[1:])
        start = 0
        for part, shared in zip(lazy.parts, lazy.shared):
            c = part.shape[1]
            hit = torch.nonzero((index >= start) & (index < start + c)).flatten()
            if len(hit):
                picked = part.index_select(1, index[hit] - start)
                blocks.index_copy_(
                    2, hit, picked.view(1 if shared else S, B, *picked.shape[1:]).expand(S, B, *picked.shape[1:])
                )
            start += c
        self._kind[out] = _EXPANDED
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
    split_conv: bool = False,
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
    split_conv : bool
        Keep a channel concatenation of shared and sample-expanded activations (a skip connection) lazy and
        run the convolution that reads it in two halves: the shared channels once on ``B`` items, the
        expanded ones on ``S·B`` (:class:`SharedPrefixMode`). Same outputs up to float rounding.

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
    mode = SharedPrefixMode(num_samples, x.shape[0], split_conv)
    with _expanding_stochastic_inputs(network, mode, sparse_shared_input), mode:
        out = network(mode.mark_shared(x), *args, **kwargs)
        if not isinstance(out, torch.Tensor):
            raise TypeError(
                f"shared-prefix Monte Carlo needs a network returning one tensor, got {type(out).__name__}."
            )
        if out in mode._lazy:  # the network ends with a concatenation
            out = mode._materialise(out)
        if mode.kind(out) != _EXPANDED:  # no stochastic layer on the path: the whole net is the prefix
            out = mode.expand(out)
    return out


@dataclass(frozen=True)
class MCCostSplit:
    """Multiply-accumulate counts of a network's conv / linear layers, split at the first stochastic layer.

    Attributes
    ----------
    prefix_macs : int
        MACs (per input batch) of the layers whose input is the same for every sample, and (with
        ``split_conv``) the shared-channel half of a convolution that reads a skip concatenation.
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
def mc_cost_split(network: nn.Module, example: torch.Tensor, split_conv: bool = True) -> MCCostSplit:
    """Split the conv / linear MACs of ``network(example)`` at the first stochastic layer.

    Runs one shared-prefix pass with ``S = 1`` and classifies every conv, transposed conv and linear
    call by whether its input is shared (prefix) or sample-expanded (suffix). Uses the call's data
    flow, so skip connections are accounted where they meet the per-sample path. With ``split_conv``,
    a deterministic conv with ``groups=1`` reading a concatenation of shared and expanded channels
    counts its shared-channel share (``C_shared / C_in`` of its MACs) as prefix work, as
    :func:`shared_prefix_forward` ``(..., split_conv=True)`` runs it once.

    Parameters
    ----------
    network : torch.nn.Module
        A network with stochastic layers (a plain network is all prefix).
    example : torch.Tensor
        An input ``(B, C_in, *spatial)``; MACs are per batch of this size.
    split_conv : bool
        Count the shared half of split convolutions as prefix (see above).

    Returns
    -------
    MCCostSplit
        Prefix and suffix MACs.
    """
    mode = SharedPrefixMode(1, example.shape[0], split_conv)
    counts = {_SHARED: 0, _EXPANDED: 0}
    kinds = (nn.Linear, nn.modules.conv._ConvNd)

    def hook(module: nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> None:
        x = args[0] if args and isinstance(args[0], torch.Tensor) else None
        kind = mode.kind(x) if x is not None else 0
        if not kind or not isinstance(out, torch.Tensor) or x is None:
            return
        macs = _layer_macs(module, x, out) * example.shape[0]
        shared = mode.shared_channels(x)
        conv = isinstance(module, nn.modules.conv._ConvNd) and module.groups == 1
        if shared and conv and not isinstance(module, StochasticLayer):  # a stochastic conv: own per-sample path
            part = macs * shared // x.shape[1]
            counts[_SHARED] += part
            macs -= part
        counts[kind] += macs

    handles = [m.register_forward_hook(hook) for m in network.modules() if isinstance(m, kinds)]
    try:
        with _expanding_stochastic_inputs(network, mode), mode:
            network(mode.mark_shared(example))
    finally:
        for h in handles:
            h.remove()
    return MCCostSplit(prefix_macs=counts[_SHARED], suffix_macs=counts[_EXPANDED])
