"""How close a student comes to its teacher: segmentation scores, uncertainty-map rank correlation, speed.

* :func:`segmentation_scores` -- per case, from probability samples ``(B, S, C, *sp)`` and rater masks: Dice of
  the thresholded predictive mean vs the raters' majority vote (MONAI ``DiceMetric``, empty majority → NaN,
  skipped), GED² and HM-IoU of the samples (binarised at 0.5) vs the raters, and the per-image expected
  calibration error of the foreground probability vs the majority vote (MONAI ``CalibrationErrorMetric``,
  15 bins) -- the LIDC bundle's definitions.
* :func:`spearman` -- Spearman's rank correlation (average ranks for ties, the Pearson correlation of the ranks;
  equals :func:`scipy.stats.spearmanr`).
* :func:`foreground_union` -- the voxels the rank correlation is computed over: the union of the teacher's and
  the student's predicted foreground (argmax of the predictive mean ≠ background).
* :func:`median_seconds` -- median wall time of a call, after a warm-up.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from monai.metrics import CalibrationErrorMetric, DiceMetric
from torch import nn

from monai_bayes.distill.student import DistilledStudent
from monai_bayes.distill.teacher import teacher_samples
from monai_bayes.inferers import MonteCarloInferer
from monai_bayes.metrics import compute_ged, compute_hm_iou, reduce_samples_and_raters
from monai_bayes.uncertainty import uncertainty_maps
from monai_bayes.utils.tensors import as_plain_tensor

__all__ = [
    "compare_with_teacher",
    "foreground_union",
    "inference_speedup",
    "median_seconds",
    "segmentation_scores",
    "spearman",
]


def _ranks(x: torch.Tensor) -> torch.Tensor:
    """1-based ranks of a flat tensor, ties getting the mean of their ranks (float64)."""
    x = x.flatten().double()
    sorted_x, order = torch.sort(x)
    _, inverse, counts = torch.unique_consecutive(sorted_x, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    mean_rank = ends - (counts.double() - 1.0) / 2.0
    ranks = torch.empty_like(x)
    ranks[order] = mean_rank[inverse]
    return ranks


def spearman(x: torch.Tensor, y: torch.Tensor) -> float:
    """Spearman's rank correlation of two equally long sets of values.

    Parameters
    ----------
    x, y : torch.Tensor
        Values (flattened), same number of elements, at least 2.

    Returns
    -------
    float
        ρ in ``[-1, 1]``; NaN if either set is constant.

    Raises
    ------
    ValueError
        If the sizes differ or there are fewer than 2 values.
    """
    if x.numel() != y.numel() or x.numel() < 2:
        raise ValueError(f"spearman needs two sets of >= 2 values of equal size, got {x.numel()} and {y.numel()}.")
    rx, ry = _ranks(x), _ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = torch.sqrt((rx * rx).sum() * (ry * ry).sum())
    return float((rx * ry).sum() / denom) if denom > 0 else float("nan")


def foreground_union(teacher_mean: torch.Tensor, student_mean: torch.Tensor) -> torch.Tensor:
    """Voxels either model labels as foreground (argmax over classes ≠ 0).

    Parameters
    ----------
    teacher_mean, student_mean : torch.Tensor
        ``(B, C, *sp)`` predictive means.

    Returns
    -------
    torch.Tensor
        ``(B, 1, *sp)`` bool mask.
    """
    return (teacher_mean.argmax(dim=1, keepdim=True) > 0) | (student_mean.argmax(dim=1, keepdim=True) > 0)


def _raters(labels: torch.Tensor, spatial: int) -> torch.Tensor:
    """Rater masks as ``(B, R, 1, *sp)``: accepts ``(B, R, *sp)`` or ``(B, R, 1, *sp)``."""
    if labels.dim() == spatial + 2:
        return labels.unsqueeze(2).float()
    if labels.dim() == spatial + 3 and labels.shape[2] == 1:
        return labels.float()
    raise ValueError(f"labels must be (B, R, *spatial) or (B, R, 1, *spatial), got {tuple(labels.shape)}.")


def segmentation_scores(samples: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-case Dice, GED², HM-IoU and ECE of binary (background / foreground) softmax samples.

    Parameters
    ----------
    samples : torch.Tensor
        ``(B, S, 2, *sp)`` probabilities (``S = 1`` for a deterministic prediction).
    labels : torch.Tensor
        ``(B, R, *sp)`` or ``(B, R, 1, *sp)`` binary rater masks.

    Returns
    -------
    dict of str to torch.Tensor
        ``{"Dice", "GED", "HM-IoU", "ECE"}``, each ``(B,)`` float (Dice NaN where the majority vote is empty).

    Raises
    ------
    ValueError
        For more than two classes or a label shape that does not fit.
    """
    if samples.shape[2] != 2:
        raise ValueError(f"segmentation_scores expects 2 classes (background, foreground), got {samples.shape[2]}.")
    y = _raters(labels, samples.dim() - 3).to(samples.device)
    fg = samples[:, :, 1:].float()
    pred, majority = reduce_samples_and_raters(fg, y, prediction="discrete", rater_mode="majority")
    dice = torch.as_tensor(DiceMetric(include_background=True, ignore_empty=True)(pred, majority))
    mean, _ = reduce_samples_and_raters(fg, y, prediction="mean", rater_mode="majority")
    ece = torch.as_tensor(CalibrationErrorMetric(num_bins=15, include_background=True)(mean, majority))
    return {
        "Dice": dice.flatten().float(),
        "GED": compute_ged(fg, y, binarize=0.5).ged.flatten(),
        "HM-IoU": compute_hm_iou(fg, y, binarize=0.5).flatten(),
        "ECE": ece.flatten().float(),
    }


def median_seconds(call: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """Median wall-clock seconds of ``call()`` over ``repeats`` runs after ``warmup`` runs (under ``no_grad``).

    Parameters
    ----------
    call : Callable
        What to time.
    repeats, warmup : int
        Timed and untimed runs.

    Returns
    -------
    float
        Seconds.
    """
    times = []
    with torch.no_grad():
        for _ in range(warmup):
            call()
        for _ in range(repeats):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def compare_with_teacher(
    student: DistilledStudent,
    teacher: nn.Module,
    batches: Iterable[Mapping[str, Any]],
    *,
    num_samples: int = 8,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Score student and teacher on labelled batches and rank-correlate their total-uncertainty maps.

    Parameters
    ----------
    student : DistilledStudent
        The trained student.
    teacher : nn.Module
        Its teacher.
    batches : Iterable of Mapping
        Batches with ``"image"`` ``(B, C_in, *sp)`` and ``"label"`` rater masks ``(B, R, *sp)``.
    num_samples : int
        ``S`` teacher samples (and Dirichlet draws of an EnD² student).
    seed : int
        Seed of the teacher's noise and of the Dirichlet draws.
    device : torch.device or str
        Where both run.

    Returns
    -------
    dict
        ``{"teacher": {metric: per-case tensor}, "student": {...}, "spearman_total": ρ, "spearman_epistemic": ρ,
        "spearman_aleatoric": ρ, "foreground_voxels": n}``; the correlations pool the union foreground
        (:func:`foreground_union`) of all cases.
    """
    inferer = MonteCarloInferer(num_samples=num_samples, activation="softmax", output="samples", seed=seed)
    student = student.to(device).eval()
    scores: dict[str, dict[str, list[torch.Tensor]]] = {"teacher": {}, "student": {}}
    pairs: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {"total": [], "epistemic": [], "aleatoric": []}
    with torch.no_grad():
        for index, batch in enumerate(batches):
            image = as_plain_tensor(batch["image"]).to(device)
            labels = as_plain_tensor(batch["label"])
            probs = teacher_samples(teacher, inferer, image)
            outputs = student(image)
            maps_t, maps_s = uncertainty_maps(probs, "softmax"), student.maps(outputs)
            student_probs = student.samples(image, num_samples, seed + index)
            for who, samples in (("teacher", probs), ("student", student_probs)):
                for name, values in segmentation_scores(samples, labels).items():
                    scores[who].setdefault(name, []).append(values.cpu())
            mask = foreground_union(maps_t["mean"], maps_s["mean"])
            for key in pairs:
                pairs[key].append((maps_t[key][mask].cpu(), maps_s[key][mask].cpu()))
    result: dict[str, Any] = {who: {k: torch.cat(v) for k, v in s.items()} for who, s in scores.items()}
    for key, pair_list in pairs.items():
        t_all, s_all = torch.cat([a for a, _ in pair_list]), torch.cat([b for _, b in pair_list])
        result[f"spearman_{key}"] = spearman(t_all, s_all) if t_all.numel() >= 2 else float("nan")
    result["foreground_voxels"] = int(sum(a.numel() for a, _ in pairs["total"]))
    return result


def inference_speedup(
    student: DistilledStudent,
    teacher: nn.Module,
    images: torch.Tensor,
    *,
    num_samples: int = 8,
    repeats: int = 5,
) -> dict[str, float]:
    """Side-by-side time of the mean + uncertainty maps: teacher at ``S`` samples vs the student's one pass.

    Two warm-up calls each, then ``repeats`` interleaved pairs (teacher call, student call); medians.

    The teacher runs through :class:`~monai_bayes.inferers.MonteCarloInferer` with ``output="uncertainty"``
    (plan auto-tuned on the warm-up call: chunking, shared prefix, sparse input), the student through
    :meth:`DistilledStudent.uncertainty`.

    Parameters
    ----------
    student : DistilledStudent
        The student.
    teacher : nn.Module
        The teacher.
    images : torch.Tensor
        ``(B, C_in, *sp)`` on the device to time on.
    num_samples : int
        ``S`` of the teacher.
    repeats : int
        Timed calls per model (median).

    Returns
    -------
    dict of str to float
        ``{"teacher_s": seconds, "student_s": seconds, "speedup": teacher_s / student_s}``.
    """
    inferer = MonteCarloInferer(num_samples=num_samples, activation="softmax", output="uncertainty", seed=0)
    teacher.eval()
    student.eval()
    with torch.no_grad():  # warm-up (the teacher's plan is tuned on its first call)
        for _ in range(2):
            inferer(images, teacher)
            student.uncertainty(images)
    teacher_times, student_times = [], []
    for _ in range(repeats):  # interleaved, so that a change of load on a shared machine hits both alike
        teacher_times.append(median_seconds(lambda: inferer(images, teacher), repeats=1, warmup=0))
        student_times.append(median_seconds(lambda: student.uncertainty(images), repeats=1, warmup=0))
    teacher_s, student_s = statistics.median(teacher_times), statistics.median(student_times)
    return {"teacher_s": teacher_s, "student_s": student_s, "speedup": teacher_s / student_s}
