"""Exported ONNX partial-Bayes UNet, S samples batched in one onnxruntime call, vs PyTorch eager (issue 19).

``python benchmarks/bench_export.py --num_samples 8 --repeats 7`` -- the LIDC bundle's 2D UNet (16-256
channels) with 1 % of its conv weights Bayesian (chosen at random: timing depends only on the count), one
128² patch (batch 1, the edge case), ``S`` samples per call. Variants, timed interleaved, medians:

* ``eager noise-input``: the same :class:`~monai_bayes.export.NoiseInputNetwork` the artefact was exported
  from (grouped-convolution batched pass), in PyTorch;
* ``eager MonteCarloInferer``: the library's production path (auto plan: chunking / shared prefix / sparse
  strategy chosen by a timed probe);
* ``onnxruntime``: the exported ``.onnx`` artefact on CPUExecutionProvider;
* ``torch.export``: the ``.pt2`` program loaded back.

Prints milliseconds per call, the ratio onnxruntime / eager (target: ≤ 1.0) and the max |Δ| between the
artefact's and PyTorch's logits for the same noise (target ≤ 1e-4).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from monai.networks.nets import UNet

from monai_bayes.export import NoiseInputNetwork, export_onnx, export_program, load_program, run_onnx
from monai_bayes.inferers import MonteCarloInferer
from monai_bayes.networks import to_partial_bayes
from monai_bayes.selection import select_topk


def _network(r_bayes: float) -> torch.nn.Module:
    torch.manual_seed(0)
    net = UNet(2, 1, 2, (16, 32, 64, 128, 256), (2, 2, 2, 2), num_res_units=2, norm="batch")
    scores = {n: torch.rand_like(p) for n, p in net.named_parameters() if p.dim() > 1}
    return to_partial_bayes(net, select_topk(scores, r_bayes)).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_samples", type=int, default=8)
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--r_bayes", type=float, default=0.01)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import onnxruntime as ort

    net = _network(args.r_bayes)
    wrapper = NoiseInputNetwork(net, args.num_samples)
    x = torch.randn(1, 1, args.patch, args.patch)
    noise = wrapper.draw_noise(torch.Generator().manual_seed(1))
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        onnx_path = export_onnx(wrapper, x, Path(tmp) / "model.onnx")
        t1 = time.perf_counter()
        program = load_program(export_program(wrapper, x, Path(tmp) / "model.pt2"))
        t2 = time.perf_counter()
        size = onnx_path.stat().st_size / 1e6
        print(f"export: onnx {t1 - t0:.1f} s, torch.export {t2 - t1:.1f} s; onnx file {size:.2f} MB")
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        feeds = dict(zip(names, [t.numpy() for t in (x, *noise)]))
        inferer = MonteCarloInferer(num_samples=args.num_samples, activation=None, output="samples", seed=0)
        with torch.no_grad():
            reference = wrapper(x, *noise)
            diff_onnx = (torch.from_numpy(session.run(None, feeds)[0]) - reference).abs().max().item()
            diff_pt2 = (program(x, *noise) - reference).abs().max().item()
            assert torch.equal(run_onnx(onnx_path, x, noise), torch.from_numpy(session.run(None, feeds)[0]))
            variants = {
                "eager noise-input": lambda: wrapper(x, *noise),
                "eager MonteCarloInferer": lambda: inferer(x, net),
                "onnxruntime": lambda: session.run(None, feeds),
                "torch.export": lambda: program(x, *noise),
            }
            for fn in variants.values():  # warm-up (and the inferer's plan probe)
                fn()
            times: dict[str, list[float]] = {k: [] for k in variants}
            for _ in range(args.repeats):
                for name, fn in variants.items():
                    start = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    print(f"S = {args.num_samples}, {args.patch}² patch, batch 1, {args.threads} thread(s), r_bayes = {args.r_bayes:g}")
    for name, ms in med.items():
        print(f"  {name:<24} {ms:8.1f} ms")
    ratio = med["onnxruntime"] / med["eager noise-input"]
    print(f"ratio onnxruntime / eager noise-input:       {ratio:.3f}  (target <= 1.0)")
    print(f"ratio onnxruntime / eager MonteCarloInferer: {med['onnxruntime'] / med['eager MonteCarloInferer']:.3f}")
    print(f"ratio torch.export / eager noise-input:      {med['torch.export'] / med['eager noise-input']:.3f}")
    print(f"max |logits onnx - eager| = {diff_onnx:.2e}, |torch.export - eager| = {diff_pt2:.2e}  (target <= 1e-4)")


if __name__ == "__main__":
    main()
