"""Distilled student (one pass) vs its Monte-Carlo teacher at S = 8: time of the mean + uncertainty maps.

Teacher: the LIDC bundle's UNet (channels 16–256, 2 residual units) as a 1 % partial-Bayes network (random
1 % selection, the timing does not depend on the trained values) through ``MonteCarloInferer`` with the auto
plan; students: the same UNet and the half-width UNet (8–128) read as BDK / EnD² students. Prints medians,
interleaved, and the ratios (target: ≥ 5× for the default half-width student)::

    OMP_NUM_THREADS=1 python benchmarks/bench_distill.py --patch 64 --batch 10 --repeats 5 [--out results/bench_distill]

With ``--out`` the lines are also written as ``speedup.csv`` (+ ``provenance.json``, the results contract).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from monai.networks.nets import UNet

from monai_bayes.distill import build_student, inference_speedup
from monai_bayes.evaluation.results import write_benchmark_results
from monai_bayes.networks import to_partial_bayes
from monai_bayes.selection import select_topk

#: student channels and how the table names them
WIDTHS = (((16, 32, 64, 128, 256), "same width (16–256)"), ((8, 16, 32, 64, 128), "half width (8–128)"))


def main() -> None:
    """Run the comparison and print one line per student."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None, help="write speedup.csv + provenance.json here")
    args = parser.parse_args()
    torch.manual_seed(0)
    teacher = UNet(2, 1, 2, (16, 32, 64, 128, 256), (2, 2, 2, 2), num_res_units=2)
    scores = {n: torch.rand_like(p) for n, p in teacher.named_parameters() if p.dim() > 1}
    teacher = to_partial_bayes(teacher, select_topk(scores, 0.01)).eval()
    x = torch.randn(args.batch, 1, args.patch, args.patch)
    print(f"input {tuple(x.shape)}, teacher S = {args.samples}, threads {torch.get_num_threads()}")
    rows = []
    for kind in ("bdk", "end2"):
        for channels, width in WIDTHS:
            student = build_student(kind, 2, channels=channels).eval()
            t = inference_speedup(student, teacher, x, num_samples=args.samples, repeats=args.repeats)
            print(
                f"{kind:4s} student {channels}: teacher {1e3 * t['teacher_s']:7.1f} ms, "
                f"student {1e3 * t['student_s']:6.1f} ms, speed-up {t['speedup']:5.1f}×"
            )
            name = {"bdk": "BDK", "end2": "EnD²"}[kind]
            times = [f"{1e3 * t['teacher_s']:.0f} ms", f"{1e3 * t['student_s']:.1f} ms", f"{t['speedup']:.1f}×"]
            rows.append([f"{name}, {width}", *times])
    if args.out is not None:
        header = ["student", f"teacher S = {args.samples}", "student", "speed-up"]
        notes = (
            f"Teacher: LIDC bundle UNet 16-256 with a random 1 % partial-Bayes selection (seed 0), MonteCarloInferer "
            f"S={args.samples}, auto plan; students: one untrained pass of DistilledStudent (timing only); input "
            f"{args.batch} x 1 x {args.patch}^2; medians of {args.repeats} interleaved calls per pair "
            "(inference_speedup); shared machine: read the ratios, not absolute times."
        )
        write_benchmark_results(args.out, {"speedup.csv": (header, rows)}, notes, seed=0)


if __name__ == "__main__":
    main()
