"""Where the ONNX export time of the stochastic bundle UNet goes, per exporter setting (issue 19).

``python benchmarks/bench_export_time.py [--out results/export_time]`` -- the UNet of ``bench_export.py``
(16-256 channels, 1 % of conv weights Bayesian, ``S = 8``, one 128² patch) wrapped as a
:class:`~monai_bayes.export.NoiseInputNetwork`, exported with:

* ``torch.export.export`` alone (the first stage of the dynamo ONNX exporter), then ``run_decompositions``;
* ``torch.onnx.export(dynamo=True)`` with the onnxscript optimiser (``optimize=True``, the default) and
  without it (``optimize=False``);
* the legacy TorchScript exporter (``dynamo=False``) with and without constant folding.

For every ONNX file: export seconds, file size, max |Δ logits| against PyTorch for the same noise, and the
median onnxruntime call (one thread; calls of the variants interleaved). With ``--out`` the table is written
under the results contract (``table.csv`` + ``provenance.json``).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import torch
from bench_export import _network

from monai_bayes.export import NoiseInputNetwork

COLUMNS = ["exporter", "export s", "file MB", "max abs Δ vs eager", "onnxruntime ms per call", "× eager"]


def _onnx(wrapper: NoiseInputNetwork, args: tuple, path: Path, dynamo: bool, **options: object) -> float:
    start = time.perf_counter()
    kwargs = dict(input_names=wrapper.input_names(), output_names=["logits"], opset_version=18)
    if dynamo:
        program = torch.onnx.export(wrapper, args, dynamo=True, external_data=False, **kwargs, **options)
        assert program is not None
        program.save(str(path))
    else:
        torch.onnx.export(wrapper, args, str(path), dynamo=False, **kwargs, **options)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_samples", type=int, default=8)
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, help="write table.csv + provenance.json here")
    cli = parser.parse_args()
    torch.set_num_threads(1)
    import onnxruntime as ort

    wrapper = NoiseInputNetwork(_network(0.01), cli.num_samples)
    x = torch.randn(1, 1, cli.patch, cli.patch)
    noise = wrapper.draw_noise(torch.Generator().manual_seed(1))
    args = (x, *noise)
    with torch.no_grad():
        reference = wrapper(*args)
    start = time.perf_counter()
    program = torch.export.export(wrapper, args)
    trace_s = time.perf_counter() - start
    start = time.perf_counter()
    program.run_decompositions()
    decomp_s = time.perf_counter() - start
    print(f"torch.export.export {trace_s:.1f} s; run_decompositions {decomp_s:.1f} s")
    variants = {
        "dynamo=True (default, optimize=True)": dict(dynamo=True, optimize=True),
        "dynamo=True, optimize=False": dict(dynamo=True, optimize=False),
        "legacy dynamo=False, do_constant_folding=False": dict(dynamo=False, do_constant_folding=False),
        "legacy dynamo=False, do_constant_folding=True": dict(dynamo=False, do_constant_folding=True),
    }
    rows, sessions = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for k, (name, options) in enumerate(variants.items()):
            path = Path(tmp) / f"m{k}.onnx"
            seconds = _onnx(wrapper, args, path, **options)  # type: ignore[arg-type]
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            feeds = dict(zip([i.name for i in session.get_inputs()], [t.numpy() for t in args]))
            diff = (torch.from_numpy(session.run(None, feeds)[0]) - reference).abs().max().item()
            rows[name] = [seconds, path.stat().st_size / 1e6, diff]
            sessions[name] = (session, feeds)
            print(f"{name}: export {seconds:.1f} s, {rows[name][1]:.1f} MB, max |Δ| {diff:.1e}", flush=True)
        times: dict[str, list[float]] = {name: [] for name in [*sessions, "eager"]}
        for _ in range(cli.repeats):
            for name, (session, feeds) in sessions.items():
                start = time.perf_counter()
                session.run(None, feeds)
                times[name].append(time.perf_counter() - start)
            start = time.perf_counter()
            with torch.no_grad():
                wrapper(*args)
            times["eager"].append(time.perf_counter() - start)
    eager = statistics.median(times["eager"])
    table = [["torch.export.export (trace only)", f"{trace_s:.1f}", "–", "–", "–", "–"]]
    table.append(["run_decompositions (after the trace)", f"{decomp_s:.1f}", "–", "–", "–", "–"])
    for name, (seconds, size, diff) in rows.items():
        ms = statistics.median(times[name])
        table.append([name, f"{seconds:.1f}", f"{size:.1f}", f"{diff:.1e}", f"{ms * 1e3:.0f}", f"{ms / eager:.2f}"])
    table.append(["eager PyTorch (noise-input wrapper)", "–", "–", "–", f"{eager * 1e3:.0f}", "1.00"])
    for row in table:
        print(" | ".join(row))
    if cli.out is not None:
        cli.out.mkdir(parents=True, exist_ok=True)
        with open(cli.out / "table.csv", "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([COLUMNS, *table])
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
        provenance = {
            "command": "OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nice -n 10 python " + " ".join(sys.argv),
            "commit": commit,
            "seed": 0,
            "machine": "2-core x86_64 dev VM, torch 2.13.0+cpu",
            "date": date.today().isoformat(),
            "notes": "bench_export.py's UNet, 1 % Bayesian, S=8, one 128x128 patch, batch 1, 1 thread; the VM "
            "was shared with other sessions (absolute times loose). onnxruntime medians of "
            f"{cli.repeats} interleaved calls.",
        }
        (cli.out / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
