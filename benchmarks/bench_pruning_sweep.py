"""A pruning sweep (K sparsities × N runs, inference only) vs one training run of the same classifier.

Issue 18: "a whole pruning sweep re-uses one trained model per run and costs only inference". This script
trains one ChestMNIST ResNet (the bundle's tiny default: ResNet18 layout, width 16, 28², synthetic data) for
``--epochs`` epochs, then sweeps ``--runs`` copies of it over the 20 sparsities of the seed on the test split,
and prints the two wall times and their ratio side by side.

    python benchmarks/bench_pruning_sweep.py --runs 5 --epochs 4 [--out results/bench_pruning_sweep]

With ``--out`` the lines are also written as ``timing.csv`` (+ ``provenance.json``, the results contract).
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from monai_bayes.data.synthetic import write_chestmnist_npz
from monai_bayes.evaluation.results import write_benchmark_results
from monai_bayes.pruning import DEFAULT_SPARSITIES, pruning_sweep
from monai_bayes.workflows.classification import ClassificationTraining, load_classification_data, train_classifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--num_train", type=int, default=1000)
    parser.add_argument("--num_test", type=int, default=400)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--out", type=Path, default=None, help="write timing.csv + provenance.json here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        npz = write_chestmnist_npz(Path(tmp) / "c.npz", args.num_train, 50, args.num_test, seed=0)
        data = load_classification_data(npz)
        start = time.perf_counter()
        model = train_classifier(
            "deterministic", data, Path(tmp) / "run", width=args.width,
            settings=ClassificationTraining(deterministic_epochs=args.epochs),
        ).network.eval()  # fmt: skip
        train_s = time.perf_counter() - start
    models = [copy.deepcopy(model) for _ in range(args.runs)]
    labels = data.labels["test"].numpy().astype(np.uint8)
    sweep = pruning_sweep(models, data.images["test"], labels, DEFAULT_SPARSITIES)
    k, n = len(DEFAULT_SPARSITIES), args.runs
    print(f"{'one training run':<45} {train_s:8.1f} s   ({args.epochs} epochs, {args.num_train} images)")
    print(f"{f'pruning sweep ({n} runs x {k} sparsities)':<45} {sweep.seconds:8.1f} s   ({args.num_test} test images)")
    print(f"{'ratio sweep / one training run':<45} {sweep.seconds / train_s:8.2f}")
    print(f"{'ratio sweep / (N training runs)':<45} {sweep.seconds / (n * train_s):8.2f}")
    if args.out is not None:
        rows = [
            [f"one training run ({args.epochs} epochs, {args.num_train} images)", f"{train_s:.1f} s"],
            [f"pruning sweep, {n} runs × {k} sparsities, {args.num_test} test images", f"{sweep.seconds:.1f} s"],
            ["sweep / one training run", f"{sweep.seconds / train_s:.2f}"],
            [f"sweep / the {n} training runs it analyses", f"{sweep.seconds / (n * train_s):.2f}"],
        ]
        notes = (
            f"ChestMNIST ResNet (ResNet18 layout, width {args.width}, 28^2) on synthetic data "
            f"(write_chestmnist_npz seed 0: {args.num_train} train / 50 val / {args.num_test} test images); one "
            f"deterministic training run of {args.epochs} epochs vs an L1 pruning sweep of {n} copies of it over "
            f"the {k} default sparsities (inference only); 1 thread; one measurement each (no repeats)."
        )
        write_benchmark_results(args.out, {"timing.csv": (["what", "measured"], rows)}, notes, seed=0)


if __name__ == "__main__":
    main()
