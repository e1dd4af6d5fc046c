"""Benchmark: GED + HM-IoU of ``monai_bayes.metrics`` vs. a straightforward numpy per-pair loop.

Default workload (issue 4): 100 cases × 16 samples × 4 raters × 128 × 128 binary masks. The baseline is
written here in the style of the published PHiSeg / Probabilistic U-Net evaluation scripts: one numpy IoU
per pair of masks in Python loops, GED terms as plain means over all pairs, HM-IoU with the rater list
tiled to the sample count and :func:`scipy.optimize.linear_sum_assignment` per case.

Two ways of calling this implementation are timed: two independent calls (``compute_ged`` then
``compute_hm_iou``, each validating and multiplying the masks), and one shared pairwise-IoU pass feeding both
(what ``GeneralizedEnergyDistanceMetric(with_hm_iou=True)`` does in an evaluator). Prints the timings, the
ratios and the largest absolute difference of the per-case values. Not a unit test.

Usage::

    python benchmarks/bench_metrics.py [--cases 100] [--samples 16] [--raters 4] [--size 128]
                                       [--repeats 5] [--device cpu] [--chunk 25] [--threads 0]

The numpy baseline is single-threaded; ``--threads 1`` compares like with like and is also far less
sensitive to other processes on a shared machine than torch's default multi-threading.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from monai_bayes.metrics import (
    compute_ged,
    compute_hm_iou,
    compute_pairwise_iou,
    ged_from_pairwise_iou,
    hm_iou_from_pairwise_iou,
)

#: Mask families: (radius range as a fraction of the image side, fraction of empty masks). ``discs`` is the
#: original workload (foreground up to ~20 % of the image); ``lidc`` imitates LIDC-IDRI 128² nodule crops:
#: small lesions (radius 2–15 px at 128²) and a quarter of the masks empty (raters who marked nothing);
#: ``dense`` fills most of the image (radius 38–77 px at 128², no empty masks): the union of a case's masks covers
#: more than half of the voxels, so the shared pass takes its dense path.
MASK_FAMILIES = {"discs": ((0.05, 0.2), 0.1), "lidc": ((0.015, 0.12), 0.25), "dense": ((0.3, 0.6), 0.0)}


def make_masks(
    cases: int, count: int, size: int, seed: int, family: str = "discs", lesion_seed: int | None = None
) -> np.ndarray:
    """(cases, count, size, size) bool masks: jittered discs around a per-case centre, some empty.

    With ``lesion_seed`` the per-case centres and radii come from their own generator, so two calls with the
    same ``lesion_seed`` (samples and raters) outline the same lesions; without it (the original ``discs``
    workload) samples and raters of a case lie around unrelated centres.
    """
    (r_low, r_high), empty_fraction = MASK_FAMILIES[family]
    rng = np.random.default_rng(seed)
    lesion_rng = rng if lesion_seed is None else np.random.default_rng(lesion_seed)
    yy, xx = np.mgrid[:size, :size]
    masks = np.zeros((cases, count, size, size), dtype=bool)
    for c in range(cases):
        centre = lesion_rng.uniform(0.3 * size, 0.7 * size, size=2)
        radius = lesion_rng.uniform(r_low * size, r_high * size)
        for k in range(count):
            if rng.random() < empty_fraction:
                continue
            cy, cx = centre + rng.normal(0, 0.03 * size, size=2)
            r = radius * rng.uniform(0.7, 1.3)
            masks[c, k] = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
    return masks


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    if union == 0:
        return 1.0  # both empty: PHiSeg convention
    return np.logical_and(a, b).sum() / union


def baseline_ged(samples: np.ndarray, raters: np.ndarray) -> float:
    """D²_GED of one case, one IoU per pair in Python loops."""
    d_sy = [1.0 - _iou(s, y) for s in samples for y in raters]
    d_ss = [1.0 - _iou(s, t) for s in samples for t in samples]
    d_yy = [1.0 - _iou(y, q) for y in raters for q in raters]
    return 2.0 * np.mean(d_sy) - np.mean(d_ss) - np.mean(d_yy)


def baseline_hm_iou(samples: np.ndarray, raters: np.ndarray) -> float:
    """HM-IoU of one case: raters tiled to the sample count (S must be a multiple of R), Hungarian matching."""
    tiled = np.concatenate([raters] * (len(samples) // len(raters)))
    iou = np.array([[_iou(s, y) for y in tiled] for s in samples])
    rows, cols = linear_sum_assignment(1.0 - iou)
    return float(iou[rows, cols].mean())


def run_baseline(samples: np.ndarray, raters: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ged = np.array([baseline_ged(s, r) for s, r in zip(samples, raters)])
    hm = np.array([baseline_hm_iou(s, r) for s, r in zip(samples, raters)])
    return ged, hm


def run_ours(samples: torch.Tensor, raters: torch.Tensor, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """Two independent metric calls per chunk of cases: ``compute_ged`` and ``compute_hm_iou``."""
    geds, hms = [], []
    for start in range(0, samples.shape[0], chunk):
        s, r = samples[start : start + chunk], raters[start : start + chunk]
        geds.append(compute_ged(s, r).ged[:, 0])
        hms.append(compute_hm_iou(s, r)[:, 0])
    return _to_host(geds, hms)


def run_ours_shared(samples: torch.Tensor, raters: torch.Tensor, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """One pairwise-IoU pass per chunk for both metrics, as ``GeneralizedEnergyDistanceMetric(with_hm_iou=True)``."""
    geds, hms = [], []
    for start in range(0, samples.shape[0], chunk):
        pairwise = compute_pairwise_iou(samples[start : start + chunk], raters[start : start + chunk])
        geds.append(ged_from_pairwise_iou(pairwise).ged[:, 0])
        hms.append(hm_iou_from_pairwise_iou(pairwise.sample_rater)[:, 0])
    return _to_host(geds, hms)


def run_bare_matmul(samples: torch.Tensor, chunk: int) -> torch.Tensor:
    """The matrix product the shared pass is built on, alone: one Gram matrix of the S + R float32 masks per case.

    The masks are concatenated and flattened *before* timing (``prepare_gram_input``), so this row is the bare
    ``X Xᵀ`` with no conversion, validation or copy -- the floor for the shared pass (issue 22, item 5).
    """
    out = None
    for start in range(0, samples.shape[0], chunk):
        x = samples[start : start + chunk]
        out = torch.matmul(x, x.transpose(-1, -2))
    if samples.is_cuda:
        torch.cuda.synchronize()
    assert out is not None
    return out


def prepare_gram_input(samples: torch.Tensor, raters: torch.Tensor) -> torch.Tensor:
    """(B, S + R, N) float32: samples and raters of each case in one flattened tensor (not timed)."""
    both = torch.cat([samples, raters], dim=1)
    return both.reshape(both.shape[0], both.shape[1], -1).float().contiguous()


def _to_host(geds: list[torch.Tensor], hms: list[torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
    ged, hm = torch.cat(geds), torch.cat(hms)
    if ged.is_cuda:
        torch.cuda.synchronize()
    return ged.cpu().numpy(), hm.cpu().numpy()


def best_time(fn, repeats: int):
    """Best wall-clock and best process CPU time over ``repeats`` calls, and the last result."""
    best_wall, best_cpu, result = float("inf"), float("inf"), None
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return best_wall, best_cpu, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=100)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--raters", type=int, default=4)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline-repeats", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--chunk", type=int, default=25, help="cases per call of the vectorised metrics")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch default)")
    parser.add_argument("--masks", choices=sorted(MASK_FAMILIES), default="discs", help="mask family (see above)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.samples % args.raters:
        parser.error("the baseline tiles raters to the sample count: --samples must be a multiple of --raters")

    lesion_seed = None if args.masks == "discs" else args.seed + 2  # lidc, dense: samples and raters outline one lesion
    samples_np = make_masks(args.cases, args.samples, args.size, args.seed, args.masks, lesion_seed)
    raters_np = make_masks(args.cases, args.raters, args.size, args.seed + 1, args.masks, lesion_seed)
    device = torch.device(args.device)
    # (B, S, C=1, H, W) float 0/1 masks, as thresholded MC samples usually arrive
    samples = torch.from_numpy(samples_np).unsqueeze(2).float().to(device)
    raters = torch.from_numpy(raters_np).unsqueeze(2).float().to(device)

    run_ours(samples[:2], raters[:2], args.chunk)  # warm-up (allocator, lazy imports, CUDA context)
    run_ours_shared(samples[:2], raters[:2], args.chunk)
    t_base, c_base, (ged_ref, hm_ref) = best_time(lambda: run_baseline(samples_np, raters_np), args.baseline_repeats)
    t_ours, c_ours, (ged, hm) = best_time(lambda: run_ours(samples, raters, args.chunk), args.repeats)
    t_shared, c_shared, (ged_s, hm_s) = best_time(lambda: run_ours_shared(samples, raters, args.chunk), args.repeats)
    samples_b, raters_b = samples.bool(), raters.bool()  # masks as a thresholding producer emits them
    t_bool, c_bool, (ged_b, hm_b) = best_time(lambda: run_ours_shared(samples_b, raters_b, args.chunk), args.repeats)
    gram_input = prepare_gram_input(samples, raters)
    t_gram, c_gram, _ = best_time(lambda: run_bare_matmul(gram_input, args.chunk), args.repeats)

    print(
        f"machine: {platform.machine()} {_cpu_name()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}"
    )
    print(f"         python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}")
    print(f"         device {device}, load average {os.getloadavg()[0]:.2f}")
    print(
        f"workload: {args.cases} cases x {args.samples} samples x {args.raters} raters x {args.size}^2,"
        f" {args.chunk} cases per call, {args.masks!r} masks ({100 * foreground_fraction(samples_np, raters_np):.1f} %"
        " of the pixels in some mask of their case)"
    )
    print("                                      wall [s]   ratio   CPU [s]   ratio")
    rows = (
        ("numpy per-pair loop", t_base, c_base),
        ("compute_ged + compute_hm_iou", t_ours, c_ours),
        ("shared pass (compute_pairwise_iou)", t_shared, c_shared),
        ("shared pass, bool masks", t_bool, c_bool),
    )
    for label, wall, cpu in rows:
        print(f"{label:36s}  {wall:8.3f}  {t_base / wall:6.1f}x  {cpu:8.3f}  {c_base / cpu:6.1f}x")
    gram_label = "bare float32 Gram matrix X Xᵀ"
    print(f"{gram_label:36s}  {t_gram:8.3f}  {t_base / t_gram:6.1f}x  {c_gram:8.3f}  {c_base / c_gram:6.1f}x")
    ratio_wall, ratio_cpu = t_shared / t_gram, c_shared / c_gram
    print(f"RATIO shared pass / bare matmul: wall {ratio_wall:.2f}, CPU {ratio_cpu:.2f}  (target <= 1.5)")
    print(f"RATIO shared pass on bool masks / bare matmul: wall {t_bool / t_gram:.2f}, CPU {c_bool / c_gram:.2f}")
    print(f"(best of {args.baseline_repeats} baseline / {args.repeats} runs; CPU time sums all threads)")
    diffs = {
        "GED": max(np.abs(g - ged_ref).max() for g in (ged, ged_s, ged_b)),
        "HM-IoU": max(np.abs(h - hm_ref).max() for h in (hm, hm_s, hm_b)),
    }
    print(f"max |GED diff|    : {diffs['GED']:.2e}  (mean D2_GED {ged.mean():.6f})")
    print(f"max |HM-IoU diff| : {diffs['HM-IoU']:.2e}  (mean HM-IoU {hm.mean():.6f})")
    print("values equal to 1e-6:", "yes" if max(diffs.values()) <= 1e-6 else "NO")


def foreground_fraction(samples: np.ndarray, raters: np.ndarray) -> float:
    """Mean fraction of pixels that are foreground in some sample or rater of their case."""
    union = samples.any(axis=1) | raters.any(axis=1)
    return float(union.reshape(union.shape[0], -1).mean())


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
