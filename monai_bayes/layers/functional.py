"""Forward passes of conv / transposed-conv / linear modules with explicit (sampled) weights.

Stochastic layers keep the wrapped module's constructor options (stride, padding, output_padding,
dilation, groups, padding_mode) and only swap the weight tensors. These helpers run the module's
own operator with given weights, for one weight sample or for ``S`` samples at once.
"""

from __future__ import annotations

from typing import Literal, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.conv import _ConvNd, _ConvTransposeNd

__all__ = [
    "SUPPORTED_TYPES",
    "BatchedStrategy",
    "forward_with",
    "forward_with_samples",
    "forward_with_sparse_samples",
    "forward_with_sparse_samples_shared",
    "make_layer_variants",
    "sparse_touched_channels",
    "spatial_dims",
    "variant_for",
]

BatchedStrategy = Literal["auto", "loop", "grouped", "sparse"]

#: with ``"auto"``, a sparse perturbation uses the ``"sparse"`` strategy when the channels it touches
#: cover at most this fraction of the layer's (output × input) channel pairs
SPARSE_DENSITY_THRESHOLD = 0.25

#: module types whose weights the stochastic layers can replace (exact types, not subclasses)
SUPPORTED_TYPES: tuple[type[nn.Module], ...] = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Linear,
)


def make_layer_variants(mixin: type, prefix: str, module_name: str) -> dict[type[nn.Module], type[nn.Module]]:
    """Create ``<prefix><Base>`` classes (``mixin`` first in the MRO) for every supported base type.

    The classes record their base in ``_base_type`` so that a stochastic module can be turned back
    into the plain one (:func:`monai_bayes.networks.to_deterministic`).
    """
    variants = {}
    for base in SUPPORTED_TYPES:
        name = f"{prefix}{base.__name__}"
        doc = f":class:`torch.nn.{base.__name__}` with :class:`{mixin.__name__}`; see there."
        attrs = {"__module__": module_name, "__qualname__": name, "__doc__": doc, "_base_type": base}
        variants[base] = type(name, (mixin, base), attrs)
    return variants


def variant_for(variants: dict[type[nn.Module], type[nn.Module]], base: type[nn.Module]) -> type[nn.Module]:
    """The variant class for ``base`` (exact type match) or a ``ValueError`` listing the supported types."""
    try:
        return variants[base]
    except KeyError:
        supported = [t.__name__ for t in variants]
        raise ValueError(f"{base.__name__} has no stochastic variant; supported: {supported}.") from None


_CONV_FN = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T_FN = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def spatial_dims(module: nn.Module) -> int:
    """Number of spatial dims of a conv module (0 for ``Linear``)."""
    return len(module.kernel_size) if isinstance(module, _ConvNd) else 0


def _output_padding(module: _ConvTransposeNd, x: torch.Tensor, output_size: list[int] | None) -> list[int]:
    nd = spatial_dims(module)
    stride, padding, kernel, dilation = module.stride, module.padding, module.kernel_size, module.dilation
    # torch annotates these four as list[int] while its own ConvTranspose forward passes the tuples
    return module._output_padding(x, output_size, stride, padding, kernel, nd, dilation)  # type: ignore[arg-type]  # tuples, see above


def forward_with(
    module: nn.Module,
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    output_size: list[int] | None = None,
) -> torch.Tensor:
    """``module``'s forward with ``weight``/``bias`` in place of its own parameters.

    Parameters
    ----------
    module
        a ``Conv{1,2,3}d``, ``ConvTranspose{1,2,3}d`` or ``Linear`` (or a subclass of one).
    x
        input, the module's usual layout, e.g. ``(B, C_in, *spatial)``.
    weight, bias
        tensors shaped like ``module.weight`` / ``module.bias``.
    output_size
        transposed convs only, as in ``nn.ConvTranspose2d.forward``.
    """
    if isinstance(module, nn.Linear):
        return F.linear(x, weight, bias)
    if isinstance(module, _ConvTransposeNd):
        fn = _CONV_T_FN[spatial_dims(module)]
        out_pad = _output_padding(module, x, output_size)
        padding = cast(tuple[int, ...], module.padding)  # transposed convs take no string padding
        return fn(x, weight, bias, module.stride, padding, out_pad, module.groups, module.dilation)
    if isinstance(module, _ConvNd):
        return module._conv_forward(x, weight, bias)
    raise TypeError(f"forward_with supports conv, transposed conv and linear modules, got {type(module).__name__}.")


def dense_strategy(strategy: BatchedStrategy, x: torch.Tensor) -> str:
    """``"loop"`` or ``"grouped"`` for a dense set of weight samples (``"auto"`` picks by device)."""
    if strategy in ("auto", "sparse"):
        # Measured (benchmarks/bench_core.py): on CPU a loop of dense convs beats one grouped conv
        # plus the two layout permutes it needs; on CUDA the grouped conv saves kernel launches.
        return "grouped" if x.is_cuda else "loop"
    if strategy not in ("loop", "grouped"):
        raise ValueError(f"batched_strategy must be 'auto', 'loop', 'grouped' or 'sparse', got {strategy!r}.")
    return strategy


def forward_with_samples(
    module: nn.Module,
    x: torch.Tensor,
    weights: torch.Tensor,
    biases: torch.Tensor | None,
    strategy: BatchedStrategy = "auto",
    output_size: list[int] | None = None,
) -> torch.Tensor:
    """Apply ``S`` weight samples to ``S`` sample-major blocks of the batch in one call.

    Parameters
    ----------
    x
        ``(S·B, ...)``, block ``s`` (items ``s·B … s·B+B-1``) goes through weight sample ``s``.
    weights
        ``(S, *module.weight.shape)``.
    biases
        ``(S, *module.bias.shape)``, or the shared ``module.bias`` (no sample dim), or ``None``.
    strategy
        ``"loop"`` (one dense call per sample), ``"grouped"`` (a single grouped convolution
        with ``groups = S·module.groups``), or ``"auto"`` (by device). Both give the same result.

    Returns
    -------
    ``(S·B, ...)``: the outputs, sample-major like the input.
    """
    S = weights.shape[0]
    if x.shape[0] % S:
        raise ValueError(f"input batch {x.shape[0]} is not a multiple of the {S} weight samples.")
    B = x.shape[0] // S
    module_bias = cast("torch.Tensor | None", module.bias)
    per_sample_bias = biases is not None and module_bias is not None and biases.dim() == module_bias.dim() + 1

    if isinstance(module, nn.Linear):
        xs = x.reshape(S, -1, x.shape[-1])
        out = torch.bmm(xs, weights.transpose(1, 2))
        if biases is not None:
            out = out + (biases.unsqueeze(1) if per_sample_bias else biases)
        return out.reshape(*x.shape[:-1], weights.shape[1])

    if dense_strategy(strategy, x) == "loop":
        outs = []
        for s in range(S):
            b = biases[s] if per_sample_bias and biases is not None else biases
            outs.append(forward_with(module, x[s * B : (s + 1) * B], weights[s], b, output_size))
        return torch.cat(outs)
    return _grouped_forward(module, x, weights, biases, per_sample_bias, output_size)


def _grouped_forward(
    module: nn.Module,
    x: torch.Tensor,
    weights: torch.Tensor,
    biases: torch.Tensor | None,
    per_sample_bias: bool,
    output_size: list[int] | None,
) -> torch.Tensor:
    """One grouped (transposed) convolution over ``S`` weight samples: batch ``S·B`` → ``B`` with ``S·C`` channels."""
    S = weights.shape[0]
    B = x.shape[0] // S
    spatial = x.shape[2:]
    xg = x.reshape(S, B, x.shape[1], *spatial).transpose(0, 1).reshape(B, S * x.shape[1], *spatial)
    wg = weights.reshape(S * weights.shape[1], *weights.shape[2:])
    if biases is None:
        bg = None
    else:
        bg = biases.reshape(-1) if per_sample_bias else biases.repeat(S)
    conv = cast(_ConvNd, module)  # Linear modules were handled by the caller
    groups = S * conv.groups
    nd = spatial_dims(conv)
    if isinstance(conv, _ConvTransposeNd):
        out_pad = _output_padding(conv, x, output_size)
        padding = cast(tuple[int, ...], conv.padding)  # transposed convs take no string padding
        out = _CONV_T_FN[nd](xg, wg, bg, conv.stride, padding, out_pad, groups, conv.dilation)
    elif conv.padding_mode != "zeros":
        xg = F.pad(xg, conv._reversed_padding_repeated_twice, mode=conv.padding_mode)
        out = _CONV_FN[nd](xg, wg, bg, conv.stride, 0, conv.dilation, groups)
    else:
        out = _CONV_FN[nd](xg, wg, bg, conv.stride, conv.padding, conv.dilation, groups)
    c_out = out.shape[1] // S
    return out.reshape(B, S, c_out, *out.shape[2:]).transpose(0, 1).reshape(S * B, c_out, *out.shape[2:])


def sparse_touched_channels(module: nn.Module, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Channels touched by a sparse weight perturbation of a conv / transposed conv with ``groups=1``.

    Parameters
    ----------
    index
        flat indices (k,) into ``module.weight`` of the perturbed entries.

    Returns
    -------
    ``(out_channels, in_channels, compact_index)``: the sorted touched output channels ``A`` and
    input channels ``I``, and for each entry its flat index into the compact kernel of shape
    ``(|A|, |I|, *k)`` (conv) or ``(|I|, |A|, *k)`` (transposed conv, whose weight is in × out).
    """
    shape = cast(torch.Tensor, module.weight).shape
    K = shape[2:].numel()
    first, second = index // (shape[1] * K), (index // K) % shape[1]
    kk = index % K
    transposed = isinstance(module, _ConvTransposeNd)
    out_ch, in_ch = (second, first) if transposed else (first, second)
    out_idx, in_idx = torch.unique(out_ch), torch.unique(in_ch)
    a_pos, i_pos = torch.searchsorted(out_idx, out_ch), torch.searchsorted(in_idx, in_ch)
    compact = ((i_pos * len(out_idx) + a_pos) if transposed else (a_pos * len(in_idx) + i_pos)) * K + kk
    return out_idx, in_idx, compact


def forward_with_sparse_samples(
    module: nn.Module,
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    index: torch.Tensor,
    delta: torch.Tensor,
    bias_delta: torch.Tensor | None = None,
    output_size: list[int] | None = None,
) -> torch.Tensor:
    """``S`` samples ``W_s = weight + scatter(index, delta_s)`` using the linearity of convolution.

    ``f(x_s; W + Δ_s) = f(x_s; W) + f(x_s; Δ_s)``: the first term is one dense call over the whole
    ``S·B`` batch (as efficient as the deterministic layer); the second only involves the output
    channels ``A`` and input channels ``I`` that the sparse ``Δ_s`` touches, so it is cheap when the
    Bayesian entries are few and concentrated (see :func:`sparse_touched_channels`). Conv and
    transposed conv with ``groups=1`` only.

    Parameters
    ----------
    x
        ``(S·B, C_in, *spatial)`` sample-major.
    weight, bias
        the mean parameters.
    index
        ``(k,)`` flat indices of the perturbed weight entries; ``delta``: ``(S, k)`` perturbations.
    bias_delta
        optional ``(S, C_out)`` bias perturbations.
    """
    if module.groups != 1 or not isinstance(module, _ConvNd):
        raise ValueError(f"the 'sparse' strategy needs a conv or transposed conv with groups=1, got {module!r}.")
    S = delta.shape[0]
    B = x.shape[0] // S
    y = forward_with(module, x, weight, bias, output_size)
    out_idx, in_idx, dW = _compact_delta(module, index, delta)
    ys = y.view(S, B, *y.shape[1:])  # in-place updates below: the conv backward does not need y
    x_touched = x.index_select(1, in_idx)  # before slicing: a lazy skip concatenation gathers only these channels
    for s in range(S):
        corr = forward_with(module, x_touched[s * B : (s + 1) * B], dW[s], None, output_size)
        ys[s].index_add_(1, out_idx, corr)
    if bias_delta is not None:
        ys.add_(bias_delta.view(S, 1, -1, *([1] * (y.dim() - 2))))
    return y


def _compact_delta(
    module: nn.Module, index: torch.Tensor, delta: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(out_channels A, in_channels I, ΔW)``: the ``S`` perturbations as compact kernels ``(S, |A|, |I|, *k)``.

    For a transposed conv the compact kernels are ``(S, |I|, |A|, *k)`` (its weight is in × out).
    """
    out_idx, in_idx, compact = sparse_touched_channels(module, index)
    kernel = cast(torch.Tensor, module.weight).shape[2:]
    transposed = isinstance(module, _ConvTransposeNd)
    shape = (len(in_idx), len(out_idx), *kernel) if transposed else (len(out_idx), len(in_idx), *kernel)
    S = delta.shape[0]
    dW = delta.new_zeros(S, torch.Size(shape).numel()).index_add(1, compact, delta).view(S, *shape)
    return out_idx, in_idx, dW


def forward_with_sparse_samples_shared(
    module: nn.Module,
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    index: torch.Tensor,
    delta: torch.Tensor,
    bias_delta: torch.Tensor | None = None,
    output_size: list[int] | None = None,
) -> torch.Tensor:
    """``S`` samples ``W_s = weight + scatter(index, delta_s)`` of a layer whose input is the same for every sample.

    ``f(x; W + Δ_s) = f(x; W) + f(x; Δ_s)``: one dense call on the ``B`` shared items, plus *one* convolution
    that computes all ``S`` corrections at once -- the compact kernels ``Δ_s`` restricted to the touched input
    channels ``I`` and output channels ``A`` (:func:`sparse_touched_channels`) stacked along the output channels
    (``S·|A|`` of them), applied to ``x[:, I]``. The cost is ``1 + S·|A|·|I| / (C_out·C_in)`` dense calls on
    ``B`` items instead of ``S`` (compare :func:`forward_with_sparse_samples`, whose input is already
    ``S·B`` items). Exactly equal to ``S`` dense calls up to float rounding (tested in float64). Conv and
    transposed conv with ``groups=1`` only.

    Parameters
    ----------
    module : torch.nn.Module
        A conv or transposed conv with ``groups=1``.
    x : torch.Tensor
        ``(B, C_in, *spatial)``, shared by all samples.
    weight, bias : torch.Tensor
        The mean parameters (``bias`` may be ``None``).
    index : torch.Tensor
        ``(k,)`` flat indices of the perturbed weight entries.
    delta : torch.Tensor
        ``(S, k)`` perturbations.
    bias_delta : torch.Tensor, optional
        ``(S, C_out)`` bias perturbations.
    output_size : list of int, optional
        Transposed convs only.

    Returns
    -------
    torch.Tensor
        ``(S·B, C_out, *spatial_out)``, sample-major.

    Raises
    ------
    ValueError
        If the module is not a conv / transposed conv with ``groups=1``.
    """
    if not isinstance(module, _ConvNd) or module.groups != 1:
        raise ValueError(f"the shared sparse path needs a conv or transposed conv with groups=1, got {module!r}.")
    S, B = delta.shape[0], x.shape[0]
    y = forward_with(module, x, weight, bias, output_size)  # (B, C_out, *sp)
    out_idx, in_idx, dW = _compact_delta(module, index, delta)
    a, kernel = len(out_idx), dW.shape[3:]
    if isinstance(module, _ConvTransposeNd):  # (S, |I|, |A|, *k) -> (|I|, S·|A|, *k)
        stacked = dW.transpose(0, 1).reshape(len(in_idx), S * a, *kernel)
    else:  # (S, |A|, |I|, *k) -> (S·|A|, |I|, *k)
        stacked = dW.reshape(S * a, len(in_idx), *kernel)
    corr = forward_with(module, x.index_select(1, in_idx), stacked, None, output_size)  # (B, S·|A|, *sp)
    out = y.repeat(S, *([1] * (y.dim() - 1)))
    blocks = out.view(S, B, *y.shape[1:])
    blocks.index_add_(2, out_idx, corr.view(B, S, a, *corr.shape[2:]).transpose(0, 1))
    if bias_delta is not None:
        blocks.add_(bias_delta.view(S, 1, -1, *([1] * (y.dim() - 2))))
    return out
