"""Monte-Carlo inference of a bundle's network on a DICOM volume.

2D bundles run slice-wise on whole axial slices (batches of ``(b, 1, Y, X)``); 3D bundles run on the
volume ``(1, 1, Z, Y, X)`` through the bundle's inferer (e.g. a ``SlidingWindowInferer`` inside the
``MonteCarloInferer``). Either way the ``S`` samples are summarised per voxel by
:func:`monai_bayes.uncertainty.uncertainty_maps` and returned on the source grid, in the
:class:`~monai_bayes.data.dicom.DicomVolume`'s array order ``(Z, Y, X)``.

The MC noise is seeded (:attr:`InferenceBundle.seed`) and drawn once per call, so sample ``s`` uses
the same weights on every slice batch: the result does not depend on ``slice_batch_size`` and the
same input, model and settings give the same output (the idempotent UIDs rely on it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from monai_bayes.data.dicom import DicomVolume
from monai_bayes.pacs.bundle import InferenceBundle
from monai_bayes.pacs.errors import BundleError, PacsConfigError
from monai_bayes.pacs.settings import DicomInferenceSettings
from monai_bayes.uncertainty import uncertainty_maps
from monai_bayes.utils.random import seeded_global_rng

__all__ = ["Prediction", "predict_volume", "resolve_mode"]

logger = logging.getLogger(__name__)


@dataclass
class Prediction:
    """Summary of the ``S`` Monte-Carlo samples on the source grid.

    Attributes
    ----------
    probability
        ``(K, Z, Y, X)`` float32 predictive mean probability of each segment's class (segment
        order of the settings).
    mask
        ``(K, Z, Y, X)`` bool, ``probability >= threshold``.
    uncertainty
        ``{"total_entropy" | "aleatoric_entropy" | "mutual_information": (U, Z, Y, X) float32}``
        in nats; ``U = 1`` for softmax (entropy over all classes), ``U = K`` for sigmoid (per
        segment's channel).
    num_samples, activation, mode
        How it was computed.
    """

    probability: np.ndarray
    mask: np.ndarray
    uncertainty: dict[str, np.ndarray]
    num_samples: int
    activation: str
    mode: str


def resolve_mode(bundle: InferenceBundle, settings: DicomInferenceSettings) -> str:
    """``"2d"`` or ``"3d"``: the setting, or (``"auto"``) the bundle's spatial dims."""
    if settings.mode != "auto":
        return settings.mode
    if bundle.spatial_dims is None:
        raise BundleError(
            f"{bundle.root}: cannot tell 2D from 3D (no network_data_format.inputs.image.spatial_shape in "
            "metadata.json and no network_def.spatial_dims); set mode to '2d' or '3d' in the PACS settings"
        )
    return f"{bundle.spatial_dims}d"


def _preprocess(bundle: InferenceBundle, image: np.ndarray) -> torch.Tensor:
    """Apply the bundle's preprocessing to one channel-first image; the grid must not change."""
    out = bundle.preprocessing(image)
    t = torch.as_tensor(np.asarray(out) if not isinstance(out, torch.Tensor) else out.as_subclass(torch.Tensor))
    if tuple(t.shape) != tuple(image.shape):
        raise BundleError(
            f"{bundle.root}: preprocessing changed the image shape from {tuple(image.shape)} to {tuple(t.shape)}; "
            "the PACS pipeline needs outputs on the source grid (use intensity transforms only)"
        )
    return t.float()


def _summarise(probs: torch.Tensor, activation: str, channels: list[int]) -> dict[str, torch.Tensor]:
    """``probs`` ``(B, S, C, *sp)`` → per-segment mean probability and uncertainty maps, ``(B, ·, *sp)``."""
    C = probs.shape[2]
    bad = [c for c in channels if c >= C]
    if bad:
        raise PacsConfigError(f"segment class_index {bad} out of range: the network outputs {C} channel(s)")
    maps = uncertainty_maps(probs, activation)
    out = {"probability": maps["mean"][:, channels]}
    pick = (lambda m: m) if activation == "softmax" else (lambda m: m[:, channels])
    out["total_entropy"] = pick(maps["total"])
    out["aleatoric_entropy"] = pick(maps["aleatoric"])
    out["mutual_information"] = pick(maps["epistemic"])
    return out


@torch.no_grad()
def predict_volume(volume: DicomVolume, bundle: InferenceBundle, settings: DicomInferenceSettings) -> Prediction:
    """Run MC inference of ``bundle`` on ``volume``.

    Parameters
    ----------
    volume
        Source series, ``volume.array`` ``(Z, Y, X)`` in stored units after the modality LUT (HU).
    bundle
        Network, MC inferer and preprocessing.
    settings
        Mode, slice batch size, segments (their ``class_index``) and threshold.

    Returns
    -------
    Prediction
        All arrays ``(·, Z, Y, X)`` on the source grid, float32 / bool, on the CPU.
    """
    mode = resolve_mode(bundle, settings)
    channels = [s.class_index for s in settings.segments]
    if bundle.activation == "softmax" and 0 in channels:
        logger.warning("segment with class_index 0 under softmax: that is usually the background class")
    with seeded_global_rng(bundle.seed, bundle.device):  # MC-dropout masks come from the global RNG
        return _predict(volume, bundle, settings, mode, channels)


def _predict(
    volume: DicomVolume, bundle: InferenceBundle, settings: DicomInferenceSettings, mode: str, channels: list[int]
) -> Prediction:
    vol = np.asarray(volume.array, dtype=np.float32)
    parts: dict[str, list[torch.Tensor]] = {}
    if mode == "2d":
        Z, b = vol.shape[0], settings.slice_batch_size
        for start in range(0, Z, b):
            batch = torch.stack([_preprocess(bundle, vol[z][None]) for z in range(start, min(start + b, Z))])
            probs = bundle.inferer(batch.to(bundle.device), bundle.network)  # (b, S, C, Y, X)
            for k, v in _summarise(probs, bundle.activation, channels).items():
                parts.setdefault(k, []).append(v.float().cpu())
        stacked = {k: torch.cat(v, dim=0).transpose(0, 1) for k, v in parts.items()}  # (·, Z, Y, X)
    else:
        x = _preprocess(bundle, vol[None])[None]  # (1, 1, Z, Y, X)
        probs = bundle.inferer(x.to(bundle.device), bundle.network)  # (1, S, C, Z, Y, X)
        stacked = {k: v[0].float().cpu() for k, v in _summarise(probs, bundle.activation, channels).items()}
    expected = tuple(vol.shape)
    for k, v in stacked.items():
        if tuple(v.shape[1:]) != expected:
            raise BundleError(
                f"{bundle.root}: network output {k} has spatial shape {tuple(v.shape[1:])}, expected the input's "
                f"{expected}"
            )
    probability = stacked.pop("probability").numpy().astype(np.float32)
    return Prediction(
        probability=probability,
        mask=probability >= settings.threshold,
        uncertainty={k: v.numpy().astype(np.float32) for k, v in stacked.items()},
        num_samples=bundle.num_samples,
        activation=bundle.activation,
        mode=mode,
    )
