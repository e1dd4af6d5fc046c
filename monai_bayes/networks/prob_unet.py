"""Multi-rater baselines: Probabilistic U-Net (Kohl et al. 2018), Stochastic Segmentation Network (Monteiro 2020).

Both wrap a MONAI :class:`~monai.networks.nets.UNet` whose last decoder level outputs ``F = channels[0]``
feature maps (instead of class logits) and add the part that makes the segmentation stochastic:

* :class:`ProbabilisticUNet` -- prior net ``p(z | x)`` and posterior net ``q(z | x, y)``
  (:class:`AxisAlignedGaussianNet`, the U-Net's encoder path of MONAI residual units, global average pool,
  1×1 conv to ``[μ, log σ]``), a :class:`~monai_bayes.layers.GaussianLatent` ``z`` of ``L`` dimensions,
  broadcast over the image and injected at the last decoder level by ``fcomb`` -- 1×1 convs on
  ``[features, z]``. Training: ``forward(x, y)`` samples ``z`` from the posterior given one rater's mask
  ``y`` and the latent layer records ``KL(q ‖ p)``; the loss is :class:`~monai_bayes.losses.ELBOLoss`
  with ``kl_reduction`` = voxels per item (cross-entropy + β·KL / voxels). Inference: ``forward(x)``
  samples ``z`` from the prior, one per Monte-Carlo sample. With ``nested_latent`` a
  :class:`~monai_bayes.layers.NestedLatentMask` orders the latent dimensions (BN3 on the latent,
  seed 001's LIDC experiment), and the number of kept dimensions is the width of
  :func:`~monai_bayes.layers.nested_width`.
* :class:`StochasticSegmentationNetwork` -- three 1×1 conv heads on the features give the mean ``μ``,
  the log-diagonal and the rank-``R`` factor of a Gaussian over all logits
  (:class:`~monai_bayes.layers.LowRankLogits`); trained with the Monte-Carlo log-likelihood
  (:class:`~monai_bayes.losses.LowRankLikelihoodLoss`), sampled at inference.

Both run under :class:`~monai_bayes.inferers.MonteCarloInferer` like every other stochastic network
(batched samples, frozen latent noise, shared prefix: the U-Net and the prior net run once per pass).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution, ResidualUnit
from monai.networks.nets import UNet
from torch import nn

from monai_bayes.layers.latent import GaussianLatent, LowRankLogits, NestedLatentMask

__all__ = [
    "AxisAlignedGaussianNet",
    "ProbabilisticUNet",
    "StochasticSegmentationNetwork",
    "feature_unet",
    "label_one_hot",
    "unet_settings",
]

#: the constructor settings of MONAI's UNet that the baselines reuse from a ``network_def``
_UNET_SETTINGS = ("spatial_dims", "in_channels", "out_channels", "channels", "strides", "num_res_units", "norm")


def unet_settings(unet: UNet) -> dict[str, Any]:
    """The settings of an instantiated MONAI UNet that the baselines take (e.g. from a bundle's ``network_def``).

    Parameters
    ----------
    unet : monai.networks.nets.UNet
        E.g. the bundle's ``network_def``.

    Returns
    -------
    dict of str to Any
        ``spatial_dims``, ``in_channels``, ``out_channels``, ``channels``, ``strides``, ``num_res_units``, ``norm``.

    Raises
    ------
    TypeError
        If ``unet`` is not a MONAI UNet.
    """
    if not isinstance(unet, UNet):
        raise TypeError(f"expected a monai.networks.nets.UNet network_def, got {type(unet).__name__}.")
    return {
        "spatial_dims": unet.dimensions,
        "in_channels": unet.in_channels,
        "out_channels": unet.out_channels,
        "channels": tuple(unet.channels),
        "strides": tuple(unet.strides),
        "num_res_units": unet.num_res_units,
        "norm": unet.norm,
    }


def feature_unet(
    spatial_dims: int,
    in_channels: int,
    channels: Sequence[int],
    strides: Sequence[int],
    num_res_units: int = 2,
    norm: Any = "batch",
) -> UNet:
    """A MONAI UNet whose output is the last decoder level's ``channels[0]`` feature maps (the backbone)."""
    return UNet(spatial_dims, in_channels, channels[0], channels, strides, num_res_units=num_res_units, norm=norm)


def label_one_hot(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(N, C, *sp)`` float one-hot masks from class indices ``(N, 1, *sp)`` or one-hot ``(N, C, *sp)``.

    Parameters
    ----------
    y : torch.Tensor
        One rater's mask per item.
    num_classes : int
        ``C``.

    Returns
    -------
    torch.Tensor
        Float one-hot masks.

    Raises
    ------
    ValueError
        For any other channel count.
    """
    if y.shape[1] == num_classes and num_classes > 1:
        return y.float()
    if y.shape[1] == 1:
        return F.one_hot(y[:, 0].long(), num_classes).movedim(-1, 1).float()
    raise ValueError(
        f"the rater mask must have 1 channel (class indices) or {num_classes} (one-hot), got shape {tuple(y.shape)}."
    )


class AxisAlignedGaussianNet(nn.Module):
    """Prior / posterior net of the Prob. U-Net: encoder → global mean → 1×1 conv → ``[μ, log σ]`` ``(N, 2L)``.

    The encoder is the U-Net's down path (one MONAI :class:`~monai.networks.blocks.ResidualUnit` per
    level, the first with stride 1, as in Kohl et al.'s reference code); the posterior net takes the
    image and the one-hot rater mask concatenated.

    Parameters
    ----------
    spatial_dims : int
        2 or 3.
    in_channels : int
        Image channels (+ classes for the posterior net).
    latent_dim : int
        ``L``.
    channels : sequence of int
        Features per level.
    strides : sequence of int
        Down-sampling between levels (``len(channels) - 1`` values).
    num_res_units : int
        Conv layers per residual unit.
    norm : Any
        MONAI norm name or tuple.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        latent_dim: int,
        channels: Sequence[int],
        strides: Sequence[int],
        num_res_units: int = 2,
        norm: Any = "batch",
    ) -> None:
        super().__init__()
        if len(strides) != len(channels) - 1:
            raise ValueError(f"strides must have len(channels) - 1 = {len(channels) - 1} values, got {list(strides)}.")
        blocks = []
        c_in = in_channels
        for c, s in zip(channels, (1, *strides)):
            blocks.append(ResidualUnit(spatial_dims, c_in, c, strides=s, subunits=max(num_res_units, 1), norm=norm))
            c_in = c
        self.encoder = nn.Sequential(*blocks)
        self.spatial_dims = spatial_dims
        self.head = Convolution(spatial_dims, c_in, 2 * latent_dim, kernel_size=1, conv_only=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(x)
        pooled = h.mean(dim=tuple(range(2, h.dim())), keepdim=True)
        return self.head(pooled).flatten(1)


def _fcomb(spatial_dims: int, features: int, latent_dim: int, out_channels: int, num_layers: int) -> nn.Sequential:
    """1×1 convs on ``[features, z]``: ``num_layers - 1`` with ReLU, then the logits (Kohl et al.'s ``fcomb``)."""
    layers: list[nn.Module] = []
    c_in = features + latent_dim
    for _ in range(num_layers - 1):
        layers += [Convolution(spatial_dims, c_in, features, kernel_size=1, conv_only=True), nn.ReLU()]
        c_in = features
    layers.append(Convolution(spatial_dims, c_in, out_channels, kernel_size=1, conv_only=True))
    return nn.Sequential(*layers)


class ProbabilisticUNet(nn.Module):
    """Probabilistic U-Net (Kohl et al., NeurIPS 2018) on MONAI blocks; see the module docstring.

    Parameters
    ----------
    spatial_dims : int
        2 or 3.
    in_channels : int
        Image channels.
    out_channels : int
        Classes ``C`` (softmax logits out).
    channels : sequence of int
        Features per level of the U-Net and of the prior / posterior encoders.
    strides : sequence of int
        Down-sampling between levels.
    latent_dim : int
        ``L`` (6 on LIDC in Kohl et al.).
    num_res_units : int
        Conv layers per MONAI residual unit.
    norm : Any
        MONAI norm of the U-Net and encoders.
    fcomb_layers : int
        1×1 convs after the latent injection (Kohl et al.: 3 + the output conv; here ``fcomb_layers`` in all).
    nested_latent : bool
        Add a :class:`~monai_bayes.layers.NestedLatentMask` on ``z`` (BN3 on the latent).
    nested_options : dict, optional
        Keywords of :class:`~monai_bayes.layers.NestedLatentMask` (``always_kept``, ``prior_keep``,
        ``order_init``, ``temperature``, ``straight_through``).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        channels: Sequence[int],
        strides: Sequence[int],
        latent_dim: int = 6,
        num_res_units: int = 2,
        norm: Any = "batch",
        fcomb_layers: int = 3,
        nested_latent: bool = False,
        nested_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(fcomb_layers, int) or fcomb_layers < 1:
            raise ValueError(f"fcomb_layers must be a positive int, got {fcomb_layers!r}.")
        if nested_options and not nested_latent:
            raise ValueError("nested_options are given but nested_latent is False; set nested_latent=True.")
        self.out_channels = out_channels
        self.spatial_dims = spatial_dims
        self.unet = feature_unet(spatial_dims, in_channels, channels, strides, num_res_units, norm)
        self.prior_net = AxisAlignedGaussianNet(
            spatial_dims, in_channels, latent_dim, channels, strides, num_res_units, norm
        )
        self.posterior_net = AxisAlignedGaussianNet(
            spatial_dims, in_channels + out_channels, latent_dim, channels, strides, num_res_units, norm
        )
        self.latent = GaussianLatent(latent_dim)
        self.nested: nn.Module = (
            NestedLatentMask(latent_dim, **(nested_options or {})) if nested_latent else nn.Identity()
        )
        self.fcomb = _fcomb(spatial_dims, channels[0], latent_dim, out_channels, fcomb_layers)

    @classmethod
    def from_unet(cls, unet: UNet, **kwargs: Any) -> ProbabilisticUNet:
        """A Prob. U-Net with the settings of a MONAI UNet (e.g. a bundle's ``network_def``); ``kwargs``: the rest."""
        return cls(**unet_settings(unet), **kwargs)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(N, C, *sp)``: with ``y`` (one rater's mask) ``z`` comes from the posterior, else from the prior."""
        features = self.unet(x)
        prior = self.prior_net(x)
        posterior = None
        if y is not None:
            posterior = self.posterior_net(torch.cat([x, label_one_hot(y, self.out_channels).to(x.dtype)], dim=1))
        z = self.nested(self.latent(prior, posterior))
        return self.fcomb(_inject(features, z))


def _inject(features: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``[features, z broadcast over space]`` along channels: ``(N, F, *sp)``, ``(N, L)`` → ``(N, F + L, *sp)``.

    Under :func:`~monai_bayes.layers.shared_prefix_forward` the features of ``B`` items meet ``S·B`` latents
    and the shared-prefix mode repeats them, so the two batches need not match here.
    """
    tiled = z.reshape(*z.shape, *([1] * (features.dim() - 2))).expand(-1, -1, *features.shape[2:])
    return torch.cat([features, tiled], dim=1)


class StochasticSegmentationNetwork(nn.Module):
    """Stochastic Segmentation Network (Monteiro et al., NeurIPS 2020) on a MONAI UNet; see the module docstring.

    Parameters
    ----------
    spatial_dims : int
        2 or 3.
    in_channels : int
        Image channels.
    out_channels : int
        Classes ``C``.
    channels : sequence of int
        U-Net features per level.
    strides : sequence of int
        U-Net down-sampling.
    rank : int
        ``R`` of the covariance factor (10 in Monteiro et al.).
    num_res_units : int
        Conv layers per MONAI residual unit.
    norm : Any
        MONAI norm.
    diagonal_eps : float
        Added to the diagonal of the covariance.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        channels: Sequence[int],
        strides: Sequence[int],
        rank: int = 10,
        num_res_units: int = 2,
        norm: Any = "batch",
        diagonal_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        features = channels[0]
        self.unet = feature_unet(spatial_dims, in_channels, channels, strides, num_res_units, norm)
        self.activation = nn.ReLU()
        self.mean_head = Convolution(spatial_dims, features, out_channels, kernel_size=1, conv_only=True)
        self.log_diag_head = Convolution(spatial_dims, features, out_channels, kernel_size=1, conv_only=True)
        self.factor_head = Convolution(spatial_dims, features, rank * out_channels, kernel_size=1, conv_only=True)
        self.logits = LowRankLogits(rank, diagonal_eps)

    @classmethod
    def from_unet(cls, unet: UNet, **kwargs: Any) -> StochasticSegmentationNetwork:
        """An SSN with the settings of a MONAI UNet (e.g. a bundle's ``network_def``); ``kwargs`` add the rest."""
        return cls(**unet_settings(unet), **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One logit sample per item (``"sample"`` mode) or the mean logits, ``(N, C, *sp)``."""
        h = self.activation(self.unet(x))
        return self.logits(self.mean_head(h), self.log_diag_head(h), self.factor_head(h))
