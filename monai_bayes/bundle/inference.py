"""Inputs for a bundle's ``inference`` config and per-method Monte-Carlo sample counts."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence, Sized
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from monai_bayes.utils.atomic import atomic_path
from monai_bayes.workflows.methods import method_spec

__all__ = ["IMAGE_SUFFIXES", "export_hu_slices", "inference_inputs", "num_mc_samples", "require_inference_inputs"]

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".npy", ".png", ".jpg")


def num_mc_samples(method: str, num_samples: int, ensemble_size: int = 5) -> int:
    """Monte-Carlo samples to draw at evaluation / inference: 1 for a deterministic network (all
    samples would be equal), ``ensemble_size`` for an ensemble (each member once), else ``num_samples``.
    """
    rule = method_spec(method).mc_samples
    if rule == "one":
        return 1
    if rule == "members":
        return ensemble_size
    return num_samples


def export_hu_slices(
    items: Sequence[Mapping[str, Any]],
    out_dir: str | os.PathLike,
    hu_window: tuple[float, float] = (-1000.0, 400.0),
    limit: int = 8,
) -> list[dict[str, str]]:
    """Write cached LIDC patches back as 2D NIfTI images in HU (stand-ins for "new images").

    The cache holds windowed ``[0, 1]`` patches; ``hu = lo + x·(hi − lo)`` inverts the window (values
    outside it stay clipped). Pixel spacing comes from the item's ``pixel_spacing_mm`` when present.
    Existing files are reused. Returns ``[{"image": path}, …]``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lo, hi = hu_window
    result = []
    for item in list(items)[:limit]:
        path = out / (Path(str(item["image"])).name.replace(".npy", "") + "_hu.nii.gz")
        if not path.is_file():
            x = np.load(item["image"], allow_pickle=False)[0].astype(np.float32)
            spacing = [float(s) for s in item.get("pixel_spacing_mm") or (1.0, 1.0)]
            affine = np.diag([spacing[0], spacing[1], 1.0, 1.0])
            with atomic_path(path) as tmp:
                nib.save(nib.Nifti1Image(lo + x * (hi - lo), affine), str(tmp))
        result.append({"image": str(path)})
    return result


def inference_inputs(
    input_dir: str | os.PathLike | None,
    default: Callable[[], list[dict[str, str]]] | None = None,
) -> list[dict[str, str]]:
    """The images to run inference on: every image file in ``input_dir`` (sorted by name), or -- when
    it is empty -- ``default()`` (e.g. :func:`export_hu_slices` of held-out patches).
    """
    if input_dir is None or str(input_dir).strip() in ("", "None", "null"):
        if default is None:
            raise ValueError(
                "inference: no input_dir given; pass --input_dir <folder of images> "
                f"(files ending in {', '.join(IMAGE_SUFFIXES)})."
            )
        return default()
    folder = Path(input_dir)
    if not folder.is_dir():
        raise ValueError(f"input_dir {str(folder)!r} is not a folder of images to run inference on.")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES))
    if not files:
        raise ValueError(
            f"input_dir {str(folder)!r} holds no images; expected files ending in {', '.join(IMAGE_SUFFIXES)}."
        )
    return [{"image": str(p)} for p in files]


def require_inference_inputs(dataset: Sized, input_dir: str | os.PathLike | None) -> int:
    """Fail before inference runs on nothing: the inference config's dataset is empty when no ``input_dir``
    (``dataset_dir``) was given -- so the config still parses for MONAI's property checks.

    Parameters
    ----------
    dataset : Sized
        The inference dataset.
    input_dir : str or os.PathLike or None
        The folder it was read from (named in the error).

    Returns
    -------
    int
        The number of inputs.

    Raises
    ------
    ValueError
        If ``dataset`` is empty.
    """
    if len(dataset) == 0:
        raise ValueError(
            f"inference: no images to run on (input_dir={str(input_dir or '')!r}); pass --dataset_dir "
            f"(or --input_dir) <folder of images ending in {', '.join(IMAGE_SUFFIXES)}>."
        )
    return len(dataset)
