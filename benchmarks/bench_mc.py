"""Monte-Carlo inference cost vs a plain loop over S forwards, measured side by side (issue 22).

For MONAI ``UNet`` and ``BasicUNet`` in 2D (whole images) and ``UNet`` in 3D (sliding windows), each with
1 % partial-Bayes weights chosen by gradient saliency over the whole network (``global``) or within the
decoder (``decoder``, :func:`monai_bayes.selection.scope_modules`) or the decoder without the convs that
read a skip concatenation (``decoder_skipfree``: ``scope_modules(..., skip_readers=False)``), it times,
interleaved round by round:

* ``det`` -- one deterministic forward (the unit: ratios are time / (S × det));
* ``loop`` -- a plain loop over S single-sample forwards (what a user would write by hand);
* ``stacked S`` -- all S samples in one stacked batch, no shared prefix (the old default);
* ``shared S`` -- all S samples in one pass with the shared prefix (layers before the first stochastic
  layer run once);
* ``shared+sparse S`` -- as ``shared S``, and layers whose input is still shared (under global saliency:
  the first conv) compute their S samples as one dense conv plus one conv for all S sparse perturbations
  (``sparse_input=True``, :func:`monai_bayes.layers.functional.forward_with_sparse_samples_shared`);
* ``shared+sparse+split S`` -- as ``shared+sparse S``, and each convolution reading a skip concatenation of
  shared and per-sample activations runs its shared-channel half once (``split_conv=True``,
  :class:`monai_bayes.layers.SharedPrefixMode`); the ``shared`` columns before it have ``split_conv=False``;
* ``auto`` -- the default ``MonteCarloInferer()`` (chunk size, shared prefix and sparse input chosen by its
  probe; the probe runs during the warm-up and its choice is printed).

For the global selection it also times the first stochastic layer alone: S dense per-sample convs of the
expanded input (the ``"loop"`` strategy) vs the sparse shared path (``first-layer`` ratio < 1: the sparse
path is faster).

It also prints the cost predicted from the MAC split (:func:`monai_bayes.layers.mc_cost_split`), without and
with the split convolutions counted. Medians
of ``--repeats`` rounds; the machine may be shared, so read the ratios, not the absolute times.

Usage::

    python benchmarks/bench_mc.py [--repeats 5] [--threads 2] [--device cpu|cuda] [--quick] [--roi3d 96]
                                  [--scopes global,decoder,decoder_skipfree,bottleneck]
                                  [--out results/fast_mc]

With ``--out`` the rows are also written as ``mc_cost.csv`` (+ ``provenance.json``) in that folder.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from bench_core import disc_batch, median_times
from monai.inferers import SimpleInferer, SlidingWindowInferer
from monai.networks.nets import BasicUNet, UNet

from monai_bayes import to_partial_bayes
from monai_bayes.inferers import MonteCarloInferer
from monai_bayes.layers import (
    draw_noise,
    fixed_noise,
    mc_cost_split,
    mc_samples,
    sampling_mode,
    select_noise,
    stochastic_layers,
)
from monai_bayes.layers.functional import forward_with_samples, forward_with_sparse_samples_shared
from monai_bayes.selection import call_order, restrict_scores, saliency_scores, scope_modules, select_topk

S = 8

#: timed variant -> CSV column (ratios to S x one deterministic forward)
COLUMNS = {
    "loop": "plain loop",
    "stacked S": "stacked",
    "shared S": "shared prefix",
    "shared+sparse S": "shared + sparse input",
    "shared+sparse+split S": "shared + sparse input + split conv",
    "auto": "auto (default)",
}


def networks(quick: bool) -> list[tuple[str, torch.nn.Module, int]]:
    """``(label, network, spatial dims)``: the LIDC bundle's UNet, MONAI BasicUNet, a 3D UNet."""
    ch = (8, 16, 32, 64, 128) if quick else (16, 32, 64, 128, 256)
    return [
        ("UNet 2D", UNet(2, 1, 2, channels=ch, strides=(2, 2, 2, 2), num_res_units=2), 2),
        (
            "BasicUNet 2D",
            BasicUNet(2, 1, 2, features=(16, 16, 32, 64, 128, 16) if quick else (32, 32, 64, 128, 256, 32)),
            2,
        ),
        ("UNet 3D", UNet(3, 1, 2, channels=(8, 16, 32, 64), strides=(2, 2, 2), num_res_units=1), 3),
    ]


def blob_batch(batch: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """3D noisy spheres ``(B, 1, D, H, W)`` and their masks."""
    gen = torch.Generator().manual_seed(seed)
    grid = torch.stack(torch.meshgrid(*[torch.arange(size)] * 3, indexing="ij"))
    centre = torch.randint(size // 4, 3 * size // 4, (batch, 3, 1, 1, 1), generator=gen)
    masks = ((grid[None] - centre) ** 2).sum(1) <= (size // 5) ** 2
    images = masks.float() * 0.8 + 0.3 * torch.randn(masks.shape, generator=gen)
    return images[:, None], masks[:, None].long()


def partial_net(det: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, scope: str) -> torch.nn.Module:
    """1 % partial Bayes by gradient saliency over the whole net, the (skip-free) decoder, or the bottleneck only.

    ``bottleneck`` (a benchmark-only scope): the layers whose output has the network's smallest spatial size
    (:func:`monai_bayes.selection.call_order`), so every decoder level after them reads a concatenation of a
    shared skip and a per-sample path -- the case the split convolution is for.
    """
    scores = saliency_scores(
        det, [{"image": x, "label": y}], lambda p, t: torch.nn.functional.cross_entropy(p, t[:, 0]), progress=False
    )
    include = None
    if scope == "decoder":
        include = scope_modules(det, x, "decoder")
    elif scope == "decoder_skipfree":
        include = scope_modules(det, x, "decoder", skip_readers=False)
    elif scope == "bottleneck":
        order = call_order(det, x)
        smallest = min(size for _, size in order)
        include = [name for name, size in order if size == smallest]
    if include is not None:
        scores = restrict_scores(scores, include)
    return to_partial_bayes(det, select_topk(scores, 0.01), inplace=False).eval()


def plain_loop(net: torch.nn.Module, x: torch.Tensor, inner: Callable[..., torch.Tensor]) -> Callable[[], object]:
    """S single-sample forwards, each with its own frozen noise (what a hand-written loop does)."""
    noise = draw_noise(net, S, torch.Generator(device=x.device).manual_seed(0))

    def run() -> list[torch.Tensor]:
        outs = []
        for s in range(S):
            with fixed_noise(net, select_noise(noise, s)):
                outs.append(torch.softmax(inner(x, net), 1))
        return outs

    return run


def shared_pass(inner: Callable[..., torch.Tensor], sparse_input: bool, split_conv: bool) -> MonteCarloInferer:
    """All S samples in one shared-prefix pass, with or without sparse input and split convolutions."""
    return MonteCarloInferer(
        S, inner, chunk_size=S, shared_prefix=True, sparse_input=sparse_input, split_conv=split_conv, seed=0
    )


def synced(fn: Callable[[], object], device: torch.device) -> Callable[[], object]:
    """``fn`` followed by a CUDA synchronisation (so wall times include the kernels)."""
    if device.type != "cuda":
        return fn

    def run() -> object:
        out = fn()
        torch.cuda.synchronize(device)
        return out

    return run


def first_layer_ratio(net: torch.nn.Module, x: torch.Tensor, repeats: int) -> float | None:
    """Time of the sparse shared path / S dense per-sample convs, for the stochastic layers that read ``x``.

    ``None`` when no stochastic layer reads the input directly (decoder scope) or none can use the path.
    """
    with mc_samples(net, S), sampling_mode(net, "sample"):
        firsts = []
        hooks = [
            m.register_forward_pre_hook(lambda m, a: firsts.append(m) if a[0] is x else None)
            for _, m in stochastic_layers(net)
        ]
        with torch.no_grad(), mc_samples(net, 1):  # one plain forward finds the layers that read x
            net(x)
        for h in hooks:
            h.remove()
        layers = [m for m in firsts if m.takes_shared_input()]
        if not layers:
            return None
        xs = torch.cat([x] * S)

        def dense() -> None:
            for m in layers:
                w = m.sample_parameter("weight", S)
                forward_with_samples(m, xs, w, m.bias, "loop")

        def sparse() -> None:
            for m in layers:
                delta = m.parameter_delta("weight", S)
                forward_with_sparse_samples_shared(m, x, m.weight, m.bias, m.weight_bayes_index, delta)

        with torch.no_grad():
            t = median_times({"dense": synced(dense, x.device), "sparse": synced(sparse, x.device)}, repeats)
    return t["sparse"] / t["dense"]


def bench(
    label: str, det: torch.nn.Module, dims: int, args: argparse.Namespace, device: torch.device
) -> list[dict[str, str]]:
    if dims == 2:
        x, y = disc_batch(args.batch, args.size, seed=0)
        inner: Callable[..., torch.Tensor] = SimpleInferer()
    else:
        x, y = blob_batch(1, args.size3d, seed=0)
        inner = SlidingWindowInferer((args.roi3d,) * 3, sw_batch_size=2, overlap=0.25)
    x, y, det = x.to(device), y.to(device), det.to(device).eval()
    rows = []
    for scope in args.scopes.split(","):
        net = partial_net(det, x, y, scope)
        patch = x if dims == 2 else x[..., : args.roi3d, : args.roi3d, : args.roi3d]
        split = mc_cost_split(net, patch, split_conv=False)
        split_conv = mc_cost_split(net, patch, split_conv=True)
        auto = MonteCarloInferer(S, inferer=inner, seed=0)
        fns: dict[str, Callable[[], object]] = {
            "det": lambda: inner(x, det),
            "loop": plain_loop(net, x, inner),
            "stacked S": lambda n=net: MonteCarloInferer(S, inner, chunk_size=S, shared_prefix=False, seed=0)(x, n),
            "shared S": lambda n=net: shared_pass(inner, sparse_input=False, split_conv=False)(x, n),
            "shared+sparse S": lambda n=net: shared_pass(inner, sparse_input=True, split_conv=False)(x, n),
            "shared+sparse+split S": lambda n=net: shared_pass(inner, sparse_input=True, split_conv=True)(x, n),
            "auto": lambda n=net, a=auto: a(x, n),
        }
        start = time.perf_counter()
        with torch.no_grad():
            t = median_times({k: synced(f, device) for k, f in fns.items()}, args.repeats)
        unit = S * t["det"]
        plans = "; ".join(sorted({p.label() for p in auto.plans.values()}))
        first = first_layer_ratio(net, patch, args.repeats)
        ratios = "  ".join(f"{k} {v / unit:.3f}" for k, v in t.items() if k != "det")
        first_txt = "—" if first is None else f"{first:.3f}"
        print(
            f"RATIO {label:<12} {scope:<16} S={S}: {ratios}  | first-layer sparse/dense {first_txt}"
            f"  | predicted shared {split.predicted_cost(S):.3f}, + split conv {split_conv.predicted_cost(S):.3f}"
            f"  | det {t['det'] * 1e3:.0f} ms, auto chose {plans}"
            f"  ({time.perf_counter() - start:.0f} s, load average {load_average()})",
            flush=True,
        )
        row = {"network": label, "selection": scope}
        row.update({name: f"{t[key] / unit:.3f}" for key, name in COLUMNS.items()})
        row.update(
            {
                "first layer sparse / dense": first_txt,
                "predicted shared": f"{split.predicted_cost(S):.3f}",
                "predicted shared + split conv": f"{split_conv.predicted_cost(S):.3f}",
                "auto chose": plans,
            }
        )
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--size3d", type=int, default=48, help="3D volume edge (voxels)")
    parser.add_argument("--roi3d", type=int, default=32, help="3D sliding-window patch edge (voxels)")
    parser.add_argument("--quick", action="store_true", help="narrower 2D networks (a short run under load)")
    parser.add_argument("--only", default="", help="comma-separated network labels to run (default: all)")
    parser.add_argument(
        "--scopes",
        default="global,decoder",
        help="comma-separated selections: global, decoder, decoder_skipfree, bottleneck",
    )
    parser.add_argument("--out", type=Path, default=None, help="write mc_cost.csv + provenance.json here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    print(
        f"# monai_bayes MC benchmark ({platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{args.threads} threads, device {device}; 2D batch {args.batch} x {args.size}^2; 3D {args.size3d}^3 "
        f"volume, {args.roi3d}^3 windows; ratios = time / ({S} x deterministic forward), medians of {args.repeats};"
        f" load average at start {load_average()})"
    )
    rows = []
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    for label, net, dims in networks(args.quick):
        if not only or label in only:
            rows.extend(bench(label, net, dims, args, device))
            if args.out is not None:  # after every network, so a long run keeps what it measured
                write_results(args.out, rows, args)


def load_average() -> str:
    """The machine's 1 / 5 / 15-minute load averages (other processes compete for the cores)."""
    return ", ".join(f"{v:.1f}" for v in os.getloadavg())


def write_results(folder: Path, rows: list[dict[str, str]], args: argparse.Namespace) -> None:
    """``mc_cost.csv`` (one row per network and selection) and ``provenance.json`` (results contract)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "mc_cost.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    provenance = {
        "command": "python " + " ".join(sys.argv),
        "commit": commit,
        "seed": 0,
        "machine": f"2-core x86_64 dev VM, torch {torch.__version__}" if args.device == "cpu" else args.device,
        "date": datetime.date.today().isoformat(),
        "notes": (
            f"S={S}; 2D batch {args.batch} x {args.size}^2{' (--quick: narrow 2D nets)' if args.quick else ''};"
            f" 3D {args.size3d}^3 volume, {args.roi3d}^3 sliding windows; {args.threads} threads; medians of"
            f" {args.repeats} interleaved rounds; ratios = time / (S x deterministic forward). Shared machine:"
            f" read ratios, not absolute times. Load average (1, 5, 15 min) when written: {load_average()}."
        ),
    }
    (folder / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")


if __name__ == "__main__":
    main()
