"""Selection scopes that keep the Bayesian weights late in the network (issue 22, item 2).

Monte-Carlo inference only repeats the layers from the first stochastic one on
(:func:`~monai_bayes.layers.shared_prefix_forward`). Global saliency puts Bayesian weights in the
first convolutions, so every sample is a whole forward. A *scope* restricts the candidate layers
to a named part of the network, found from the order in which an example forward calls them (so it
works for any network, not only UNets):

* ``"decoder"`` -- the layers first called after the bottleneck, i.e. after the last call whose
  output has the fewest spatial elements;
* ``"last"`` -- the last ``n`` layers called (``n = 1``: the head; ``n = 3``: final block + head).

``skip_readers=False`` removes from either scope the layers that *read a skip concatenation*
(:func:`cat_readers`: a conv / transposed conv whose input tensor is the output of a ``torch.cat`` along
the channels, a linear layer whose input is a ``torch.cat`` along the features), found from the data
flow of the same example forward. In MONAI's ``UNet`` these are the up-sampling convs after each
``SkipConnection`` (``model.2.0.conv``, ``model.1.submodule.2.0.conv``, ...), in ``BasicUNet`` the first
conv of each ``UpCat`` block (``upcat_4.convs.conv_0.conv``, ...). Saliency tends to put the decoder's
1 % into exactly these convs; a stochastic conv there has per-sample weights, so the split convolution
of :func:`~monai_bayes.layers.shared_prefix_forward` cannot run the shared skip half once. Kept
deterministic, they do run split, and the predicted cost of the decoder scope drops (UNet 16--256,
128²: 0.42 → 0.31 at S = 8 for a random 1 % per layer).

The returned names go to ``include=`` of :func:`~monai_bayes.networks.to_partial_bayes` (with
:func:`restrict_scores` keeping their saliency scores); there
``r_bayes`` is the fraction of the *included* entries and ``scope="layer"`` gives a per-layer budget.
:func:`~monai_bayes.layers.mc_cost_split` then predicts the cost of an ``S``-sample call
(:func:`~monai_bayes.selection.format_selection_report` prints it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from monai_bayes.layers.functional import SUPPORTED_TYPES
from monai_bayes.layers.shared_prefix import _CAT_FUNCS, _cat_dim

__all__ = [
    "SELECTION_REGIONS",
    "ScopeName",
    "call_order",
    "cat_readers",
    "region_modules",
    "restrict_scores",
    "scope_modules",
]

#: in-place tensor operators (``x += y`` calls ``Tensor.__iadd__``)
_INPLACE_OPERATORS = frozenset(
    f"__i{op}__" for op in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "and", "or", "xor", "matmul")
)


def _mutated(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any]:
    """The tensors that ``func(*args, **kwargs)`` writes into: ``self`` of an in-place op, ``out=``."""
    name = getattr(func, "__name__", "")
    inplace = (name.endswith("_") and not name.startswith("__")) or name in _INPLACE_OPERATORS
    written = [args[0]] if args and (inplace or kwargs.get("inplace") is True) else []
    return written + ([kwargs["out"]] if "out" in kwargs else [])


ScopeName = Literal["decoder", "last"]


def _traced_eval_forward(
    network: nn.Module,
    example: torch.Tensor,
    handles: Sequence[torch.utils.hooks.RemovableHandle],
    mode: TorchFunctionMode | None = None,
) -> None:
    """One eval-mode forward of ``example`` (inside ``mode`` if given) that ``handles``' hooks observe.

    The network's train / eval state is restored and the hooks are removed afterwards, also on an error.
    """
    was_training = network.training
    try:
        network.eval()
        with mode if mode is not None else contextlib.nullcontext():
            network(example)
    finally:
        network.train(was_training)
        for h in handles:
            h.remove()


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
    _traced_eval_forward(network, example, handles)
    return order


class _ConcatenationRecorder(TorchFunctionMode):
    """Records the output tensors of concatenations and the dim they joined (kept alive: ids stay unique).

    A recorded tensor that an in-place operation (``relu_``, ``inplace=True``, ``+=``, ``out=``) writes into
    is no longer the concatenation, so it is dropped.
    """

    def __init__(self) -> None:
        super().__init__()
        self.outputs: dict[int, tuple[torch.Tensor, int]] = {}

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        for t in _mutated(func, args, kwargs):
            self.outputs.pop(id(t), None)
        out = func(*args, **kwargs)
        if func in _CAT_FUNCS and isinstance(out, torch.Tensor) and out.dim() > 0:
            self.outputs[id(out)] = (out, _cat_dim(args, kwargs) % out.dim())
        return out

    def joined_along(self, t: Any) -> int | None:
        """The dim along which ``t`` was concatenated, or None if ``t`` is no recorded concatenation."""
        entry = self.outputs.get(id(t))
        return entry[1] if entry is not None and entry[0] is t else None


@torch.no_grad()
def cat_readers(network: nn.Module, example: torch.Tensor) -> list[str]:
    """Conv / transposed-conv / linear modules whose input is a concatenation, in the order first called.

    Found from the data flow of one forward ``network(example)`` (in eval mode): a
    :class:`~torch.overrides.TorchFunctionMode` records the outputs of ``torch.cat`` (and its aliases
    ``concat`` / ``concatenate``), and a forward pre-hook on every candidate module checks whether its
    input *is* such an output, joined along its channels (dim 1; the last dim for ``nn.Linear``). A
    module that reads the concatenation only after another operation (a norm, an activation, a slice,
    also one done in place on the concatenation) is not a reader, nor is one reading a concatenation
    along another dim: neither could run the split convolution of
    :func:`~monai_bayes.layers.shared_prefix_forward`. Several modules reading the same concatenation
    (e.g. a residual unit's conv and its residual conv) are all readers.

    Parameters
    ----------
    network : torch.nn.Module
        Any network (e.g. MONAI ``UNet``'s ``SkipConnection``, ``BasicUNet``'s ``UpCat``).
    example : torch.Tensor
        An input ``(B, C_in, *spatial)``.

    Returns
    -------
    list of str
        Module names, in the order in which they first read a concatenation.
    """
    recorder = _ConcatenationRecorder()
    readers: list[str] = []

    def make_hook(name: str, linear: bool) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            x = args[0] if args else None
            dim = recorder.joined_along(x)
            if dim is None or name in readers or not isinstance(x, torch.Tensor):
                return
            if dim == (x.dim() - 1 if linear else 1):
                readers.append(name)

        return hook

    handles = [
        m.register_forward_pre_hook(make_hook(n, isinstance(m, nn.Linear)))
        for n, m in network.named_modules()
        if isinstance(m, SUPPORTED_TYPES)
    ]
    _traced_eval_forward(network, example, handles, recorder)
    return readers


def scope_modules(
    network: nn.Module, example: torch.Tensor, scope: ScopeName, last_n: int = 3, skip_readers: bool = True
) -> list[str]:
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
        Number of final layers for ``scope="last"`` (counted before ``skip_readers`` removes any).
    skip_readers : bool
        Keep the layers that read a skip concatenation (:func:`cat_readers`); ``False`` removes them
        from the scope, so they stay deterministic and the split convolution can run their shared half
        once per MC call.

    Returns
    -------
    list of str
        Module names.

    Raises
    ------
    ValueError
        For an unknown scope, ``last_n < 1``, a network without conv / linear layers or without
        layers after its bottleneck, or (``skip_readers=False``) a scope in which every layer reads a
        concatenation.
    """
    order = call_order(network, example)
    if not order:
        raise ValueError(f"{type(network).__name__} calls no conv / transposed-conv / linear module.")
    if scope == "last":
        if not isinstance(last_n, int) or last_n < 1:
            raise ValueError(f"last_n must be a positive int, got {last_n!r}.")
        names = [name for name, _ in order[-last_n:]]
    elif scope == "decoder":
        smallest = min(size for _, size in order)
        bottleneck = max(i for i, (_, size) in enumerate(order) if size == smallest)
        names = [name for name, _ in order[bottleneck + 1 :]]
        if not names:
            raise ValueError(f"{type(network).__name__} has no layer after its bottleneck ({order[bottleneck][0]}).")
    else:
        raise ValueError(f"scope must be 'decoder' or 'last', got {scope!r}.")
    if skip_readers:
        return names
    readers = set(cat_readers(network, example))
    kept = [name for name in names if name not in readers]
    if not kept:
        raise ValueError(
            f"every layer of the {scope!r} scope of {type(network).__name__} reads a skip concatenation"
            f" ({names}); with skip_readers=False no layer is left."
        )
    return kept


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


#: named scopes of the bundles' ``selection_region`` setting: ``"all"`` (every candidate layer, no scope),
#: ``"decoder"`` (:func:`scope_modules` ``"decoder"``), ``"decoder_skipfree"`` (the decoder without the layers
#: that read a skip concatenation, ``skip_readers=False``), ``"last3"`` (``"last"``, ``last_n=3``)
SELECTION_REGIONS: tuple[str, ...] = ("all", "decoder", "decoder_skipfree", "last3")


def region_modules(network: nn.Module, example: torch.Tensor, region: str) -> list[str] | None:
    """The modules of a named selection region (:data:`SELECTION_REGIONS`), ``None`` for ``"all"``.

    Parameters
    ----------
    network : torch.nn.Module
        The (deterministic) network.
    example : torch.Tensor
        An input ``(B, C_in, *spatial)`` of the size used at inference.
    region : str
        One of :data:`SELECTION_REGIONS`.

    Returns
    -------
    list of str or None
        Module names in call order (for ``include=``), or ``None`` (no restriction) for ``"all"``.

    Raises
    ------
    ValueError
        For an unknown region, or as :func:`scope_modules`.
    """
    if region == "all":
        return None
    if region == "decoder":
        return scope_modules(network, example, "decoder")
    if region == "decoder_skipfree":
        return scope_modules(network, example, "decoder", skip_readers=False)
    if region == "last3":
        return scope_modules(network, example, "last", last_n=3)
    raise ValueError(f"selection_region must be one of {list(SELECTION_REGIONS)}, got {region!r}.")
