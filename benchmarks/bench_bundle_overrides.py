"""Seconds until a bad pipeline override is reported (issue 13: within 10 s), and until a good one reaches step 1.

Runs the acceptance commands as subprocesses, interleaved, and prints the median wall time of each::

    python benchmarks/bench_bundle_overrides.py --repeats 3 [--out results/bench_overrides]

* ``--weight_decai 0.5``, ``--num_samples 0``, ``--eval_samples 0``: ``python -m monai.bundle run --config_file
  bundles/lidc_sparse_bayes/configs/pipeline.json`` must exit with the validation error before any step;
* ``--weight_decay 0.5``: seconds until the log line of the first step (then the process is stopped);
* ``python -c "import monai_bayes.bundle"``: the import cost contained in all of the above;
* the validation alone, in process (``validate_pipeline_overrides``, per bad override).

Most of the time is Python importing torch and MONAI; the validation itself reads a few JSON files.
With ``--out`` the medians are also written as ``timings.csv`` (+ ``provenance.json``, the results contract).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from monai_bayes.evaluation.results import write_benchmark_results

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "lidc_sparse_bayes"


def _command(bundle: Path, runs: Path, *extra: str) -> list[str]:
    config = str(bundle / "configs" / "pipeline.json")
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", config, "--bundle_root", str(bundle)]
    return [*command, "--runs_dir", str(runs), *extra]


def _time_failure(command: list[str]) -> float:
    start = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    elapsed = time.monotonic() - start
    if done.returncode == 0 or "invalid settings, nothing was run" not in done.stderr:
        raise RuntimeError(f"expected a validation error from {command[-2:]}, got:\n{done.stderr[-2000:]}")
    return elapsed


def _time_first_step(command: list[str]) -> float:
    start = time.monotonic()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "] train_deterministic" in line:
                return time.monotonic() - start
        raise RuntimeError("the pipeline ended without reaching train_deterministic")
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def _time_validation(bundle: Path) -> float:
    """The validation alone, in this process (monai_bayes already imported)."""
    from monai_bayes.bundle import validate_pipeline_overrides

    start = time.monotonic()
    for override in ({"weight_decai": 0.5}, {"num_samples": 0}, {"eval_samples": 0}):
        try:
            validate_pipeline_overrides(bundle, override)
        except ValueError:
            pass
        else:
            raise RuntimeError(f"{override} was accepted")
    return (time.monotonic() - start) / 3


def _time_import() -> float:
    start = time.monotonic()
    subprocess.run([sys.executable, "-c", "import monai_bayes.bundle"], check=True, timeout=600)
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="write timings.csv + provenance.json here")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "lidc_sparse_bayes"
        shutil.copytree(BUNDLE, bundle, ignore=shutil.ignore_patterns("models", "runs", "cache", "eval"))
        runs = Path(tmp) / "runs"
        cases = {
            "--weight_decai 0.5 (error)": lambda: _time_failure(_command(bundle, runs, "--weight_decai", "0.5")),
            "--num_samples 0 (error)": lambda: _time_failure(_command(bundle, runs, "--num_samples", "0")),
            "--eval_samples 0 (error)": lambda: _time_failure(_command(bundle, runs, "--eval_samples", "0")),
            "--weight_decay 0.5 (first step)": lambda: _time_first_step(
                _command(bundle, runs, "--weight_decay", "0.5", "--num_cases", "4")
            ),
            "import monai_bayes.bundle": _time_import,
            "validation alone (in process)": lambda: _time_validation(bundle),
        }
        times: dict[str, list[float]] = {k: [] for k in cases}
        for _ in range(args.repeats):
            for name, run in cases.items():
                times[name].append(run())
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"median of {args.repeats} (load average {load:.1f}, {os.cpu_count()} CPUs):")
    for name, values in times.items():
        print(f"  {name:34s} {statistics.median(values):8.3f} s")
    if args.out is not None:
        labels = {
            "--weight_decai 0.5 (error)": "`--weight_decai 0.5` → validation error",
            "--num_samples 0 (error)": "`--num_samples 0` → validation error",
            "--eval_samples 0 (error)": "`--eval_samples 0` → validation error",
            "--weight_decay 0.5 (first step)": "`--weight_decay 0.5` → log line of the first step",
            "import monai_bayes.bundle": '`python -c "import monai_bayes.bundle"` alone',
            "validation alone (in process)": "the validation itself, in process, per bad override",
        }
        digits = {name: 3 if "in process" in name else 1 for name in times}
        rows = [[labels[name], f"{statistics.median(v):.{digits[name]}f} s"] for name, v in times.items()]
        notes = (
            f"python -m monai.bundle run on a copy of bundles/lidc_sparse_bayes (pipeline.json), subprocesses "
            f"interleaved, median of {args.repeats}; the first-step case adds --num_cases 4 and is stopped at the log "
            "line of train_deterministic. Every subprocess pays the torch + MONAI import: on a loaded machine read "
            "the rows against the bare import."
        )
        write_benchmark_results(args.out, {"timings.csv": (["command", "wall time"], rows)}, notes, seed=None)


if __name__ == "__main__":
    main()
