"""Private helpers shared by the metrics: input validation, layouts, likelihood handling, voxel volumes.

Every helper runs on the device of its input. Value checks (binary masks, NaN probabilities) need one
boolean per check on the host; they are skipped on the ``meta`` device, where tensors carry no data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from monai.data import MetaTensor

from monai_bayes.utils.tensors import as_plain_tensor  # noqa: F401  (re-exported for the metrics)

__all__: list[str] = []

Likelihood = Literal["auto", "bernoulli", "categorical"]
EmptyPolicy = Literal["match", "mismatch", "ignore"]
ClassReduction = Literal["mean", "none", "union"]

EMPTY_POLICIES = ("match", "mismatch", "ignore")
CLASS_REDUCTIONS = ("mean", "none", "union")
LIKELIHOODS = ("auto", "bernoulli", "categorical")
RATER_MODES = ("soft", "majority", "each")


def shape_str(x: torch.Tensor) -> str:
    """Shape of ``x`` as a plain tuple string, e.g. ``(2, 4, 1, 8, 8)``."""
    return str(tuple(x.shape))


def has_values(x: torch.Tensor) -> bool:
    """Whether ``x`` holds data that can be inspected (``False`` on the meta device)."""
    return x.device.type != "meta"


def check_option(value: str, name: str, options: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``options``, else raise a ``ValueError`` naming ``name``."""
    if value not in options:
        raise ValueError(f"{name} must be one of {tuple(options)}, got {value!r}.")
    return value


def check_tensor(x: object, name: str, min_ndim: int, layout: str) -> torch.Tensor:
    """Check that ``x`` is a tensor with at least ``min_ndim`` dimensions.

    Parameters
    ----------
    x
        Object to check.
    name
        Argument name used in the error message.
    min_ndim
        Minimum number of dimensions.
    layout
        Human-readable expected layout, e.g. ``"(B, S, C, *spatial)"``.
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor with layout {layout}, got {type(x).__name__}.")
    if x.ndim < min_ndim:
        raise ValueError(f"{name} must have layout {layout} (at least {min_ndim} dims), got shape {shape_str(x)}.")
    return x


def check_samples_and_raters(y_pred: torch.Tensor, y: torch.Tensor | None, require_y: bool = True) -> None:
    """Validate the (B, S, C, *spatial) samples / (B, R, C, *spatial) raters layout.

    ``y_pred`` and ``y`` may differ only in dim 1 (number of samples S vs. number of raters R).

    Raises
    ------
    ValueError
        If a tensor is missing, has fewer than 3 dims, the shapes disagree outside dim 1, or a channel /
        spatial dim has size 0.
    """
    check_tensor(y_pred, "y_pred", 3, "(B, S, C, *spatial)")
    if y is None:
        if require_y:
            raise ValueError("y (rater masks, layout (B, R, C, *spatial)) is required, got None.")
        return
    check_tensor(y, "y", 3, "(B, R, C, *spatial)")
    if y.ndim != y_pred.ndim or y.shape[0] != y_pred.shape[0] or y.shape[2:] != y_pred.shape[2:]:
        expected = (y_pred.shape[0], "R", *y_pred.shape[2:])
        raise ValueError(
            f"y (raters, (B, R, C, *spatial)) must match y_pred (samples, (B, S, C, *spatial)) in every dim but dim 1:"
            f" expected {expected}, got y {shape_str(y)} for y_pred {shape_str(y_pred)}."
        )
    if y_pred.shape[1] < 1 or y.shape[1] < 1:
        raise ValueError(
            f"y_pred and y need at least one sample / rater, got y_pred {shape_str(y_pred)} and y {shape_str(y)}."
        )
    if any(n == 0 for n in y_pred.shape[2:]):
        raise ValueError(
            f"y_pred and y need at least one channel and one voxel per spatial dim (an empty image has no overlap"
            f" to score), got y_pred {shape_str(y_pred)} and y {shape_str(y)}."
        )


def check_binary(x: torch.Tensor, name: str) -> None:
    """Raise ``ValueError`` if ``x`` holds values other than 0 and 1 (skipped for bool tensors and on meta)."""
    if x.dtype == torch.bool or not has_values(x):
        return
    if bool(((x != 0) & (x != 1)).any()):
        bad = x[(x != 0) & (x != 1)].flatten()[0].item()
        hint = " or pass `binarize`" if name == "y_pred" else ""
        raise ValueError(
            f"{name} must be a binary mask (values 0/1) for this metric, got a value {bad!r} in a tensor of shape"
            f" {shape_str(x)}; threshold / one-hot it first (e.g. monai.transforms.AsDiscrete){hint}."
        )


def check_probabilities(x: torch.Tensor, name: str) -> None:
    """Raise ``ValueError`` if ``x`` has NaN/inf values or values outside [0, 1] (skipped on meta)."""
    if not has_values(x) or x.dtype == torch.bool:
        return
    if not x.is_floating_point():
        x = x.float()
    if bool(~torch.isfinite(x).all()):
        n_bad = int((~torch.isfinite(x)).sum())
        raise ValueError(
            f"{name} must hold finite probabilities, got {n_bad} NaN/inf value(s) in shape {shape_str(x)}."
        )
    if bool(((x < 0) | (x > 1)).any()):
        raise ValueError(
            f"{name} must hold probabilities in [0, 1], got values in [{x.min().item():.4g}, {x.max().item():.4g}]"
            f" for shape {shape_str(x)} (pass probabilities, not logits)."
        )


def check_categorical(x: torch.Tensor, name: str, channel_dim: int = 2, atol: float = 1e-3) -> None:
    """Raise ``ValueError`` if the channel probabilities of ``x`` do not sum to one (skipped on meta)."""
    if not has_values(x):
        return
    total = x.float().sum(dim=channel_dim)
    worst = (total - 1).abs().max().item() if total.numel() else 0.0
    if worst > atol:
        raise ValueError(
            f"{name} with likelihood='categorical' must sum to 1 over the channel dim {channel_dim}, found a deviation"
            f" of {worst:.4g} in shape {shape_str(x)}; use likelihood='bernoulli' for sigmoid / multi-label outputs."
        )


def resolve_likelihood(likelihood: str, num_channels: int) -> str:
    """``"auto"`` → ``"bernoulli"`` for one channel, ``"categorical"`` for several; explicit values pass through."""
    check_option(likelihood, "likelihood", LIKELIHOODS)
    if likelihood == "auto":
        return "bernoulli" if num_channels == 1 else "categorical"
    if likelihood == "categorical" and num_channels < 2:
        raise ValueError(f"likelihood='categorical' needs at least 2 channels (dim 2), got C={num_channels}.")
    return likelihood


def select_channels(x: torch.Tensor, include_background: bool, channel_dim: int = 2) -> torch.Tensor:
    """Drop channel 0 (background) when ``include_background`` is False and there is more than one channel.

    Mirrors :func:`monai.metrics.utils.ignore_background`, but for a channel dim that is not dim 1.
    """
    if include_background or x.shape[channel_dim] == 1:
        return x
    return x.narrow(channel_dim, 1, x.shape[channel_dim] - 1)


def binarize_predictions(y_pred: torch.Tensor, binarize: float | str) -> torch.Tensor:
    """Turn (B, S, C, *spatial) probabilities into boolean masks.

    Parameters
    ----------
    y_pred
        (B, S, C, *spatial) probabilities (checked for NaN / range).
    binarize
        A float ``t``: ``y_pred > t``; ``"argmax"``: one-hot of the argmax over the channel dim (softmax outputs).
    """
    check_probabilities(y_pred, "y_pred")
    if isinstance(binarize, str):
        check_option(binarize, "binarize", ("argmax",))
        return one_hot_argmax(y_pred, channel_dim=2)
    if isinstance(binarize, bool) or not isinstance(binarize, (int, float)) or not 0.0 <= binarize < 1.0:
        raise ValueError(f"binarize must be None, 'argmax' or a threshold in [0, 1), got {binarize!r}.")
    return y_pred > binarize


def one_hot_argmax(x: torch.Tensor, channel_dim: int) -> torch.Tensor:
    """Boolean one-hot encoding of ``argmax`` over ``channel_dim`` (ties → lowest index), same shape as ``x``."""
    index = x.argmax(dim=channel_dim, keepdim=True)
    return torch.zeros_like(x, dtype=torch.bool).scatter_(channel_dim, index, True)


def discretize_mean(mean_probs: torch.Tensor, likelihood: str, threshold: float, channel_dim: int = 1) -> torch.Tensor:
    """Hard prediction from predictive-mean probabilities: ``> threshold`` (Bernoulli) or one-hot argmax."""
    if likelihood == "categorical":
        return one_hot_argmax(mean_probs, channel_dim=channel_dim).to(mean_probs.dtype)
    return (mean_probs > threshold).to(mean_probs.dtype)


def reduce_raters(y: torch.Tensor, mode: str, likelihood: str, majority_threshold: float = 0.5) -> torch.Tensor:
    """Reduce (B, R, C, *spatial) rater labels to (B, C, *spatial) (modes ``"soft"`` and ``"majority"``).

    ``"soft"`` is the rater mean (soft label). ``"majority"`` is ``mean >= majority_threshold`` per channel for
    Bernoulli labels, the one-hot argmax of the rater mean for categorical labels (ties → lowest class index).
    """
    soft = y.float().mean(dim=1)
    if mode == "soft":
        return soft
    if mode == "majority":
        if likelihood == "categorical":
            return one_hot_argmax(soft, channel_dim=1).float()
        return (soft >= majority_threshold).float()
    raise ValueError(f"rater mode must be 'soft' or 'majority' here, got {mode!r}.")


def spatial_dims(x: torch.Tensor, leading: int = 3) -> tuple[int, ...]:
    """Indices of the spatial dims of a tensor whose first ``leading`` dims are non-spatial."""
    return tuple(range(leading, x.ndim))


def voxel_volume(
    x: torch.Tensor,
    spacing: float | Sequence[float] | torch.Tensor | None,
    num_spatial: int,
) -> torch.Tensor:
    """Per-case voxel volume (mm^num_spatial) as a (B,) float32 tensor on ``x.device``.

    Resolution order: ``spacing`` if given (a float for isotropic voxels, a sequence / tensor of length
    ``num_spatial``, or a (B, num_spatial) tensor); else the ``affine`` of a MONAI ``MetaTensor``
    (|det| of its top-left ``num_spatial`` × ``num_spatial`` block, per case when batched); else 1 (unit spacing,
    as MONAI's distance metrics assume). The affine lives in host memory in MONAI; only the B resulting
    numbers are moved to ``x.device``.
    """
    batch = x.shape[0]
    device = x.device
    if spacing is not None:
        sp = torch.as_tensor(spacing, dtype=torch.float64)
        if sp.ndim == 0:
            vol = sp.reshape(1).pow(num_spatial).expand(batch)
        elif sp.ndim == 1 and sp.shape[0] == num_spatial:
            vol = sp.prod().reshape(1).expand(batch)
        elif sp.ndim == 2 and sp.shape == (batch, num_spatial):
            vol = sp.prod(dim=1)
        else:
            raise ValueError(
                f"spacing must be a float, a sequence of {num_spatial} values or a ({batch}, {num_spatial}) tensor"
                f" for y_pred of shape {shape_str(x)}, got shape {tuple(sp.shape)}."
            )
        if sp.device.type != "meta" and bool((sp <= 0).any() | ~torch.isfinite(sp).all()):
            raise ValueError(f"spacing must be positive and finite, got {sp.tolist()}.")
        return vol.to(device=device, dtype=torch.float32)
    if isinstance(x, MetaTensor) and num_spatial > 0:
        affine = torch.as_tensor(x.affine, dtype=torch.float64).detach()
        d = min(num_spatial, affine.shape[-1] - 1)
        det = torch.linalg.det(affine[..., :d, :d]).abs() if affine.device.type != "meta" else affine[..., 0, 0]
        vol = det.reshape(-1)
        if vol.shape[0] == 1:
            vol = vol.expand(batch)
        if vol.shape[0] != batch:
            raise ValueError(f"y_pred.affine must be (4, 4) or ({batch}, 4, 4), got {tuple(affine.shape)}.")
        return vol.to(device=device, dtype=torch.float32)
    return torch.ones(batch, device=device, dtype=torch.float32)


def lcm(a: int, b: int) -> int:
    """Least common multiple of two positive integers."""
    return a * b // math.gcd(a, b)
