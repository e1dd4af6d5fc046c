"""The teacher side of distillation: Monte-Carlo samples of any stochastic network, on the fly or cached.

The teacher is any network :class:`~monai_bayes.inferers.MonteCarloInferer` can sample (partial / full
Bayes, MC dropout, a deep ensemble, SG-MCMC samples as a :class:`~monai_bayes.networks.DeepEnsemble`), with
``output="samples"`` and softmax: ``(B, S, C, *sp)`` probabilities.

:class:`TeacherBatch` is a MONAI ``prepare_batch`` for a trainer: it returns ``(image, teacher_probs)``,
taking the probabilities from the batch (key ``"teacher"``, cached by :func:`cache_teacher_samples`) or
running the teacher on the batch. Cached samples are stored flat, ``(S·C, *sp)`` per image, so that MONAI's
spatial dictionary transforms (flips, 90° rotations) treat them as channels and move them with the image.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from monai_bayes.inferers import MonteCarloInferer
from monai_bayes.utils.tensors import as_plain_tensor

__all__ = ["TEACHER_KEY", "TeacherBatch", "cache_teacher_samples", "teacher_inferer", "teacher_samples"]

#: batch key of cached teacher probabilities, ``(B, S·C, *sp)``
TEACHER_KEY = "teacher"


def teacher_inferer(num_samples: int = 8, seed: int | None = None) -> MonteCarloInferer:
    """The inferer that samples the teacher: ``S`` softmax probability samples, plan auto-tuned.

    Parameters
    ----------
    num_samples : int
        ``S``.
    seed : int, optional
        Fixed noise (the same samples for the same input).

    Returns
    -------
    MonteCarloInferer
        With ``output="samples"``, ``activation="softmax"``.
    """
    return MonteCarloInferer(num_samples=num_samples, activation="softmax", output="samples", seed=seed)


@torch.no_grad()
def teacher_samples(teacher: nn.Module, inferer: MonteCarloInferer, images: torch.Tensor) -> torch.Tensor:
    """``(B, S, C, *sp)`` probabilities of the teacher (eval mode: batch norm uses its running statistics).

    Parameters
    ----------
    teacher : nn.Module
        The stochastic network.
    inferer : MonteCarloInferer
        With ``output="samples"`` and an activation.
    images : torch.Tensor
        ``(B, C_in, *sp)``.

    Returns
    -------
    torch.Tensor
        Sample probabilities.

    Raises
    ------
    ValueError
        If the inferer does not return probability samples.
    """
    if inferer.output != "samples" or inferer.activation != "softmax":
        raise ValueError("the teacher inferer must have output='samples' and activation='softmax'.")
    teacher.eval()
    return as_plain_tensor(inferer(as_plain_tensor(images), teacher))


def cache_teacher_samples(
    teacher: nn.Module,
    inferer: MonteCarloInferer,
    batches: Iterable[Mapping[str, Any]],
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float16,
) -> list[dict[str, torch.Tensor]]:
    """Run the teacher once over a data loader and keep ``{"image", "teacher"}`` per image.

    Parameters
    ----------
    teacher : nn.Module
        The stochastic network.
    inferer : MonteCarloInferer
        Its sampler (:func:`teacher_inferer`).
    batches : Iterable of Mapping
        Batches with an ``"image"`` tensor ``(B, C_in, *sp)`` (labels are not used).
    device : torch.device or str
        Where the teacher runs.
    dtype : torch.dtype
        Storage type of the probabilities (float16 halves the memory; sums stay within 1e-3 of 1).

    Returns
    -------
    list of dict
        One ``{"image": (C_in, *sp), "teacher": (S·C, *sp)}`` per image, on the CPU.
    """
    items: list[dict[str, torch.Tensor]] = []
    for batch in batches:
        images = as_plain_tensor(batch["image"]).to(device)
        probs = teacher_samples(teacher, inferer, images)
        flat = probs.flatten(1, 2).to("cpu", dtype)
        items.extend({"image": img.cpu(), TEACHER_KEY: p} for img, p in zip(images, flat))
    return items


class TeacherBatch:
    """``prepare_batch`` for MONAI trainers and evaluators: ``(image, teacher_probs (B, S, C, *sp))``.

    Parameters
    ----------
    num_classes : int
        ``C``, to unflatten cached ``(B, S·C, *sp)`` samples.
    teacher : nn.Module, optional
        Run on batches without cached samples.
    inferer : MonteCarloInferer, optional
        The teacher's sampler (default :func:`teacher_inferer` with 8 samples).
    """

    def __init__(
        self, num_classes: int, teacher: nn.Module | None = None, inferer: MonteCarloInferer | None = None
    ) -> None:
        self.num_classes = num_classes
        self.teacher = teacher
        self.inferer = inferer if inferer is not None else teacher_inferer()

    def __call__(
        self,
        batchdata: Mapping[str, Any],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and teacher probabilities of one batch, on ``device``.

        Parameters
        ----------
        batchdata : Mapping
            A batch with ``"image"`` and, when cached, ``"teacher"``.
        device : str or torch.device, optional
            Target device.
        non_blocking : bool
            Passed to ``Tensor.to``.
        **kwargs
            Ignored (MONAI passes ``non_blocking`` and friends).

        Returns
        -------
        tuple of torch.Tensor
            ``(image (B, C_in, *sp), teacher_probs (B, S, C, *sp) float32)``.

        Raises
        ------
        ValueError
            If the batch has no cached samples and there is no teacher, or the cache does not divide into ``C``.
        """
        image = as_plain_tensor(batchdata["image"]).to(device=device, non_blocking=non_blocking)
        cached = batchdata.get(TEACHER_KEY)
        if cached is not None:
            cached = as_plain_tensor(cached).to(device=device, non_blocking=non_blocking).float()
            if cached.shape[1] % self.num_classes:
                raise ValueError(
                    f"cached teacher samples have {cached.shape[1]} channels, not a multiple of C={self.num_classes}."
                )
            return image, cached.reshape(cached.shape[0], -1, self.num_classes, *cached.shape[2:])
        if self.teacher is None:
            raise ValueError(f"the batch has no {TEACHER_KEY!r} samples and no teacher was given.")
        return image, teacher_samples(self.teacher, self.inferer, image)
