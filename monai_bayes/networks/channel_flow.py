"""Following the channels of a tensor through a network, structurally (no forward pass).

The BN3 converter (:func:`~monai_bayes.networks.to_nested`) and the width-``w`` extraction
(:func:`~monai_bayes.networks.extract_width`) both need to know which module's output channels reach
which module. :class:`ChannelWalker` interprets a network's forward for that: it knows ``nn.Sequential``
(hence MONAI ``Convolution``, ``ADN``, ``TwoConv``, ``Down``, ``UpSample`` with ``deconv`` or
``nontrainable``), normalisation (batch / instance; group norm only where no channel is dropped),
PReLU and parameter-free channel-wise modules (activations, dropout, pooling, upsampling), plus the
containers registered in :data:`CONTAINER_WALKERS` -- MONAI ``ResidualUnit``, ``SkipConnection``,
``UNet``, ``BasicUNet`` and ``UpCat`` out of the box. Another architecture is supported by registering
a walker for its container class with :func:`register_container_walker` (a function that calls
``walker.walk`` on the children in the order of the container's forward). Anything else raises a
``ValueError`` naming the module. A :class:`ChannelVisitor` decides what happens at each node;
:func:`analyse_channel_flow` uses one to find the output layers and residual ties.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeGuard, cast

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd
from torch.nn.modules.instancenorm import _InstanceNorm

from monai_bayes.layers.dropout import MCDropout
from monai_bayes.layers.functional import SUPPORTED_TYPES
from monai_bayes.layers.nested import NestedChannelMask

if TYPE_CHECKING:
    from monai.networks.blocks.convolutions import ResidualUnit
    from monai.networks.layers.simplelayers import SkipConnection
    from monai.networks.nets.basic_unet import BasicUNet, UpCat
    from monai.networks.nets.unet import UNet

__all__ = [
    "CONTAINER_WALKERS",
    "ChannelFlowReport",
    "ChannelVisitor",
    "ChannelWalker",
    "analyse_channel_flow",
    "register_container_walker",
]

INPUT = "<input>"

# ----------------------------------------------------------------------------------------- module kinds
#: parameter-free modules that mix channels (never passed through)
_MIXING_TYPES: tuple[type[nn.Module], ...] = (
    nn.Softmax,
    nn.Softmin,
    nn.LogSoftmax,
    nn.Softmax2d,
    nn.GLU,
    nn.ChannelShuffle,
    nn.PixelShuffle,
    nn.PixelUnshuffle,
    nn.Flatten,
    nn.Unflatten,
)
#: channel-wise modules that map a channel that is all zeros to zeros
ZERO_PRESERVING: tuple[type[nn.Module], ...] = (
    nn.Identity,
    _DropoutNd,
    MCDropout,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.RReLU,
    nn.ELU,
    nn.CELU,
    nn.SELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Tanh,
    nn.Hardtanh,
    nn.Hardswish,
    nn.Softsign,
    nn.Tanhshrink,
    nn.Softshrink,
    nn.Hardshrink,
    nn.Upsample,
)
_PASSTHROUGH_MODULES = ("torch.nn.modules.activation", "torch.nn.modules.pooling", "monai.networks.blocks.activation")


def is_conv_like(module: nn.Module) -> bool:
    """Whether ``module`` is a conv / transposed conv / linear layer (or a stochastic variant of one).

    Parameters
    ----------
    module : nn.Module
        The module to classify.

    Returns
    -------
    bool
        The answer.
    """
    return isinstance(module, SUPPORTED_TYPES)


def is_plain_sequential(module: nn.Module) -> TypeGuard[nn.Sequential]:
    """Whether ``module`` is an ``nn.Sequential`` that keeps ``nn.Sequential.forward``.

    Parameters
    ----------
    module : nn.Module
        The module to classify.

    Returns
    -------
    bool
        The answer.
    """
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


def is_channel_norm(module: nn.Module) -> bool:
    """Whether ``module`` normalises each channel on its own (batch / instance norm).

    Parameters
    ----------
    module : nn.Module
        The module to classify.

    Returns
    -------
    bool
        The answer.
    """
    return isinstance(module, (_BatchNorm, _InstanceNorm))


def _is_mixing_norm(module: nn.Module) -> bool:
    """A normalisation whose statistics span several channels (group / layer norm, local response norm)."""
    return isinstance(module, (nn.GroupNorm, nn.LocalResponseNorm, nn.CrossMapLRN2d))


def _is_passthrough(module: nn.Module) -> bool:
    """A parameter-free module acting on each channel separately (activation, dropout, pooling, upsampling)."""
    if isinstance(module, _MIXING_TYPES) or type(module).__name__ in ("GEGLU",):
        return False
    if list(module.parameters()):
        return False
    if list(module.children()):
        return False
    if isinstance(module, (nn.Identity, _DropoutNd, MCDropout, nn.Upsample)):
        return True
    return type(module).__module__ in _PASSTHROUGH_MODULES


def is_tail(module: nn.Module) -> bool:
    """Whether ``module`` belongs to the norm / dropout / activation run after a conv (e.g. MONAI ``ADN``).

    Parameters
    ----------
    module : nn.Module
        The module to classify.

    Returns
    -------
    bool
        The answer.
    """
    if is_channel_norm(module) or isinstance(module, nn.PReLU):
        return True
    if is_plain_sequential(module):
        return len(module) > 0 and all(is_tail(m) for m in module)
    return _is_passthrough(module) and "pooling" not in type(module).__module__ and not isinstance(module, nn.Upsample)


def in_channels(module: nn.Module) -> int:
    """Input channels (features for ``Linear``) of a conv-like module.

    Parameters
    ----------
    module : nn.Module
        A conv / transposed conv / linear module.

    Returns
    -------
    int
        ``in_channels`` or ``in_features``.
    """
    return module.in_features if isinstance(module, nn.Linear) else cast(int, module.in_channels)


def out_channels(module: nn.Module) -> int:
    """Output channels (features for ``Linear``) of a conv-like module.

    Parameters
    ----------
    module : nn.Module
        A conv / transposed conv / linear module.

    Returns
    -------
    int
        ``out_channels`` or ``out_features``.
    """
    return module.out_features if isinstance(module, nn.Linear) else cast(int, module.out_channels)


def join_name(prefix: str, name: str) -> str:
    """Qualified module name ``prefix.name`` (``name`` alone at the root).

    Parameters
    ----------
    prefix : str
        Qualified name of the parent (``""`` for the root).
    name : str
        Name of the child.

    Returns
    -------
    str
        The child's qualified name, as in ``model.named_modules()``.
    """
    return f"{prefix}.{name}" if prefix else name


# ----------------------------------------------------------------------------------------- interpreter
class ChannelVisitor:
    """What the channel interpreter does at each kind of node.

    A *flow* is a list with one item per channel of the tensor at that point; each method receives the
    node's qualified name, the module and the incoming flow and returns the outgoing flow. Subclasses
    choose the items (producer names in :func:`analyse_channel_flow`, kept / dropped states in
    :func:`~monai_bayes.networks.extract_width`).
    """

    def conv(self, name: str, module: nn.Module, flow: list) -> list:
        raise NotImplementedError

    def elementwise(self, name: str, module: nn.Module, flow: list) -> list:
        return flow

    def mask_site(self, name: str, module: NestedChannelMask, flow: list) -> list:
        return flow

    def mixing_norm(self, name: str, module: nn.Module, flow: list) -> list:
        raise NotImplementedError

    def combine(self, where: str, a: list, b: list) -> list:
        raise NotImplementedError


class ChannelWalker:
    """Follows the channels of a tensor through a network's forward, structurally (no forward pass).

    Parameters
    ----------
    visitor : ChannelVisitor
        What happens at each node.
    """

    def __init__(self, visitor: ChannelVisitor) -> None:
        self.visitor = visitor
        self._visited: set[int] = set()

    def walk(self, module: nn.Module, name: str, flow: list) -> list:
        """The flow after ``module`` for the incoming ``flow``.

        Parameters
        ----------
        module : nn.Module
            A layer, a known channel-wise module, a plain ``nn.Sequential`` or a registered container.
        name : str
            Qualified name of ``module`` (``""`` for the root).
        flow : list
            One item per incoming channel.

        Returns
        -------
        list
            One item per outgoing channel.

        Raises
        ------
        ValueError
            For a module the interpreter does not know, a module used twice, or channel counts that do
            not match the module.
        """
        if isinstance(module, NestedChannelMask):
            return self.visitor.mask_site(name, module, flow)
        if is_conv_like(module):
            self._visit_once(module, name)
            if in_channels(module) != len(flow):
                raise ValueError(
                    f"channel flow mismatch at {name!r}: the module expects {in_channels(module)} input channels "
                    f"but {len(flow)} arrive; the network's forward is not what the interpreter assumes."
                )
            return self.visitor.conv(name, module, flow)
        if is_channel_norm(module) or isinstance(module, nn.PReLU) or _is_passthrough(module):
            if list(module.parameters()):
                self._visit_once(module, name)
            return self.visitor.elementwise(name, module, flow)
        if _is_mixing_norm(module):
            if list(module.parameters()):
                self._visit_once(module, name)
            return self.visitor.mixing_norm(name, module, flow)
        handler = self._container_handler(module)
        if handler is None:
            raise ValueError(
                f"cannot follow channels through module {name or '<root>'!r} of type {type(module).__name__}; "
                "supported: nn.Sequential, MONAI UNet / BasicUNet blocks (Convolution, ResidualUnit, SkipConnection, "
                "UpCat), conv / linear layers, batch / instance norm, PReLU and channel-wise activations, dropout, "
                "pooling and upsampling."
            )
        return handler(module, name, flow)

    def _visit_once(self, module: nn.Module, name: str) -> None:
        if id(module) in self._visited:
            raise ValueError(f"module {name!r} is used twice in the forward pass; shared layers are not supported.")
        self._visited.add(id(module))

    def _container_handler(self, module: nn.Module) -> Callable[[nn.Module, str, list], list] | None:
        if is_plain_sequential(module):
            return self._sequential
        _register_monai_walkers()
        walker = CONTAINER_WALKERS.get(type(module))
        if walker is None:
            return None
        return lambda m, n, f: walker(self, m, n, f)

    def _sequential(self, module: nn.Module, name: str, flow: list) -> list:
        for child_name, child in list(module.named_children()):
            flow = self.walk(child, join_name(name, child_name), flow)
        return flow

    def upcat(self, module: nn.Module, name: str, flow: list, skip: list | None) -> list:
        """Channels through a MONAI ``UpCat``: upsample ``flow``, concatenate ``skip`` in front, convolve."""
        up = cast("UpCat", module)
        x0 = self.walk(up.upsample, join_name(name, "upsample"), flow)
        if skip is not None:
            x0 = skip + x0
        return self.walk(up.convs, join_name(name, "convs"), x0)


#: container class -> function ``(walker, module, name, flow) -> flow`` following the container's forward
ContainerWalkerFn = Callable[["ChannelWalker", nn.Module, str, list], list]
CONTAINER_WALKERS: dict[type[nn.Module], ContainerWalkerFn] = {}


def register_container_walker(container: type[nn.Module]) -> Callable[[ContainerWalkerFn], ContainerWalkerFn]:
    """Decorator registering how channels flow through the container class ``container``.

    Parameters
    ----------
    container : type of nn.Module
        The exact container class (subclasses with another forward need their own entry).

    Returns
    -------
    Callable
        The decorator; it stores the function in :data:`CONTAINER_WALKERS` and returns it unchanged.
    """

    def decorate(fn: ContainerWalkerFn) -> ContainerWalkerFn:
        CONTAINER_WALKERS[container] = fn
        return fn

    return decorate


def _walk_residual_unit(walker: ChannelWalker, module: nn.Module, name: str, flow: list) -> list:
    """MONAI ``ResidualUnit``: ``conv(x) + residual(x)``."""
    unit = cast("ResidualUnit", module)
    res = walker.walk(unit.residual, join_name(name, "residual"), flow)
    cx = walker.walk(unit.conv, join_name(name, "conv"), flow)
    return walker.visitor.combine(name, cx, res)


def _walk_skip_connection(walker: ChannelWalker, module: nn.Module, name: str, flow: list) -> list:
    """MONAI ``SkipConnection``: ``cat`` / ``add`` / ``mul`` of ``x`` and ``submodule(x)`` along channels."""
    skip = cast("SkipConnection", module)
    if skip.dim != 1:
        raise ValueError(f"SkipConnection {name!r} joins along dim {skip.dim}; only channel joins (dim=1).")
    y = walker.walk(skip.submodule, join_name(name, "submodule"), flow)
    if skip.mode == "cat":
        return flow + y
    return walker.visitor.combine(name, flow, y)


def _walk_basic_unet(walker: ChannelWalker, module: nn.Module, name: str, flow: list) -> list:
    """MONAI ``BasicUNet.forward``: four downsamplings, four ``UpCat`` with the encoder skips, final conv."""
    unet = cast("BasicUNet", module)
    x0 = walker.walk(unet.conv_0, join_name(name, "conv_0"), flow)
    x1 = walker.walk(unet.down_1, join_name(name, "down_1"), x0)
    x2 = walker.walk(unet.down_2, join_name(name, "down_2"), x1)
    x3 = walker.walk(unet.down_3, join_name(name, "down_3"), x2)
    x4 = walker.walk(unet.down_4, join_name(name, "down_4"), x3)
    u4 = walker.upcat(unet.upcat_4, join_name(name, "upcat_4"), x4, x3)
    u3 = walker.upcat(unet.upcat_3, join_name(name, "upcat_3"), u4, x2)
    u2 = walker.upcat(unet.upcat_2, join_name(name, "upcat_2"), u3, x1)
    u1 = walker.upcat(unet.upcat_1, join_name(name, "upcat_1"), u2, x0)
    return walker.walk(unet.final_conv, join_name(name, "final_conv"), u1)


def _register_monai_walkers() -> None:
    """Register the MONAI containers (imported on first use: ``monai.networks.nets`` is slow to import)."""
    from monai.networks.blocks.convolutions import ResidualUnit
    from monai.networks.layers.simplelayers import SkipConnection
    from monai.networks.nets.basic_unet import BasicUNet, UpCat
    from monai.networks.nets.unet import UNet

    if UNet in CONTAINER_WALKERS:
        return
    CONTAINER_WALKERS.setdefault(ResidualUnit, _walk_residual_unit)
    CONTAINER_WALKERS.setdefault(SkipConnection, _walk_skip_connection)
    CONTAINER_WALKERS.setdefault(UpCat, lambda w, m, n, f: w.upcat(m, n, f, None))
    CONTAINER_WALKERS.setdefault(BasicUNet, _walk_basic_unet)
    CONTAINER_WALKERS.setdefault(UNet, lambda w, m, n, f: w.walk(cast("UNet", m).model, join_name(n, "model"), f))


def input_channels(model: nn.Module) -> int:
    """Input channels of the network: those of its first conv / linear module in module order."""
    for module in model.modules():
        if is_conv_like(module):
            return in_channels(module)
    raise ValueError(f"{type(model).__name__} has no conv / linear module.")


# ----------------------------------------------------------------------------------------- analysis
@dataclass
class ChannelFlowReport:
    """Result of :func:`analyse_channel_flow`.

    Attributes
    ----------
    output_layers : set of str
        Names of the conv / linear modules whose channels reach the network output without another
        conv in between (``"<input>"`` if input channels do).
    ties : list of set of str
        Groups of module names whose outputs are added (residual units, ``SkipConnection`` add/mul);
        ``"<input>"`` stands for the network input.
    """

    output_layers: set[str] = field(default_factory=set)
    ties: list[set[str]] = field(default_factory=list)


class _ProvenanceVisitor(ChannelVisitor):
    """Items: frozensets of the conv names that produced the channel (after norms and activations)."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def _find(self, a: str) -> str:
        while self.parent.setdefault(a, a) != a:
            a = self.parent[a]
        return a

    def _union(self, names: frozenset) -> None:
        roots = [self._find(n) for n in names]
        for r in roots[1:]:
            self.parent[r] = roots[0]

    def conv(self, name: str, module: nn.Module, flow: list) -> list:
        return [frozenset({name})] * out_channels(module)

    def mixing_norm(self, name: str, module: nn.Module, flow: list) -> list:
        return [frozenset().union(*flow)] * len(flow)  # conservative: every channel may depend on every other

    def combine(self, where: str, a: list, b: list) -> list:
        if len(a) != len(b):
            raise ValueError(f"{where!r} adds tensors with {len(a)} and {len(b)} channels.")
        out = [x | y for x, y in zip(a, b)]
        for producers in out:
            self._union(producers)
        return out

    def ties(self) -> list[set[str]]:
        groups: dict[str, set[str]] = {}
        for name in list(self.parent):
            groups.setdefault(self._find(name), set()).add(name)
        return [g for g in groups.values() if len(g) > 1]


def analyse_channel_flow(model: nn.Module) -> ChannelFlowReport:
    """Output layers and residual ties of ``model``; no forward pass is run.

    Parameters
    ----------
    model : nn.Module
        A network the interpreter can follow (module docstring).

    Returns
    -------
    ChannelFlowReport
        Output layers and groups of layers tied by additions.

    Raises
    ------
    ValueError
        For modules the interpreter does not know.
    """
    visitor = _ProvenanceVisitor()
    out = ChannelWalker(visitor).walk(model, "", [frozenset({INPUT})] * input_channels(model))
    return ChannelFlowReport(output_layers=set().union(*out), ties=visitor.ties())
