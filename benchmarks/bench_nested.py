"""Benchmark: BN3 width-w sub-networks (seed 001) -- inference time of the extracted network and GED per width.

Workload: a 2D MONAI ``UNet`` (batch norm, residual units) on synthetic LIDC-like multi-rater data
(a lesion of random size and contrast per image, four raters who trace it with jittered outlines and
miss faint lesions more often; some images have no lesion). Steps:

1. train the deterministic UNet (cross-entropy against a random rater per item and step);
2. convert it with :func:`~monai_bayes.networks.to_nested` (θ = the trained weights) and train BN3 with
   the ELBO (:class:`~monai_bayes.losses.ELBOLoss`, KL per voxel-likelihood term) while annealing τ;
3. for every width: recalibrate batch norms on the training data, extract the physically smaller
   network (:func:`~monai_bayes.networks.extract_width`), time its forward pass against the
   full-width extracted network (same input, same threads, median of repeats, interleaved), and score
   GED / HM-IoU / sample diversity with ``S`` samples at that width
   (:func:`~monai_bayes.evaluation.evaluate_width_sweep`).

Prints one row per width with the time ratio and the GED, and the narrowest width whose GED stays
within ``--ged-tolerance`` (default 0.02) of full width. Not a unit test; numbers are not asserted.

Usage::

    python benchmarks/bench_nested.py [--channels 32 64 128 256] [--groups 32] [--size 64]
        [--train 320] [--test 96] [--det-epochs 6] [--bn3-epochs 10] [--samples 1 4 8 16]
        [--widths 6 8 12 16 24 32] [--time-batch 8] [--time-size 128] [--repeats 11] [--seed 0]
        [--checkpoint bn3.pt] [--output-dir out/]   # reuse trained networks; write table + figures
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.nets import UNet
from torch import nn

from monai_bayes.evaluation import SWEEP_METRICS, evaluate_width_sweep, write_width_sweep_report
from monai_bayes.layers import nested_layers, set_nested_temperature
from monai_bayes.losses import ELBOLoss
from monai_bayes.networks import extract_width, recalibrate_batch_norm, to_nested


# ----------------------------------------------------------------------------------------- data
def make_multirater_data(cases: int, size: int, raters: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(N, 1, H, W)`` and rater masks ``(N, R, H, W)``: one lesion (or none) traced by ``R`` raters."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    images = np.zeros((cases, 1, size, size), np.float32)
    masks = np.zeros((cases, raters, size, size), np.uint8)
    for i in range(cases):
        background = rng.normal(0, 1, (size // 8, size // 8)).astype(np.float32)
        smooth = torch.nn.functional.interpolate(
            torch.from_numpy(background)[None, None], size=(size, size), mode="bicubic", align_corners=False
        )[0, 0].numpy()
        image = 0.4 * smooth + rng.normal(0, 0.35, (size, size))
        if rng.random() < 0.8:
            cy, cx = rng.uniform(0.25 * size, 0.75 * size, 2)
            ry, rx = rng.uniform(0.05 * size, 0.16 * size, 2)
            contrast = rng.uniform(0.3, 1.5)
            inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
            image += contrast / (1 + np.exp(8 * (np.sqrt(inside) - 1)))
            for r in range(raters):
                if rng.random() < 0.6 * max(0.0, 1.0 - contrast):  # faint lesions are missed more often
                    continue
                s = 1 + rng.normal(0, 0.15)
                jy, jx = rng.normal(0, 0.03 * size, 2)
                masks[i, r] = (((yy - cy - jy) / (ry * s)) ** 2 + ((xx - cx - jx) / (rx * s)) ** 2) <= 1
        images[i, 0] = image
    return torch.from_numpy(images), torch.from_numpy(masks)


def batches(images: torch.Tensor, masks: torch.Tensor, batch: int, shuffle: bool, gen: torch.Generator):
    order = torch.randperm(len(images), generator=gen) if shuffle else torch.arange(len(images))
    for start in range(0, len(images), batch):
        idx = order[start : start + batch]
        yield {"image": images[idx], "label": masks[idx]}


def random_rater(label: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``(B, R, H, W)`` → ``(B, 1, H, W)``: one rater per item (LIDC training, as in the seeds)."""
    pick = torch.randint(0, label.shape[1], (label.shape[0],), generator=gen)
    return label[torch.arange(label.shape[0]), pick].unsqueeze(1).long()


# ----------------------------------------------------------------------------------------- training
def train(net, loss_fn, data, epochs, lr, gen, on_epoch=None) -> float:
    images, masks = data
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    start = time.perf_counter()
    for epoch in range(epochs):
        if on_epoch is not None:
            on_epoch(epoch)
        for b in batches(images, masks, 16, True, gen):
            loss = loss_fn(net(b["image"]), random_rater(b["label"], gen))
            opt.zero_grad()
            loss.backward()
            opt.step()
    return time.perf_counter() - start


def time_forward(nets: dict[int, nn.Module], x: torch.Tensor, repeats: int) -> dict[int, tuple[float, float]]:
    """(median, min) seconds per forward pass of each network, interleaved so load changes hit all alike."""
    times: dict[int, list[float]] = {w: [] for w in nets}
    with torch.no_grad():
        for net in nets.values():
            net.eval()
            net(x)  # warm-up
        for _ in range(repeats):
            for w, net in nets.items():
                t0 = time.perf_counter()
                net(x)
                times[w].append(time.perf_counter() - t0)
    return {w: (statistics.median(t), min(t)) for w, t in times.items()}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--channels", type=int, nargs="+", default=[32, 64, 128, 256])
    p.add_argument("--groups", type=int, default=32)
    p.add_argument("--always-kept", type=int, default=2)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--train", type=int, default=320)
    p.add_argument("--test", type=int, default=96)
    p.add_argument("--det-epochs", type=int, default=6)
    p.add_argument("--bn3-epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--samples", type=int, nargs="+", default=[1, 4, 8, 16], help="the table uses the largest")
    p.add_argument("--widths", type=int, nargs="+", default=[6, 8, 12, 16, 24, 32])
    p.add_argument("--time-batch", type=int, default=8)
    p.add_argument("--time-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=11)
    p.add_argument("--ged-tolerance", type=float, default=0.02)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", default=None, help="reuse (or write) the trained networks from / to this file")
    p.add_argument("--output-dir", default=None, help="write the sweep table and Fig. 7-like figures here")
    return p.parse_args()


def make_network(args: argparse.Namespace) -> nn.Module:
    strides = [2] * (len(args.channels) - 1)
    return UNet(2, 1, 2, channels=args.channels, strides=strides, num_res_units=1, norm="batch")


def train_bn3(args, train_data, gen) -> tuple[nn.Module, dict[str, torch.Tensor], dict[str, float]]:
    """Deterministic UNet → to_nested (θ = trained weights) → BN3 with the ELBO and annealed τ."""
    net = make_network(args)
    ce = lambda logits, y: F.cross_entropy(logits, y[:, 0])  # noqa: E731
    info = {"det_time": train(net, ce, train_data, args.det_epochs, args.lr, gen)}
    deterministic = {k: v.clone() for k, v in net.state_dict().items()}
    to_nested(net, args.groups, always_kept=args.always_kept, temperature=2.0)
    loss = ELBOLoss(net, ce, kl_reduction="dataset", dataset_size=args.train * args.size**2)
    anneal = lambda epoch: set_nested_temperature(net, max(0.5, 2.0 * 0.8**epoch))  # noqa: E731
    info["bn3_time"] = train(net, loss, train_data, args.bn3_epochs, args.lr, gen, anneal)
    return net, deterministic, info


def load_or_train(args, train_data, gen) -> tuple[nn.Module, nn.Module, dict[str, float]]:
    """(BN3 network, deterministic UNet it was converted from, training times)."""
    if args.checkpoint and os.path.isfile(args.checkpoint):
        saved = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
        net = to_nested(make_network(args), args.groups, always_kept=args.always_kept)
        net.load_state_dict(saved["state_dict"])
        deterministic, info = saved["deterministic"], {k: float(v) for k, v in saved["info"].items()}
    else:
        net, deterministic, info = train_bn3(args, train_data, gen)
        if args.checkpoint:
            torch.save({"state_dict": net.state_dict(), "deterministic": deterministic, "info": info}, args.checkpoint)
    det = make_network(args)
    det.load_state_dict(deterministic)
    return net, det, info


def main() -> None:
    args = parse_args()
    widths = sorted(set(args.widths) | {args.groups})
    samples = sorted(set(args.samples))
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    train_data = make_multirater_data(args.train, args.size, 4, args.seed)
    test = list(batches(*make_multirater_data(args.test, args.size, 4, args.seed + 1), 16, False, gen))
    net, det, info = load_or_train(args, train_data, gen)

    recal = list(batches(*train_data, 32, False, gen))
    sweep = evaluate_width_sweep(
        net, test, widths=widths, num_samples=samples, recalibration_data=recal, seed=args.seed
    )
    baseline = evaluate_width_sweep(det, test, num_samples=samples, method="deterministic UNet")
    if args.output_dir:
        write_width_sweep_report([sweep, baseline], args.output_dir, prefix="bench_nested")
    subnets, params = {}, {}
    for w in widths:
        recalibrate_batch_norm(net, recal, width=w, seed=args.seed)
        subnets[w] = extract_width(net, w)
        params[w] = sum(t.numel() for t in subnets[w].parameters())
    seconds = time_forward(subnets, torch.randn(args.time_batch, 1, args.time_size, args.time_size), args.repeats)

    S = samples[-1]
    metrics = {m: {w: float(sweep.per_case(m, w, S).mean()) for w in widths} for m in SWEEP_METRICS}
    det_ged = float(baseline.per_case("ged", None, S).mean())
    kept = np.mean([float(layer.node_keep_probabilities().detach().sum()) for _, layer in nested_layers(net)])
    header = [
        f"machine: {platform.platform()}, {platform.machine()}, {os.cpu_count()} cores (shared), "
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}",
        f"UNet channels {args.channels}, groups {args.groups} (always kept {args.always_kept}), batch norm, "
        f"1 residual unit; train {args.train} / test {args.test} cases of {args.size}x{args.size}, 4 raters",
        f"training: deterministic {args.det_epochs} epochs {info['det_time']:.0f} s, BN3 {args.bn3_epochs} epochs "
        f"{info['bn3_time']:.0f} s; expected kept nodes per layer {kept:.1f} of {args.groups - args.always_kept + 1}",
        f"timing: batch {args.time_batch}x1x{args.time_size}x{args.time_size}, {args.repeats} interleaved repeats",
        f"GED / HM-IoU / diversity: {args.test} cases, S = {S}, BN recalibrated per width; "
        f"deterministic UNet before conversion: GED {det_ged:.4f}",
    ]
    print_report(header, widths, args.groups, params, seconds, metrics, args.ged_tolerance)


def print_report(header, widths, full, params, seconds, metrics, tolerance) -> None:
    ged, hm, div = (metrics[m] for m in SWEEP_METRICS)
    ratio = {w: (seconds[w][0] / seconds[full][0], seconds[w][1] / seconds[full][1]) for w in widths}
    print("\n".join(header), end="\n\n")
    print(f"{'width':>7} {'%':>6} {'params':>9} {'ms med':>8} {'ms min':>8} {'ratio med':>9} {'ratio min':>9}", end="")
    print(f" {'GED':>7} {'dGED':>7} {'HM-IoU':>7} {'div':>6}")
    for w in widths:
        print(f"{w:>3}/{full:<3} {100 * w / full:6.1f} {params[w]:9d} {1000 * seconds[w][0]:8.1f}", end="")
        print(f" {1000 * seconds[w][1]:8.1f} {ratio[w][0]:9.3f} {ratio[w][1]:9.3f}", end="")
        print(f" {ged[w]:7.4f} {ged[w] - ged[full]:+7.4f} {hm[w]:7.4f} {div[w]:6.3f}")
    narrowest = full  # narrowest w such that every evaluated width >= w is within the tolerance
    for w in sorted(widths, reverse=True):
        if ged[w] - ged[full] > tolerance:
            break
        narrowest = w
    print(
        f"\nnarrowest width within {tolerance} GED of full width: {narrowest}/{full} ({100 * narrowest / full:.1f} %),"
        f" time ratio {ratio[narrowest][0]:.3f} (median) / {ratio[narrowest][1]:.3f} (min),"
        f" GED {ged[narrowest]:.4f} vs {ged[full]:.4f}"
    )
    if not math.isfinite(ged[full]):
        print("warning: full-width GED is not finite")


if __name__ == "__main__":
    main()
