"""Distilled student (one pass) vs its Monte-Carlo teacher at S = 8: time of the mean + uncertainty maps.

Teacher: the LIDC bundle's UNet (channels 16–256, 2 residual units) as a 1 % partial-Bayes network (random
1 % selection, the timing does not depend on the trained values) through ``MonteCarloInferer`` with the auto
plan; students: the same UNet and the half-width UNet (8–128) read as BDK / EnD² students, and the same UNet
as a frozen trunk with a precision head (``build_student(..., frozen_trunk=True)``). Prints medians,
interleaved, and the ratios (target: ≥ 5× for the default half-width student)::

    OMP_NUM_THREADS=1 python benchmarks/bench_distill.py --patch 64 --batch 10 --repeats 5
"""

from __future__ import annotations

import argparse

import torch
from monai.networks.nets import UNet

from monai_bayes.distill import build_student, inference_speedup
from monai_bayes.networks import to_partial_bayes
from monai_bayes.selection import select_topk


def main() -> None:
    """Run the comparison and print one line per student."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    teacher = UNet(2, 1, 2, (16, 32, 64, 128, 256), (2, 2, 2, 2), num_res_units=2)
    scores = {n: torch.rand_like(p) for n, p in teacher.named_parameters() if p.dim() > 1}
    teacher = to_partial_bayes(teacher, select_topk(scores, 0.01)).eval()
    x = torch.randn(args.batch, 1, args.patch, args.patch)
    print(f"input {tuple(x.shape)}, teacher S = {args.samples}, threads {torch.get_num_threads()}")
    same, half = (16, 32, 64, 128, 256), (8, 16, 32, 64, 128)
    for kind, channels, frozen in (
        ("bdk", same, False),
        ("bdk", half, False),
        ("end2", same, False),
        ("end2", half, False),
        ("end2", same, True),
    ):
        student = build_student(kind, 2, channels=channels, frozen_trunk=frozen).eval()
        t = inference_speedup(student, teacher, x, num_samples=args.samples, repeats=args.repeats)
        name = f"{kind} student {channels}" + (" frozen trunk + precision head" if frozen else "")
        print(
            f"{name}: teacher {1e3 * t['teacher_s']:7.1f} ms, "
            f"student {1e3 * t['student_s']:6.1f} ms, speed-up {t['speedup']:5.1f}×"
        )


if __name__ == "__main__":
    main()
