"""Core cost ratios of partial-Bayes networks, measured side by side in one run (issue 2).

On a 2D MONAI UNet for 128² patches (the LIDC bundle's network), batch 10:

* checkpoint bytes: 1 % partial / deterministic (target ≤ 1.05) and full mean-field / deterministic (≈ 2.0);
* training step: 1 % partial with 1 MC sample (ELBO = NLL + KL) / deterministic (NLL) (target ≤ 1.3);
* MC inference: S = 8 samples / (8 × one deterministic forward) (target ≤ 1.0), for several
  chunk sizes and batched strategies.

The 1 % is chosen by gradient saliency on one batch, as the recipe does, so the Bayesian weights sit
where saliency puts them. Timings interleave the variants and report the median of ``--repeats``
rounds, which keeps the ratios meaningful on a busy machine.

Usage::

    python benchmarks/bench_core.py [--repeats 7] [--threads 2] [--device cpu] [--out results/bench_core]

With ``--out`` the printed ratios are also written as ``ratios.csv`` and the network's sizes as
``network.csv`` (+ ``provenance.json``, the results contract of :mod:`monai_bayes.evaluation.results`).
"""

from __future__ import annotations

import argparse
import io
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from monai.networks.nets import UNet

from monai_bayes import to_full_bayes, to_partial_bayes
from monai_bayes.cost import count_flops
from monai_bayes.evaluation.results import write_benchmark_results
from monai_bayes.inferers import MonteCarloInferer
from monai_bayes.layers import stochastic_layers
from monai_bayes.losses import ELBOLoss
from monai_bayes.selection import saliency_scores, select_topk


def unet() -> torch.nn.Module:
    """The network of the LIDC bundle: 2D UNet, 5 levels, 2 residual units per level."""
    return UNet(2, 1, 2, channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2)


def disc_batch(batch: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy images of discs and their masks: ``(B, 1, H, W)`` float, ``(B, 1, H, W)`` long."""
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    centres = torch.randint(size // 4, 3 * size // 4, (batch, 2), generator=gen)
    radii = torch.randint(size // 16, size // 5, (batch,), generator=gen)
    masks = (yy - centres[:, 0, None, None]) ** 2 + (xx - centres[:, 1, None, None]) ** 2 <= radii[:, None, None] ** 2
    images = masks.float() * 0.8 + 0.3 * torch.randn(batch, size, size, generator=gen)
    return images[:, None], masks[:, None].long()


def checkpoint_bytes(net: torch.nn.Module) -> int:
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    return buf.tell()


def median_times(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median wall time of each callable, interleaving the callables round by round."""
    for fn in fns.values():  # warm-up
        fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in samples.items()}


def train_step(
    net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, bayes: bool, num_samples: int = 1
) -> Callable[[], None]:
    """One SGD step: NLL (deterministic) or the ELBO with ``num_samples`` batched MC samples."""
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, weight_decay=1e-5)
    inferer = MonteCarloInferer(num_samples, activation=None)
    elbo = ELBOLoss(net, "ce", beta=0.01, kl_reduction="dataset", dataset_size=1000) if bayes else None

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        if elbo is None:
            loss = torch.nn.functional.cross_entropy(net(x), y[:, 0])
        else:
            loss = elbo(inferer(x, net) if num_samples > 1 else net(x), y)
        loss.backward()
        opt.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--out", type=Path, default=None, help="write ratios.csv, network.csv + provenance.json here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    x, y = (t.to(device) for t in disc_batch(args.batch, args.size, seed=0))

    det = unet().to(device)
    scores = saliency_scores(
        det, [{"image": x, "label": y}], lambda p, t: torch.nn.functional.cross_entropy(p, t[:, 0]), progress=False
    )
    partial = to_partial_bayes(det, select_topk(scores, 0.01), inplace=False)
    full = to_full_bayes(det, inplace=False)
    n_params = sum(p.numel() for p in det.parameters())
    n_bayes = sum(layer.num_bayes() for _, layer in stochastic_layers(partial))
    n_layers = len(stochastic_layers(partial))

    print(
        f"# monai_bayes core benchmark  ({platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{args.threads} threads, device {device}, batch {args.batch}, {args.size}²)"
    )
    print(
        f"UNet parameters {n_params}, Bayesian in the 1 % partial net {n_bayes}, "
        f"in {len(stochastic_layers(partial))} of {len(stochastic_layers(full))} conv layers"
    )

    b_det, b_part, b_full = checkpoint_bytes(det), checkpoint_bytes(partial), checkpoint_bytes(full)
    print(f"checkpoint bytes  deterministic {b_det}  partial-1% {b_part}  full {b_full}")
    print(f"RATIO checkpoint partial-1% / deterministic = {b_part / b_det:.4f}   (target <= 1.05)")
    print(f"RATIO checkpoint full-Bayes / deterministic = {b_full / b_det:.4f}   (expected 2.0)")
    ratios = [
        ["checkpoint bytes, 1 % partial / deterministic", f"{b_part / b_det:.3f}", "≤ 1.05"],
        ["checkpoint bytes, full mean-field / deterministic", f"{b_full / b_det:.3f}", "2.0"],
    ]

    det.train(), partial.train(), full.train()
    steps = {
        "det": train_step(det, x, y, False),
        "partial": train_step(partial, x, y, True),
        "partial S=5": train_step(partial, x, y, True, num_samples=5),
        "full S=5": train_step(full, x, y, True, num_samples=5),
    }
    t = median_times(steps, args.repeats)
    step_ms = t["det"] * 1e3
    print(f"train step  deterministic {t['det'] * 1e3:.1f} ms  partial-1% (1 sample) {t['partial'] * 1e3:.1f} ms")
    print(f"RATIO train step partial-1% / deterministic = {t['partial'] / t['det']:.3f}   (target <= 1.3)")
    flops = {name: count_flops(step) for name, step in steps.items()}
    for name in ("partial S=5", "full S=5"):
        print(
            f"RATIO ELBO train step with 5 samples, {name.split()[0]} / deterministic: time {t[name] / t['det']:.2f}, "
            f"counted FLOPs {flops[name] / flops['det']:.2f}"
        )
    print(f"RATIO ELBO train step with 5 samples, full / partial-1%: time {t['full S=5'] / t['partial S=5']:.2f}")
    ratios.append(
        ["training step, 1 % partial (1 sample, ELBO) / deterministic", f"{t['partial'] / t['det']:.3f}", "≤ 1.3"]
    )
    for name, label in (("partial S=5", "1 % partial"), ("full S=5", "full Bayes")):
        cell = f"{t[name] / t['det']:.2f} (counted FLOPs {flops[name] / flops['det']:.2f})"
        ratios.append([f"training step with 5 MC samples, {label} / deterministic", cell, "—"])
    ratios.append(
        ["training step with 5 MC samples, full Bayes / 1 % partial", f"{t['full S=5'] / t['partial S=5']:.2f}", "—"]
    )

    det.eval(), partial.eval()
    S = 8
    fns: dict[str, Callable[[], object]] = {"det": lambda: det(x)}
    for chunk in (1, 2, 4, 8):
        fns[f"mc chunk={chunk}"] = lambda c=chunk: MonteCarloInferer(S, chunk_size=c, seed=0)(x, partial)
    with torch.no_grad():
        t = median_times(fns, args.repeats)
    print(f"one deterministic forward {t['det'] * 1e3:.1f} ms")
    for name, value in t.items():
        if name != "det":
            print(
                f"RATIO MC inference S={S} ({name}) / (8 x deterministic forward) = "
                f"{value / (S * t['det']):.3f}   (target <= 1.0)"
            )
    for chunk in (8, 4, 2, 1):
        ratios.append([
            f"MC inference S = {S} / ({S} × one deterministic forward), {chunk} sample{'s' * (chunk > 1)} per pass",
            f"{t[f'mc chunk={chunk}'] / (S * t['det']):.3f}",
            "≤ 1.0",
        ])  # fmt: skip
    if args.out is not None:
        network = [
            ["UNet parameters (net.parameters())", f"{n_params:,}".replace(",", " ")],
            ["Bayesian weights in the 1 % partial net", f"{n_bayes:,}".replace(",", " ")],
            ["conv layers with Bayesian weights (partial / full)", f"{n_layers} / {len(stochastic_layers(full))}"],
            ["checkpoint bytes (deterministic / 1 % partial / full)", f"{b_det} / {b_part} / {b_full}"],
            ["deterministic training step / forward, median [ms]", f"{step_ms:.0f} / {t['det'] * 1e3:.0f}"],
        ]  # fmt: skip
        notes = (
            f"2D UNet 16-256, 2 residual units; batch {args.batch} x {args.size}^2 noisy discs (seed 0); 1 % of the "
            f"weights chosen by gradient saliency on that batch; {args.threads} threads, device {device}; medians of "
            f"{args.repeats} interleaved rounds (+1 warm-up); shared machine: read ratios, not absolute times."
        )
        tables = {
            "ratios.csv": (["ratio", "measured", "target"], ratios),
            "network.csv": (["quantity", "value"], network),
        }
        write_benchmark_results(args.out, tables, notes, seed=0)


if __name__ == "__main__":
    main()
