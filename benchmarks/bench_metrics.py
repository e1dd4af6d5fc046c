"""Benchmark: GED + HM-IoU of ``monai_bayes.metrics`` vs. a straightforward numpy per-pair loop.

Default workload (issue 4): 100 cases × 16 samples × 4 raters × 128 × 128 binary masks. The baseline is
written here in the style of the published PHiSeg / Probabilistic U-Net evaluation scripts: one numpy IoU
per pair of masks in Python loops, GED terms as plain means over all pairs, HM-IoU with the rater list
tiled to the sample count and :func:`scipy.optimize.linear_sum_assignment` per case.

Two ways of calling this implementation are timed: two independent calls (``compute_ged`` then
``compute_hm_iou``, each validating and multiplying the masks), and one shared pairwise-IoU pass feeding both
(what ``GeneralizedEnergyDistanceMetric(with_hm_iou=True)`` does in an evaluator). The shared pass is timed on
both of its CPU paths side by side -- the fused numba kernel (exact check + bit packing + AND / popcount counts)
and the torch path (foreground gather or dense float32 products) -- for float 0/1 and bool masks, against the
bare float32 Gram matrix ``X Xᵀ`` of the pre-concatenated masks (issue 22 item 5: target <= 1.5x), in
``--rounds`` interleaved rounds per mask family (median and range of the process-CPU-time ratios). The numba
kernels are compiled before any timing, into an empty cache (``NUMBA_CACHE_DIR`` = a fresh temporary folder),
and the first-call times are printed: compilation, and loading from that cache in a fresh process. Prints the
timings, the ratios and the largest absolute difference of the per-case values. Not a unit test.

Usage::

    python benchmarks/bench_metrics.py [--cases 100] [--samples 16] [--raters 4] [--size 128]
                                       [--repeats 5] [--rounds 1] [--device cpu] [--chunk 25] [--threads 0]
                                       [--masks discs lidc dense] [--out results/ged_shared_pass]

The numpy baseline is single-threaded; ``--threads 1`` compares like with like and is also far less
sensitive to other processes on a shared machine than torch's default multi-threading. ``--out`` writes
``shared_pass.csv`` (ratios), ``speedup.csv`` (CPU times vs the numpy loop) and ``first_call.csv`` (JIT).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

import monai_bayes.metrics._fused as fused
import monai_bayes.metrics.overlap as overlap
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


@contextlib.contextmanager
def torch_path():
    """Switch the fused kernel off: the shared pass runs its torch path (foreground gather or dense products)."""
    saved = overlap.FUSED_DEVICE_TYPES
    overlap.FUSED_DEVICE_TYPES = ()
    try:
        yield
    finally:
        overlap.FUSED_DEVICE_TYPES = saved


def first_call_seconds(device: torch.device) -> dict[str, float]:
    """Wall seconds of importing numba (+ decorating the kernels) and of the first shared-pass call on tiny
    float32 and bool masks in this process (JIT compilation + run)."""
    tiny_s = torch.from_numpy(make_masks(2, 4, 16, 0)).unsqueeze(2).to(device)
    tiny_y = torch.from_numpy(make_masks(2, 2, 16, 1)).unsqueeze(2).to(device)
    start = time.perf_counter()
    fused.available()  # imports numba and decorates the kernels (no compilation yet)
    seconds = {"import numba": time.perf_counter() - start}
    for label, dtype in (("float32 masks", torch.float32), ("bool masks", torch.bool)):
        start = time.perf_counter()
        compute_pairwise_iou(tiny_s.to(dtype), tiny_y.to(dtype))
        seconds[label] = time.perf_counter() - start
    return seconds


_CACHED_FIRST_CALL = (
    "import time, torch; from monai_bayes.metrics import _fused, compute_pairwise_iou;"
    " x = torch.zeros(1, 2, 1, 8, 8); t = [time.perf_counter()]; _fused.available(); t.append(time.perf_counter());"
    " compute_pairwise_iou(x, x); t.append(time.perf_counter());"
    " compute_pairwise_iou(x.bool(), x.bool()); t.append(time.perf_counter());"
    " print(*(b - a for a, b in zip(t, t[1:])))"
)


def cached_first_call_seconds() -> list[float]:
    """The same three times in a fresh process that finds the compiled kernels in numba's on-disk cache."""
    out = subprocess.run([sys.executable, "-c", _CACHED_FIRST_CALL], capture_output=True, text=True, check=True)
    return [float(v) for v in out.stdout.split()[-3:]]


def measure_family(args, family: str, device: torch.device) -> dict:
    """All timings of one mask family: baseline, two calls, shared pass on both paths (float, bool), bare matmul.

    Returns a dict of the family's foreground fraction, the per-round CPU-time ratios to the bare matmul
    (``rounds`` lists, keys ``fused float`` ...), the CPU times of the last round and the largest differences.
    """
    lesion_seed = None if family == "discs" else args.seed + 2  # lidc, dense: samples and raters outline one lesion
    samples_np = make_masks(args.cases, args.samples, args.size, args.seed, family, lesion_seed)
    raters_np = make_masks(args.cases, args.raters, args.size, args.seed + 1, family, lesion_seed)
    # (B, S, C=1, H, W) float 0/1 masks, as thresholded MC samples usually arrive; bool as `probs > 0.5` emits them
    samples = torch.from_numpy(samples_np).unsqueeze(2).float().to(device)
    raters = torch.from_numpy(raters_np).unsqueeze(2).float().to(device)
    samples_b, raters_b = samples.bool(), raters.bool()
    gram_input = prepare_gram_input(samples, raters)
    run_ours(samples[:2], raters[:2], args.chunk)  # warm-up (allocator, lazy imports, CUDA context)
    with torch_path():
        run_ours_shared(samples[:2], raters[:2], args.chunk)

    print(
        f"\n== {family!r} masks ({100 * foreground_fraction(samples_np, raters_np):.1f} % of the pixels in some mask"
        f" of their case), load average {os.getloadavg()[0]:.2f}"
    )
    t_base, c_base, (ged_ref, hm_ref) = best_time(lambda: run_baseline(samples_np, raters_np), args.baseline_repeats)
    shared = {
        "fused float": (samples, raters, False),
        "fused bool": (samples_b, raters_b, False),
        "torch float": (samples, raters, True),
        "torch bool": (samples_b, raters_b, True),
    }
    ratios: dict[str, list[float]] = {name: [] for name in shared}
    results, times = {}, {}
    cpu_rounds: dict[str, list[float]] = {}  # CPU seconds of each row in each round
    for round_index in range(args.rounds):  # interleaved: every row of a round sees the same machine state
        times["numpy per-pair loop"] = (t_base, c_base)
        cpu_rounds.setdefault("numpy per-pair loop", []).append(c_base)
        t, c, results["two calls"] = best_time(lambda: run_ours(samples, raters, args.chunk), args.repeats)
        times["compute_ged + compute_hm_iou"] = (t, c)
        cpu_rounds.setdefault("compute_ged + compute_hm_iou", []).append(c)
        t_gram, c_gram, _ = best_time(lambda: run_bare_matmul(gram_input, args.chunk), args.repeats)
        times["bare float32 Gram matrix X Xᵀ"] = (t_gram, c_gram)
        for name, (s, r, use_torch) in shared.items():
            with torch_path() if use_torch else contextlib.nullcontext():
                t, c, results[name] = best_time(functools.partial(run_ours_shared, s, r, args.chunk), args.repeats)
            times[f"shared pass, {name}"] = (t, c)
            cpu_rounds.setdefault(f"shared pass, {name}", []).append(c)
            ratios[name].append(c / c_gram)
        print(
            f"round {round_index + 1}: shared pass / bare matmul (CPU), fused float {ratios['fused float'][-1]:.2f},"
            f" fused bool {ratios['fused bool'][-1]:.2f}, torch path float {ratios['torch float'][-1]:.2f},"
            f" torch path bool {ratios['torch bool'][-1]:.2f}   (load average {os.getloadavg()[0]:.2f})"
        )
    print("(last round)                              wall [s]   vs numpy   CPU [s]   vs numpy")
    for label, (wall, cpu) in times.items():
        print(f"{label:40s}  {wall:8.3f}  {t_base / wall:7.1f}x  {cpu:8.3f}  {c_base / cpu:7.1f}x")
    diffs = {
        "GED": max(float(np.abs(g - ged_ref).max()) for g, _ in results.values()),
        "HM-IoU": max(float(np.abs(h - hm_ref).max()) for _, h in results.values()),
    }
    print(f"max |GED diff| {diffs['GED']:.2e}, max |HM-IoU diff| {diffs['HM-IoU']:.2e} over all ways of calling")
    fused_equals_torch = all(
        np.array_equal(results[f"fused {kind}"][i], results[f"torch {kind}"][i])
        for kind in ("float", "bool")
        for i in (0, 1)
    )
    print("fused and torch path give identical GED and HM-IoU:", "yes" if fused_equals_torch else "NO")
    for name, values in ratios.items():
        print(f"RATIO shared pass ({name}) / bare matmul: CPU {_median_range(values)}  (target <= 1.5)")
    return {
        "foreground": foreground_fraction(samples_np, raters_np),
        "ratios": ratios,
        "cpu": {label: statistics.median(values) for label, values in cpu_rounds.items()},
        "diff": max(diffs.values()),
        "identical": fused_equals_torch,
    }


def _median_range(values: list[float]) -> str:
    """``median (min–max)`` with two decimals, or the single value."""
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f})"


#: Row labels of the results tables, per family.
FAMILY_LABELS = {
    "discs": "discs (benchmark default: samples and raters around unrelated centres, radius 6–26 px)",
    "lidc": "lidc (one lesion per case, radius 2–15 px, 25 % empty masks)",
    "dense": "dense (one lesion per case, radius 38–77 px, no empty masks)",
}


def write_results(out: Path, measured: dict[str, dict], first_call: dict[str, float], cached: list[float]):
    """results/<experiment>/ CSVs (results contract): ratios, speed-ups vs the numpy loop, first-call times.

    Ratios and CPU times are medians over the rounds (each a best-of-``repeats`` CPU time).
    """
    out.mkdir(parents=True, exist_ok=True)
    target = 1.5
    with open(out / "shared_pass.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(
            [
                "masks",
                "foreground (union per case)",
                "fused / bare matmul (float masks)",
                "fused / bare matmul (bool masks)",
                "torch path / bare matmul (float masks)",
                "torch path / bare matmul (bool masks)",
                f"fused ≤ {target}",
                "max abs diff vs numpy loop",
            ]
        )
        for family, m in measured.items():
            r = m["ratios"]
            meets = all(statistics.median(r[k]) <= target for k in ("fused float", "fused bool"))
            w.writerow(
                [
                    FAMILY_LABELS[family],
                    f"{100 * m['foreground']:.1f} %",
                    *(_median_range(r[k]) for k in ("fused float", "fused bool", "torch float", "torch bool")),
                    "yes" if meets else "no",
                    f"{m['diff']:.1e}",
                ]
            )
    with open(out / "speedup.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        labels = {
            "numpy per-pair loop": "numpy loop",
            "compute_ged + compute_hm_iou": "two calls (GED, HM-IoU)",
            "shared pass, fused float": "shared pass (fused)",
            "shared pass, torch float": "shared pass (torch path)",
        }
        w.writerow(["masks", *labels.values()])
        for family, m in measured.items():
            base = m["cpu"]["numpy per-pair loop"]
            cells = []
            for key in labels:
                cpu = m["cpu"][key]
                cells.append(f"{cpu:.3f} s" if key == "numpy per-pair loop" else f"{cpu:.3f} s — {base / cpu:.1f}×")
            w.writerow([family, *cells])
    with open(out / "first_call.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["step", "first call, empty numba cache (JIT compile)", "first call, kernels in numba's cache"])
        for (label, seconds), warm in zip(first_call.items(), cached):
            w.writerow([label, f"{seconds:.2f} s", f"{warm:.2f} s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=100)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--raters", type=int, default=4)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=1, help="interleaved timing rounds per family (median, range)")
    parser.add_argument("--baseline-repeats", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--chunk", type=int, default=25, help="cases per call of the vectorised metrics")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch default)")
    parser.add_argument(
        "--masks", nargs="+", choices=sorted(MASK_FAMILIES), default=["discs"], help="mask families (see above)"
    )
    parser.add_argument("--out", type=Path, default=None, help="write the results CSVs (results contract) here")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.samples % args.raters:
        parser.error("the baseline tiles raters to the sample count: --samples must be a multiple of --raters")
    device = torch.device(args.device)

    # JIT: the first calls compile the fused kernels into an empty numba cache (set before numba is imported);
    # a fresh process then loads them from it. Both stay out of the timed ratios below.
    os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench_metrics_numba_")
    first_call = first_call_seconds(device)
    cached = cached_first_call_seconds() if fused.available() else [math.nan] * 3
    print(
        f"machine: {platform.machine()} {_cpu_name()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}"
    )
    print(f"         python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}")
    print(f"         device {device}, load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}, nice {os.nice(0)}")
    print(
        f"workload: {args.cases} cases x {args.samples} samples x {args.raters} raters x {args.size}^2,"
        f" {args.chunk} cases per call; best of {args.repeats} runs per row (baseline {args.baseline_repeats}),"
        f" {args.rounds} interleaved round(s); ratios are process-CPU-time ratios"
    )
    print(
        f"fused kernel (numba): {'available' if fused.available() else 'NOT available (torch path only)'};"
        " first calls, empty cache (JIT) / from the cache in a fresh process: "
        + ", ".join(f"{label} {cold:.2f} s / {warm:.2f} s" for (label, cold), warm in zip(first_call.items(), cached))
        + f"; per kernel (first call incl. compilation) {fused.compile_seconds()}"
    )
    measured = {family: measure_family(args, family, device) for family in args.masks}
    print("\nSUMMARY shared pass / bare float32 matmul (CPU time, median (min-max) over rounds; target <= 1.5)")
    for family, m in measured.items():
        r = m["ratios"]
        print(
            f"  {family:6s} fused float {_median_range(r['fused float'])}, fused bool {_median_range(r['fused bool'])},"
            f" torch path float {_median_range(r['torch float'])}, torch path bool {_median_range(r['torch bool'])}"
        )
    print(f"load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    if args.out is not None:
        write_results(args.out, measured, first_call, cached)
        print(f"wrote {args.out}/shared_pass.csv, speedup.csv, first_call.csv")


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
