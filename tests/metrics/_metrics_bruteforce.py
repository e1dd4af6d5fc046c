"""Brute-force references for the metrics tests: plain Python loops over samples × raters × classes × pixels.

Written independently of ``monai_bayes.metrics`` (no shared code, no vectorisation, no scipy) so that the
tests compare two different computations. Inputs are torch tensors of ONE case; they are converted to nested
Python lists of floats/ints first.
"""

from __future__ import annotations

import itertools
import math

import torch


def _pixels(mask: torch.Tensor) -> list[float]:
    """Flattened values of one (*spatial) mask as a Python list."""
    return [float(v) for v in mask.reshape(-1).tolist()]


def _kept_classes(num_channels: int, include_background: bool) -> list[int]:
    if num_channels == 1 or include_background:
        return list(range(num_channels))
    return list(range(1, num_channels))


def iou_one(a: list[float], b: list[float], empty_policy: str) -> float:
    """IoU of two flattened binary masks with an explicit empty/empty rule."""
    inter = 0
    union = 0
    for x, y in zip(a, b):
        xa = x != 0
        yb = y != 0
        if xa and yb:
            inter += 1
        if xa or yb:
            union += 1
    if union == 0:
        return {"match": 1.0, "mismatch": 0.0, "ignore": math.nan}[empty_policy]
    return inter / union


def pair_iou(m1: torch.Tensor, m2: torch.Tensor, classes: list[int], class_reduction: str, empty_policy: str):
    """IoU of two (C, *spatial) masks: a float for "mean"/"union", a list per class for "none"."""
    if class_reduction == "union":
        u1 = [0.0] * m1[0].numel()
        u2 = [0.0] * m2[0].numel()
        for c in classes:
            for i, v in enumerate(_pixels(m1[c])):
                if v != 0:
                    u1[i] = 1.0
            for i, v in enumerate(_pixels(m2[c])):
                if v != 0:
                    u2[i] = 1.0
        return iou_one(u1, u2, empty_policy)
    per_class = [iou_one(_pixels(m1[c]), _pixels(m2[c]), empty_policy) for c in classes]
    if class_reduction == "none":
        return per_class
    defined = [v for v in per_class if not math.isnan(v)]
    return sum(defined) / len(defined) if defined else math.nan


def _nanmean(values: list[float]) -> float:
    defined = [v for v in values if not math.isnan(v)]
    return sum(defined) / len(defined) if defined else math.nan


def ged_case(
    samples: torch.Tensor,
    raters: torch.Tensor,
    include_background: bool = False,
    class_reduction: str = "mean",
    empty_policy: str = "match",
    squared: bool = True,
) -> list[list[float]]:
    """GED of one case. samples (S, C, *sp), raters (R, C, *sp). Returns [[ged, cross, ss, yy] per output class]."""
    classes = _kept_classes(samples.shape[1], include_background)
    outputs = [[c] for c in classes] if class_reduction == "none" else [classes]
    results = []
    for cls in outputs:
        reduction = "mean" if class_reduction == "none" else class_reduction

        def d(m1, m2, cls=cls, reduction=reduction):
            return 1.0 - pair_iou(m1, m2, cls, reduction, empty_policy)

        cross = _nanmean([d(s, r) for s in samples for r in raters])
        ss = _nanmean([d(s, t) for s in samples for t in samples])
        yy = _nanmean([d(r, q) for r in raters for q in raters])
        g = 2 * cross - ss - yy
        if not squared:
            g = math.sqrt(max(g, 0.0))
        results.append([g, cross, ss, yy])
    return results


def hm_iou_case(
    samples: torch.Tensor,
    raters: torch.Tensor,
    include_background: bool = False,
    class_reduction: str = "mean",
    empty_policy: str = "match",
) -> list[float]:
    """HM-IoU of one case by exhaustive search over all one-to-one matchings of the lcm-repeated sets."""
    classes = _kept_classes(samples.shape[1], include_background)
    outputs = [[c] for c in classes] if class_reduction == "none" else [classes]
    s_count, r_count = samples.shape[0], raters.shape[0]
    size = s_count * r_count // math.gcd(s_count, r_count)
    results = []
    for cls in outputs:
        reduction = "mean" if class_reduction == "none" else class_reduction
        iou = [
            [pair_iou(samples[i], raters[j], cls, reduction, empty_policy) for j in range(r_count)]
            for i in range(s_count)
        ]
        iou = [[1.0 if math.isnan(v) else v for v in row] for row in iou]
        left = [i for i in range(s_count) for _ in range(size // s_count)]
        right = [j for j in range(r_count) for _ in range(size // r_count)]
        best = -1.0
        for perm in itertools.permutations(range(size)):
            total = 0.0
            for row, col in enumerate(perm):
                total += iou[left[row]][right[col]]
            best = max(best, total / size)
        results.append(best)
    return results


def brier_case(samples: torch.Tensor, raters: torch.Tensor, categorical: bool, rater_mode: str) -> list[float]:
    """Brier score of one case: samples (S, C, *sp) probabilities, raters (R, C, *sp).

    Categorical: the seed's (1/C) Σ_c, averaged over voxels; Bernoulli: one score per channel.
    """
    s_count, c_count = samples.shape[0], samples.shape[1]
    s_lists = [[_pixels(samples[s, c]) for c in range(c_count)] for s in range(s_count)]
    r_lists = [[_pixels(raters[r, c]) for c in range(c_count)] for r in range(raters.shape[0])]
    n = len(s_lists[0][0])
    per_channel = []
    for c in range(c_count):
        total = 0.0
        for v in range(n):
            p = sum(s_lists[s][c][v] for s in range(s_count)) / s_count
            labels = [r_lists[r][c][v] for r in range(len(r_lists))]
            if rater_mode == "each":
                total += sum((p - y) ** 2 for y in labels) / len(labels)
            else:
                total += (p - sum(labels) / len(labels)) ** 2
        per_channel.append(total / n)
    return [sum(per_channel) / c_count] if categorical else per_channel


def nll_case(samples: torch.Tensor, raters: torch.Tensor, categorical: bool, eps: float = 1e-7) -> list[float]:
    """Voxel-mean NLL of one case against every rater (averaged over raters)."""
    s_count, c_count, r_count = samples.shape[0], samples.shape[1], raters.shape[0]
    s_lists = [[_pixels(samples[s, c]) for c in range(c_count)] for s in range(s_count)]
    r_lists = [[_pixels(raters[r, c]) for c in range(c_count)] for r in range(r_count)]
    n = len(s_lists[0][0])
    per_channel = [0.0] * c_count
    for v in range(n):
        for r in range(r_count):
            for c in range(c_count):
                p = sum(s_lists[s][c][v] for s in range(s_count)) / s_count
                y = r_lists[r][c][v]
                if categorical:
                    per_channel[c] += -y * math.log(max(p, eps)) / r_count
                else:
                    per_channel[c] += -(y * math.log(max(p, eps)) + (1 - y) * math.log(max(1 - p, eps))) / r_count
    per_channel = [t / n for t in per_channel]
    return [sum(per_channel)] if categorical else per_channel


def _h(ps: list[float], categorical: bool) -> list[float]:
    """Entropy of one voxel: [categorical] or one Bernoulli entropy per channel."""

    def xlogx(x: float) -> float:
        return x * math.log(x) if x > 0 else 0.0

    if categorical:
        return [-sum(xlogx(p) for p in ps)]
    return [-(xlogx(p) + xlogx(1 - p)) for p in ps]


def entropy_case(
    samples: torch.Tensor,
    categorical: bool,
    entropy_threshold: float,
    mi_threshold: float,
    voxel_volume: float,
    foreground_threshold: float = 0.5,
) -> dict[str, list[float]]:
    """Entropy / MI statistics of one case (S, C, *sp), keys like EntropyVolumeMetric.quantities."""
    s_count, c_count = samples.shape[0], samples.shape[1]
    s_lists = [[_pixels(samples[s, c]) for c in range(c_count)] for s in range(s_count)]
    n = len(s_lists[0][0])
    k_count = 1 if categorical else c_count
    h_map = [[0.0] * n for _ in range(k_count)]
    mi_map = [[0.0] * n for _ in range(k_count)]
    fg = [[False] * n for _ in range(k_count)]
    for v in range(n):
        mean = [sum(s_lists[s][c][v] for s in range(s_count)) / s_count for c in range(c_count)]
        total = _h(mean, categorical)
        expected = [0.0] * k_count
        for s in range(s_count):
            hs = _h([s_lists[s][c][v] for c in range(c_count)], categorical)
            for k in range(k_count):
                expected[k] += hs[k] / s_count
        for k in range(k_count):
            h_map[k][v] = total[k]
            mi_map[k][v] = max(total[k] - expected[k], 0.0)
        if categorical:
            best = max(range(c_count), key=lambda c: (mean[c], -c))
            fg[0][v] = best != 0
        else:
            for k in range(k_count):
                fg[k][v] = mean[k] > foreground_threshold
    out: dict[str, list[float]] = {}
    for prefix, umap, thr in (("entropy", h_map, entropy_threshold), ("mi", mi_map, mi_threshold)):
        vols, voxs, means, fgs = [], [], [], []
        for k in range(k_count):
            count = sum(1 for v in range(n) if umap[k][v] > thr)
            voxs.append(float(count))
            vols.append(count * voxel_volume)
            means.append(sum(umap[k]) / n)
            fg_vals = [umap[k][v] for v in range(n) if fg[k][v]]
            fgs.append(sum(fg_vals) / len(fg_vals) if fg_vals else math.nan)
        out[f"{prefix}_volume"], out[f"{prefix}_voxels"] = vols, voxs
        out[f"{prefix}_mean"], out[f"{prefix}_fg_mean"] = means, fgs
    return out


def soft_dice_case(
    samples: torch.Tensor,
    raters: torch.Tensor,
    include_background: bool,
    soft_prediction: bool,
    categorical: bool,
    threshold: float = 0.5,
) -> list[float]:
    """Soft-label Dice of one case (NaN for an empty soft label)."""
    s_count, c_count, r_count = samples.shape[0], samples.shape[1], raters.shape[0]
    s_lists = [[_pixels(samples[s, c]) for c in range(c_count)] for s in range(s_count)]
    r_lists = [[_pixels(raters[r, c]) for c in range(c_count)] for r in range(r_count)]
    n = len(s_lists[0][0])
    pred = [[0.0] * n for _ in range(c_count)]
    label = [[0.0] * n for _ in range(c_count)]
    for v in range(n):
        mean = [sum(s_lists[s][c][v] for s in range(s_count)) / s_count for c in range(c_count)]
        if soft_prediction:
            hard = mean
        elif categorical:
            best = max(range(c_count), key=lambda c: (mean[c], -c))
            hard = [1.0 if c == best else 0.0 for c in range(c_count)]
        else:
            hard = [1.0 if m > threshold else 0.0 for m in mean]
        for c in range(c_count):
            pred[c][v] = hard[c]
            label[c][v] = sum(r_lists[r][c][v] for r in range(r_count)) / r_count
    result = []
    for c in _kept_classes(c_count, include_background):
        inter = sum(pred[c][v] * label[c][v] for v in range(n))
        sp, sl = sum(pred[c]), sum(label[c])
        result.append(math.nan if sl == 0 else 2 * inter / (sp + sl))
    return result
