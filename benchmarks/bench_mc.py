"""Monte-Carlo inference cost vs a plain loop over S forwards, measured side by side (issue 22).

For MONAI ``UNet`` and ``BasicUNet`` in 2D (whole images) and ``UNet`` in 3D (sliding windows), each with
1 % partial-Bayes weights chosen by gradient saliency over the whole network (``global``) or within the
decoder (``decoder``, :func:`monai_bayes.selection.scope_modules`), it times, interleaved round by round:

* ``det`` -- one deterministic forward (the unit: ratios are time / (S × det));
* ``loop`` -- a plain loop over S single-sample forwards (what a user would write by hand);
* ``stacked S`` -- all S samples in one stacked batch, no shared prefix (the old default);
* ``shared S`` -- all S samples in one pass with the shared prefix (layers before the first stochastic
  layer run once);
* ``auto`` -- the default ``MonteCarloInferer()`` (chunk size and shared prefix chosen by its probe; the
  probe runs during the warm-up and its choice is printed).

It also prints the cost predicted from the MAC split (:func:`monai_bayes.layers.mc_cost_split`). Medians
of ``--repeats`` rounds; the machine may be shared, so read the ratios, not the absolute times.

Usage::

    python benchmarks/bench_mc.py [--repeats 5] [--threads 2] [--device cpu] [--quick]
"""

from __future__ import annotations

import argparse
import platform
from collections.abc import Callable

import torch
from bench_core import disc_batch, median_times
from monai.inferers import SimpleInferer, SlidingWindowInferer
from monai.networks.nets import BasicUNet, UNet

from monai_bayes import to_partial_bayes
from monai_bayes.inferers import MonteCarloInferer
from monai_bayes.layers import draw_noise, fixed_noise, mc_cost_split, select_noise
from monai_bayes.selection import restrict_scores, saliency_scores, scope_modules, select_topk

S = 8


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
    """1 % partial Bayes by gradient saliency on one batch, over the whole net or the decoder only."""
    scores = saliency_scores(
        det, [{"image": x, "label": y}], lambda p, t: torch.nn.functional.cross_entropy(p, t[:, 0]), progress=False
    )
    include = None
    if scope == "decoder":
        include = scope_modules(det, x, "decoder")
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


def bench(label: str, det: torch.nn.Module, dims: int, args: argparse.Namespace, device: torch.device) -> None:
    if dims == 2:
        x, y = disc_batch(args.batch, args.size, seed=0)
        inner: Callable[..., torch.Tensor] = SimpleInferer()
    else:
        x, y = blob_batch(1, args.size3d, seed=0)
        inner = SlidingWindowInferer((args.roi3d,) * 3, sw_batch_size=2, overlap=0.25)
    x, y, det = x.to(device), y.to(device), det.to(device).eval()
    for scope in ("global", "decoder"):
        net = partial_net(det, x, y, scope)
        split = mc_cost_split(net, x if dims == 2 else x[..., : args.roi3d, : args.roi3d, : args.roi3d])
        auto = MonteCarloInferer(S, inferer=inner, seed=0)
        fns: dict[str, Callable[[], object]] = {
            "det": lambda: inner(x, det),
            "loop": plain_loop(net, x, inner),
            "stacked S": lambda n=net: MonteCarloInferer(S, inner, chunk_size=S, shared_prefix=False, seed=0)(x, n),
            "shared S": lambda n=net: MonteCarloInferer(S, inner, chunk_size=S, shared_prefix=True, seed=0)(x, n),
            "auto": lambda n=net, a=auto: a(x, n),
        }
        with torch.no_grad():
            t = median_times(fns, args.repeats)
        unit = S * t["det"]
        plans = ", ".join(f"chunk {p.chunk_size}{' shared' if p.shared_prefix else ''}" for p in auto.plans.values())
        ratios = "  ".join(f"{k} {v / unit:.3f}" for k, v in t.items() if k != "det")
        print(
            f"RATIO {label:<12} {scope:<7} S={S}: {ratios}  | predicted shared {split.predicted_cost(S):.3f}"
            f"  | det {t['det'] * 1e3:.0f} ms, auto chose {plans}"
        )


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
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    print(
        f"# monai_bayes MC benchmark ({platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{args.threads} threads, device {device}; 2D batch {args.batch} x {args.size}^2; 3D {args.size3d}^3 "
        f"volume, {args.roi3d}^3 windows; ratios = time / ({S} x deterministic forward), medians of {args.repeats})"
    )
    for label, net, dims in networks(args.quick):
        bench(label, net, dims, args, device)


if __name__ == "__main__":
    main()
