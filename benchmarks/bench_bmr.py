"""Stochastic BMR (seed 002, issue 17): pruning-pass cost and sparsity vs quality, measured in one run.

Part 1 -- speed: one BMR pruning pass (ΔF(0) of every weight, the eq. 22 fixed point with k_max = 4,
masks, zeroing, index/ρ compaction) over a flat mean-field MLP of ``--weights`` entries (default
10 layers of 1000 × 1000 = 10 M weights); target ≤ 1 s on the CPU. The mask computation alone and a
plain ``torch.topk`` magnitude ranking of the same weights are timed alongside for scale.

Part 2 -- quality (``--quality``): a small 2D MONAI UNet on synthetic noisy discs is trained
deterministically, made the flat model (γ₀ = 0.1) and trained with the free energy; then, on that
same posterior, one BMR pass is compared with magnitude, SNR and random pruning at *equal*
sparsity (posterior-mean Dice on held-out images, no retraining), and the full stochastic-BMR loop
(``--rounds`` × {prune, optimise}) reports its final sparsity, Dice and compact bytes.

Part 3 -- training step (``--step-time``): one ELBO training step (forward with one posterior sample,
NLL + KL, backward, Adam step) of the bundle-size 2D UNet (channels 16–256) on a batch of 128² discs, for
BMR-S&S (the flat model, unpruned and 80 % pruned with the masks enforced by optimizer hooks) vs
Tiered-FF (:func:`~monai_bayes.networks.to_horseshoe_bayes`), interleaved; target BMR-S&S / Tiered-FF ≤ 0.9.

Usage::

    python benchmarks/bench_bmr.py [--repeats 5] [--threads 2] [--quality] [--step-time] [--no-speed]
"""

from __future__ import annotations

import argparse
import copy
import platform
import tempfile
from pathlib import Path

import torch
from bench_core import disc_batch, median_times, unet
from monai.metrics import compute_dice
from monai.networks.nets import UNet
from torch import nn

from monai_bayes.layers import kl_divergence, sampling_mode
from monai_bayes.networks import to_horseshoe_bayes
from monai_bayes.reduction import (
    apply_prune_masks,
    baseline_masks,
    bmr_masks,
    bmr_prune,
    enforce_prune_masks,
    prune_report,
    save_compact,
    to_flat_bayes,
)


# ------------------------------------------------------------------------------------ part 1
def flat_mlp(num_weights: int, width: int = 1000) -> nn.Module:
    """A flat mean-field MLP of about ``num_weights`` weights, with a spread of posteriors."""
    layers = max(1, round(num_weights / (width * width)))
    net = nn.Sequential(*[nn.Linear(width, width) for _ in range(layers)])
    net = to_flat_bayes(net, gamma0=0.1, sigma_init=0.01)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("_rho"):
                p.uniform_(-7.0, -3.0)
    return net


def speed(args: argparse.Namespace) -> None:
    net = flat_mlp(args.weights)
    n = sum(p.numel() for n_, p in net.named_parameters() if not n_.endswith("_rho"))
    copies = [copy.deepcopy(net) for _ in range(args.repeats + 1)]
    weights = torch.cat([p.detach().reshape(-1) for n_, p in net.named_parameters() if not n_.endswith("_rho")])

    def full_pass() -> None:
        bmr_prune(copies.pop())

    times = median_times(
        {
            "bmr_masks (ΔF, fixed point, masks)": lambda: bmr_masks(net),
            "bmr_prune (masks + zeroing + compaction)": full_pass,
            "torch.topk of |w| at 50 % (reference)": lambda: torch.topk(weights.abs(), n // 2, largest=False),
        },
        args.repeats,
    )
    pruned = bmr_prune(copy.deepcopy(net)).report
    print(f"## Pruning pass over {n:,} weights ({len(net)} × Linear(1000, 1000)), {args.threads} threads")
    print("| step | median wall (s) |\n|---|---:|")
    for name, t in times.items():
        print(f"| {name} | {t:.3f} |")
    print(f"\npruned by the pass: {pruned.fraction:.3f} of {pruned.entries:,} entries; target ≤ 1 s for bmr_prune\n")


# ------------------------------------------------------------------------------------ part 2
def small_unet() -> nn.Module:
    return UNet(2, 1, 2, channels=(8, 16, 32), strides=(2, 2), num_res_units=1)


def dice(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Posterior-mean foreground Dice on ``(x, y)``."""
    net.eval()
    with torch.no_grad(), sampling_mode(net, "mean"):
        pred = net(x).argmax(1, keepdim=True)
    return float(compute_dice(pred.float(), y.float(), include_background=True).nanmean())


def train(net: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, kl_scale: float | None, lr: float) -> None:
    """Adam on minibatches of 8; loss = CE (+ KL / ``kl_scale`` for the flat model); ρ at learning rate 0.05."""
    rho = [p for n, p in net.named_parameters() if n.endswith("_rho")]
    rest = [p for n, p in net.named_parameters() if not n.endswith("_rho")]
    groups = [{"params": rest}] + ([{"params": rho, "lr": 0.05}] if rho else [])
    opt = torch.optim.Adam(groups, lr=lr)
    enforce_prune_masks(net, opt)  # pruned entries (if any) stay exactly 0 under this optimizer
    net.train()
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (8,), generator=gen)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(net(x[idx]), y[idx, 0])
        if kl_scale is not None:
            loss = loss + kl_divergence(net) / kl_scale
        loss.backward()
        opt.step()


def quality(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    x, y = disc_batch(64, args.size, seed=1)
    xt, yt = disc_batch(32, args.size, seed=2)
    det = small_unet()
    train(det, x, y, args.steps, None, 1e-2)
    # KL per voxel-likelihood term: the CE is a mean over B·H·W voxels
    kl_scale = float(x.shape[0] * args.size * args.size)
    flat = to_flat_bayes(copy.deepcopy(det), gamma0=0.1)
    train(flat, x, y, args.steps, kl_scale, 3e-3)
    base = dice(flat, xt, yt)
    one = copy.deepcopy(flat)
    masks, _, _ = bmr_masks(one)
    report = apply_prune_masks(one, masks)
    rows = [("unpruned flat posterior", 0.0, base), ("BMR-S&S, one pass", report.fraction, dice(one, xt, yt))]
    for method in ("magnitude", "snr", "random"):
        other = copy.deepcopy(flat)
        gen = torch.Generator().manual_seed(0)
        rep = apply_prune_masks(other, baseline_masks(other, method, report.pruned, gen))
        rows.append((f"{method}, same count", rep.fraction, dice(other, xt, yt)))
    loop = copy.deepcopy(flat)
    for _ in range(args.rounds):
        bmr_prune(loop)
        train(loop, x, y, args.steps // 4, kl_scale, 3e-3)
    final = prune_report(loop)
    rows.append((f"stochastic BMR, {args.rounds} rounds", final.fraction, dice(loop, xt, yt)))
    with tempfile.TemporaryDirectory() as tmp:
        size = save_compact(loop, Path(tmp) / "bmr.pt")
    print(f"## Sparsity vs Dice: UNet {sum(p.numel() for p in det.parameters()):,} parameters, {args.size}² discs")
    print(f"deterministic Dice {dice(det, xt, yt):.3f}\n")
    print("| network | pruned fraction | Dice (posterior mean) |\n|---|---:|---:|")
    for name, frac, d in rows:
        print(f"| {name} | {frac:.3f} | {d:.3f} |")
    print(f"\ncompact file tensors: {size.compact_bytes:,} B vs dense {size.dense_bytes:,} B (ratio {size.ratio:.3f})")


# ------------------------------------------------------------------------------------ part 3
def step_time(args: argparse.Namespace) -> None:
    x, y = disc_batch(args.batch, 128, seed=0)
    torch.manual_seed(0)
    det = unet()
    nets = {
        "BMR-S&S, flat model (unpruned)": to_flat_bayes(copy.deepcopy(det), gamma0=0.1, sigma_init=0.01),
        "BMR-S&S, flat model 80 % pruned": to_flat_bayes(copy.deepcopy(det), gamma0=0.1, sigma_init=0.01),
        "Tiered-FF (horseshoe)": to_horseshoe_bayes(copy.deepcopy(det)),
    }
    pruned = nets["BMR-S&S, flat model 80 % pruned"]
    apply_prune_masks(pruned, baseline_masks(pruned, "magnitude", int(0.8 * prune_report(pruned).entries)))
    opts = {name: torch.optim.Adam(net.parameters(), lr=1e-4) for name, net in nets.items()}
    enforce_prune_masks(pruned, opts["BMR-S&S, flat model 80 % pruned"])
    scale = float(x.shape[0] * 128 * 128)

    def step(name: str) -> None:
        net, opt = nets[name], opts[name]
        opt.zero_grad()
        loss = nn.functional.cross_entropy(net(x), y[:, 0]) + kl_divergence(net) / scale
        loss.backward()
        opt.step()

    for name in nets:  # warm-up
        step(name)
    times = median_times({name: (lambda n=name: step(n)) for name in nets}, args.repeats)
    ref = times["Tiered-FF (horseshoe)"]
    print(f"## Training step, 2D UNet (channels 16–256), batch {args.batch} × 128², {args.threads} threads")
    print("| network | median step (s) | ratio to Tiered-FF |\n|---|---:|---:|")
    for name, t in times.items():
        print(f"| {name} | {t:.3f} | {t / ref:.3f} |")
    print("\ntarget: BMR-S&S / Tiered-FF ≤ 0.9\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--weights", type=int, default=10_000_000)
    parser.add_argument("--quality", action="store_true")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--step-time", action="store_true")
    parser.add_argument("--no-speed", action="store_true", help="skip part 1 (the 10 M-weight pruning pass)")
    parser.add_argument("--batch", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {platform.machine()}, {platform.processor() or 'cpu'}\n")
    if not args.no_speed:
        speed(args)
    if args.step_time:
        step_time(args)
    if args.quality:
        quality(args)


if __name__ == "__main__":
    main()
