"""The deployer's table (issue 19), for what exists so far: bytes on disk and latency per method, side by side.

``python benchmarks/bench_deployer.py --repeats 3`` -- the LIDC bundle's 2D UNet (16-256 channels), one 128²
patch, batch 1 (the edge case), one thread, medians of interleaved runs. For each deployable variant: the
bytes of what has to be shipped (``torch.save`` files as the library writes them), the latency of one
Monte-Carlo call through :class:`~monai_bayes.inferers.MonteCarloInferer` (S samples) and the throughput in
patches per second. Weights are random: size and speed do not depend on training (quality columns need trained
models and are not part of this table yet). ``--onnx`` adds the exported ONNX partial-Bayes artefact (export
takes minutes on this VM).
"""

from __future__ import annotations

import argparse
import copy
import csv
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from monai.networks.nets import UNet

from monai_bayes.inferers import MonteCarloInferer
from monai_bayes.networks import (
    DeepEnsemble,
    load_samples,
    sample_ensemble,
    save_checkpoint,
    save_samples,
    to_full_bayes,
    to_mc_dropout,
    to_partial_bayes,
)
from monai_bayes.selection import select_topk
from monai_bayes.utils import atomic_path


def _unet(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return UNet(2, 1, 2, (16, 32, 64, 128, 256), (2, 2, 2, 2), num_res_units=2, norm="batch").eval()


def _partial(r_bayes: float) -> torch.nn.Module:
    net = _unet(0)
    scores = {n: torch.rand_like(p) for n, p in net.named_parameters() if p.dim() > 1}
    return to_partial_bayes(net, select_topk(scores, r_bayes)).eval()


def _variants(tmp: Path, num_samples: int) -> dict[str, tuple[int, int, torch.nn.Module]]:
    """name -> (bytes on disk, S, network)."""
    out: dict[str, tuple[int, int, torch.nn.Module]] = {}

    def ckpt(net: torch.nn.Module) -> int:
        return save_checkpoint(net, tmp / "c.pt").stat().st_size

    det = _unet(0)
    out["deterministic"] = (ckpt(det), 1, det)
    mcd = to_mc_dropout(copy.deepcopy(det), 0.1).eval()
    out["MC dropout p=0.1"] = (ckpt(mcd), num_samples, mcd)
    part = _partial(0.01)
    out["partial Bayes 1 %"] = (ckpt(part), num_samples, part)
    full = to_full_bayes(copy.deepcopy(det)).eval()
    out["full mean-field Bayes"] = (ckpt(full), num_samples, full)
    members = [_unet(m) for m in range(5)]
    out["ensemble-5"] = (sum(ckpt(m) for m in members), 5, DeepEnsemble(members).eval())
    states = [
        {k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v for k, v in det.state_dict().items()}
        for _ in range(num_samples)
    ]
    dense = save_samples(states, tmp / "d.pt")
    out[f"SG-MCMC {num_samples} samples, dense fp32"] = (
        dense.stat().st_size,
        num_samples,
        sample_ensemble(_unet(0), load_samples(dense)).eval(),
    )
    shared = save_samples(states, tmp / "s.pt", layout="shared_sparse", sparsity=0.9, values="int8")
    out[f"SG-MCMC {num_samples} samples, shared-sparse 90 % int8"] = (
        shared.stat().st_size,
        num_samples,
        sample_ensemble(_unet(0), load_samples(shared)).eval(),
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_samples", type=int, default=8)
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--onnx", action="store_true", help="also export and time the ONNX partial-Bayes artefact")
    parser.add_argument("--csv", type=Path, default=None, help="also write the table as CSV (results contract)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x = torch.randn(1, 1, args.patch, args.patch)
    with tempfile.TemporaryDirectory() as tmp_dir, torch.no_grad():
        tmp = Path(tmp_dir)
        variants = _variants(tmp, args.num_samples)
        calls: dict[str, Callable[[], object]] = {}
        for name, (_, s, net) in variants.items():
            inferer = MonteCarloInferer(num_samples=s, activation="softmax", output="samples", seed=0)
            calls[name] = lambda inferer=inferer, net=net: inferer(x, net)
        if args.onnx:
            import onnxruntime as ort

            from monai_bayes.export import NoiseInputNetwork, export_onnx

            wrapper = NoiseInputNetwork(variants["partial Bayes 1 %"][2], args.num_samples)
            path = export_onnx(wrapper, x, tmp / "m.onnx")
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            feeds = dict(zip([i.name for i in session.get_inputs()], [t.numpy() for t in (x, *wrapper.draw_noise())]))
            variants["partial Bayes 1 %, ONNX (onnxruntime)"] = (path.stat().st_size, args.num_samples, wrapper)
            calls["partial Bayes 1 %, ONNX (onnxruntime)"] = lambda: session.run(None, feeds)
        for fn in calls.values():
            fn()  # warm-up and plan probes
        times: dict[str, list[float]] = {k: [] for k in calls}
        for _ in range(args.repeats):
            for name, fn in calls.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    det_bytes = variants["deterministic"][0]
    det_ms = statistics.median(times["deterministic"]) * 1e3
    print(f"{args.patch}² patch, batch 1, {args.threads} thread(s), medians of {args.repeats}; random weights")
    header = ["method", "S", "MB on disk", "× det. bytes", "ms per patch", "× det. latency", "patches / s"]
    rows = []
    for name, (nbytes, s, _) in variants.items():
        ms = statistics.median(times[name]) * 1e3
        sizes = [f"{nbytes / 1e6:.2f}", f"{nbytes / det_bytes:.2f}"]
        rows.append([name, str(s), *sizes, f"{ms:.0f}", f"{ms / det_ms:.1f}", f"{1e3 / ms:.2f}"])
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if args.csv is not None:
        with atomic_path(args.csv) as tmp_csv, open(tmp_csv, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows)


if __name__ == "__main__":
    main()
