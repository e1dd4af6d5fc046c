"""ChestMNIST (MedMNIST v2): multi-label chest X-ray classification from one ``.npz`` file.

The MedMNIST file (``chestmnist.npz`` for 28², ``chestmnist_224.npz`` for the 224² MedMNIST+
version) holds ``train_images`` ``(N, H, W)`` uint8, ``train_labels`` ``(N, 14)`` uint8 {0, 1}
(multi-label: zero, one or several findings per image), and the same for ``val_*`` and ``test_*``.
It is read with ``allow_pickle=False``; every key, shape and dtype is checked.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from monai_bayes.data.errors import DataFormatError

#: What a damaged .npz raises while opening or reading a member (truncated zip, bad deflate stream ...).
_NPZ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)

__all__ = ["CHESTMNIST_CLASSES", "CHESTMNIST_OFFICIAL_SIZES", "ChestMNISTDataset", "load_chestmnist"]

#: The 14 ChestX-ray14 findings, in MedMNIST's label order.
CHESTMNIST_CLASSES = (
    "atelectasis",
    "cardiomegaly",
    "effusion",
    "infiltration",
    "mass",
    "nodule",
    "pneumonia",
    "pneumothorax",
    "consolidation",
    "edema",
    "emphysema",
    "fibrosis",
    "pleural",
    "hernia",
)
SPLITS = ("train", "val", "test")
#: Images per split of the official ChestMNIST (the NIH ChestX-ray14 split). ``medmnist.ChestMNIST`` asserts
#: these counts in ``len()`` (and so in a DataLoader): a file with other counts opens but cannot be iterated.
CHESTMNIST_OFFICIAL_SIZES = {"train": 78468, "val": 11219, "test": 22433}


def load_chestmnist(
    path: str | os.PathLike[str], splits: Sequence[str] = SPLITS, num_classes: int = len(CHESTMNIST_CLASSES)
) -> dict[str, dict[str, np.ndarray]]:
    """Read and validate a (Chest)MNIST ``.npz``.

    Parameters
    ----------
    path
        The ``.npz`` file.
    splits
        Which of ``train``, ``val``, ``test`` to load.
    num_classes
        Expected label width (14 for ChestMNIST).

    Returns
    -------
    dict
        ``{split: {"images": (N, H, W) uint8, "labels": (N, C) uint8}}``.

    Raises
    ------
    DataFormatError
        Missing keys, unreadable file, or inconsistent shapes / values; names the file and key.
    """
    path = Path(path)
    try:
        npz = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except _NPZ_ERRORS as e:
        raise DataFormatError(f"not a readable .npz file ({type(e).__name__}: {e})", path) from e
    with npz:
        expected = [f"{s}_{k}" for s in splits for k in ("images", "labels")]
        missing = [k for k in expected if k not in npz.files]
        if missing:
            raise DataFormatError(f"missing keys {missing}; expected {expected}, found {sorted(npz.files)}", path)
        out = {}
        for s in splits:
            try:
                images, labels = npz[f"{s}_images"], npz[f"{s}_labels"]
            except _NPZ_ERRORS as e:  # an object array (refused without pickle), a truncated member ...
                raise DataFormatError(
                    f"cannot load {s}_images / {s}_labels without pickle ({type(e).__name__}: {e}); "
                    "a truncated file, or an object array?",
                    path,
                ) from e
            if images.ndim == 4 and images.shape[-1] == 1:
                images = images[..., 0]
            if images.ndim != 3:
                raise DataFormatError(f"{s}_images must be (N, H, W), found shape {images.shape}", path)
            if labels.ndim != 2 or labels.shape[1] != num_classes:
                raise DataFormatError(f"{s}_labels must be (N, {num_classes}), found shape {labels.shape}", path)
            if len(images) != len(labels):
                raise DataFormatError(f"{s}_images has {len(images)} rows but {s}_labels {len(labels)}", path)
            if labels.size and not np.isin(labels, (0, 1)).all():
                raise DataFormatError(
                    f"{s}_labels must be 0/1 (multi-label), found values {np.unique(labels)[:10]}", path
                )
            _check_pixel_values(images, f"{s}_images", path)
            out[s] = {"images": np.asarray(images, dtype=np.uint8), "labels": np.asarray(labels, dtype=np.uint8)}
    return out


def _check_pixel_values(images: np.ndarray, key: str, path: Path) -> None:
    """Refuse non-numeric, non-finite or out-of-range (outside 0..255) pixel values before the uint8 cast."""
    if not (np.issubdtype(images.dtype, np.integer) or np.issubdtype(images.dtype, np.floating)):
        raise DataFormatError(f"{key} must hold numbers (uint8 in medmnist), found dtype {images.dtype}", path)
    if images.size == 0:
        return
    if np.issubdtype(images.dtype, np.floating) and not np.isfinite(images).all():
        bad = int((~np.isfinite(images)).sum())
        raise DataFormatError(f"{key} holds {bad} NaN/inf value(s); expected grey values 0..255", path)
    lo, hi = images.min(), images.max()
    if lo < 0 or hi > 255:
        raise DataFormatError(f"{key} values span [{lo}, {hi}]; expected grey values 0..255", path)


class ChestMNISTDataset(TorchDataset):
    """One split of a ChestMNIST ``.npz`` held in memory.

    Items are ``{"image": (1, H, W) float32 in [0, 1], "label": (14,) float32 {0, 1}, "index"}``;
    ``transform`` (MONAI dictionary transforms) runs on each item.

    Parameters
    ----------
    path
        The ``.npz`` file.
    split
        ``"train"``, ``"val"`` or ``"test"``.
    transform
        Optional callable on the item dict.
    """

    def __init__(
        self, path: str | os.PathLike[str], split: str = "train", transform: Callable[..., Any] | None = None
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        data = load_chestmnist(path, splits=(split,))[split]
        self.images, self.labels = data["images"], data["labels"]
        self.transform = transform
        self.classes = CHESTMNIST_CLASSES

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = {
            "image": torch.from_numpy(self.images[index][None].astype(np.float32) / 255.0),
            "label": torch.from_numpy(self.labels[index].astype(np.float32)),
            "index": int(index),
        }
        return self.transform(item) if self.transform is not None else item

    def class_frequencies(self) -> np.ndarray:
        """``(14,)`` fraction of images with each finding."""
        return self.labels.mean(axis=0)
