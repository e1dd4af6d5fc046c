"""The deployer's table (issue 19): bytes, peak memory, 2D / 3D latency, throughput and Dice / GED / ECE per method.

One run, one machine, one thread::

    python benchmarks/bench_deployer.py --output results/deployer

1. **Train** every method briefly with the LIDC bundle on the same small data (``SMALL``: 8 scans of the real
   LIDC reader annotations over synthetic CT, 64² patches, a 4-level UNet of 8–64 channels; the deterministic
   model is trained once and shared) -- ``run_pipeline`` per method, plus the nested bundle's ``train_nested``
   step for BN3.
2. **Ship** each variant: the files a deployer copies (``<work>/<variant>/2d``), and the same method
   conversion of a random-weight **3D** UNet of the same channels (``<work>/<variant>/3d``; speed and
   memory do not depend on training).
3. **Quality** (this process): each 2D artefact loaded from its files, S Monte-Carlo samples of every
   validation patch, Dice of the thresholded predictive mean vs the raters' majority (MONAI
   ``DiceMetric``, empty majority skipped), GED² vs all raters (:func:`~monai_bayes.metrics.compute_ged`),
   ECE of the foreground probability vs the majority (MONAI ``CalibrationErrorMetric``, 15 bins).
4. **Speed and memory**: one fresh subprocess per variant and task (``--child``) loads the artefact from
   disk and runs it: one 128² patch (batch 1, the edge case; median of ``--repeats``), a batch of 8 patches
   (throughput), or one 3D volume through MONAI's ``SlidingWindowInferer`` (batch 1, ``sw_batch_size`` 1)
   inside :class:`~monai_bayes.inferers.MonteCarloInferer`. Peak memory: the child resets the kernel's
   peak-RSS counter after its imports (``/proc/self/clear_refs``) and reports the peak resident set size
   (``VmHWM``) while loading and running minus the RSS at the reset -- torch's allocations are outside
   Python's tracemalloc, and ``ru_maxrss`` cannot be reset (its peak is the import of torch + MONAI).

A variant is one :class:`Variant` entry of :data:`VARIANTS` (``save`` writes its files, ``load`` rebuilds a
predictor from them): a distilled student (BDK, EnD²) is one more entry whose ``save`` trains or copies the
student and whose ``load`` returns its ``(B, S, C, *spatial)`` probabilities.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser
from monai.inferers import SlidingWindowInferer
from monai.metrics import CalibrationErrorMetric, DiceMetric

from monai_bayes.bundle import NestedRunLayout, RunLayout, build_network, nested_network, run_pipeline
from monai_bayes.bundle.nested import nested_pipeline_steps
from monai_bayes.bundle.runner import run_steps
from monai_bayes.inferers import MonteCarloInferer
from monai_bayes.layers import nested_width
from monai_bayes.metrics import compute_ged
from monai_bayes.networks import (
    DeepEnsemble,
    load_samples,
    save_checkpoint,
    save_samples,
    to_full_bayes,
    to_partial_bayes,
)
from monai_bayes.selection import select_topk

ROOT = Path(__file__).resolve().parents[1]
LIDC = ROOT / "bundles" / "lidc_sparse_bayes"
NESTED = ROOT / "bundles" / "lidc_nested_unet"

#: the small bundle run every variant is trained with (bundle settings)
SMALL: dict[str, Any] = {
    "dataset_dir": "",
    "num_cases": 8,
    "patch_size": 64,
    "network_def#channels": [8, 16, 32, 64],
    "network_def#strides": [2, 2, 2],
    "network_def#num_res_units": 1,
    "deterministic_epochs": 20,
    "bayes_epochs": 6,
    "batch_size": 8,
    "val_interval": 100,
    "device": "cpu",
}
NESTED_GROUPS, NESTED_WIDTH = 8, 4
VOLUME, ROI = (32, 96, 96), (32, 64, 64)
Predictor = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Context:
    """Where the trained runs and the shipped files live, and the shared settings.

    Parameters
    ----------
    work : Path
        Work folder (``runs/`` of the bundle runs, one folder per variant).
    num_samples : int
        ``S`` of every stochastic variant (an ensemble has its member count).
    """

    work: Path
    num_samples: int = 8

    @property
    def runs(self) -> Path:
        return self.work / "runs"

    def folder(self, variant: str, dims: int) -> Path:
        """``<work>/<variant>/<dims>d`` (created)."""
        path = self.work / variant.replace(" ", "_").replace("%", "pct").replace("/", "_") / f"{dims}d"
        path.mkdir(parents=True, exist_ok=True)
        return path


def network_def(dims: int) -> torch.nn.Module:
    """The bundle UNet with the ``SMALL`` channels, in ``dims`` spatial dimensions (random weights)."""
    from monai.networks.nets import UNet

    return UNet(dims, 1, 2, SMALL["network_def#channels"], SMALL["network_def#strides"], num_res_units=1, norm="batch")


def _mc(net: torch.nn.Module, samples: int, dims: int) -> Predictor:
    inner = SlidingWindowInferer(ROI, sw_batch_size=1, overlap=0.25) if dims == 3 else None
    inferer = MonteCarloInferer(num_samples=samples, inferer=inner, activation="softmax", output="samples", seed=0)
    net = net.eval()
    return lambda x: inferer(x, net)


def _random_3d(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return network_def(3)


# ---- save: the files a deployer ships; load: a predictor rebuilt from them -------------------------------


def _save_run(method: str) -> Callable[[Context, int], list[Path]]:
    def save(ctx: Context, dims: int) -> list[Path]:
        out = ctx.folder(method, dims)
        if dims == 2:
            layout = RunLayout(ctx.runs, method)
            sources = layout.member_checkpoints if method == "ensemble" else [layout.model_checkpoint]
            return [Path(shutil.copy(p, out / f"m{i}.pt")) for i, p in enumerate(sources)]
        if method == "ensemble":
            return [save_checkpoint(_random_3d(m), out / f"m{m}.pt") for m in range(5)]
        net = _random_3d()
        if method == "sparse_bayes":
            scores = {n: torch.rand_like(p) for n, p in net.named_parameters() if p.dim() > 1}
            net = to_partial_bayes(net, select_topk(scores, 0.01))
        elif method == "full_bayes":
            net = to_full_bayes(net)
        elif method == "sgmcmc":
            states = [
                {k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v for k, v in net.state_dict().items()}
                for _ in range(ctx.num_samples)
            ]
            return [save_samples(states, out / "m0.pt")]
        return [save_checkpoint(net, out / "m0.pt")]

    return save


def _load_run(method: str, samples: int | None = None) -> Callable[[Context, int, list[Path]], Predictor]:
    def load(ctx: Context, dims: int, files: list[Path]) -> Predictor:
        if method == "ensemble":
            net = build_network(network_def(dims), method, member_checkpoints=files)
        else:
            net = build_network(network_def(dims), method, files[0])
        s = samples if samples is not None else (len(net.members) if isinstance(net, DeepEnsemble) else ctx.num_samples)
        return _mc(net, s, dims)

    return load


def _save_shared_sparse(ctx: Context, dims: int) -> list[Path]:
    dense = _save_run("sgmcmc")(ctx, dims)[0]
    out = ctx.folder("sgmcmc shared sparse", dims) / "m0.pt"
    return [save_samples(load_samples(dense), out, layout="shared_sparse", sparsity=0.9, values="int8")]


def _save_nested(ctx: Context, dims: int) -> list[Path]:
    out = ctx.folder("bn3", dims) / "m0.pt"
    if dims == 2:
        return [Path(shutil.copy(NestedRunLayout(ctx.runs, NESTED_GROUPS).model_checkpoint, out))]
    return [save_checkpoint(nested_network(_random_3d(), NESTED_GROUPS), out)]


def _load_nested(ctx: Context, dims: int, files: list[Path]) -> Predictor:
    net = nested_network(network_def(dims), NESTED_GROUPS, checkpoint=files[0]).eval()
    predict = _mc(net, ctx.num_samples, dims)

    def call(x: torch.Tensor) -> torch.Tensor:
        with nested_width(net, NESTED_WIDTH):
            return predict(x)

    return call


def _save_onnx(ctx: Context, dims: int) -> list[Path]:
    """The trained partial-Bayes network exported with noise inputs, for the 128² patch and the eval batch."""
    if dims == 3:
        return []
    from monai_bayes.export import NoiseInputNetwork, export_onnx

    net = build_network(network_def(2), "sparse_bayes", RunLayout(ctx.runs, "sparse_bayes").model_checkpoint)
    wrapper = NoiseInputNetwork(net, ctx.num_samples).eval()
    out = ctx.folder("onnx", 2)
    eval_patch = (1, 1, SMALL["patch_size"], SMALL["patch_size"])
    shapes = {"patch": (1, 1, 128, 128), "batch8": (8, 1, 128, 128), "eval": eval_patch}
    return [export_onnx(wrapper, torch.zeros(*shape), out / f"{key}.onnx") for key, shape in shapes.items()]


def _load_onnx(ctx: Context, dims: int, files: list[Path]) -> Predictor:
    """The ONNX sessions alone (no torch network): noise inputs drawn from the graph's input shapes."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    sessions = {}
    for f in files:
        session = ort.InferenceSession(str(f), options, providers=["CPUExecutionProvider"])
        sessions[tuple(session.get_inputs()[0].shape)] = session
    generator = torch.Generator().manual_seed(0)

    def call(x: torch.Tensor) -> torch.Tensor:
        session = sessions[tuple(x.shape)]
        inputs = session.get_inputs()
        feeds = {inputs[0].name: x.numpy()}
        feeds |= {i.name: torch.randn(*i.shape, generator=generator).numpy() for i in inputs[1:]}
        logits = torch.from_numpy(session.run(None, feeds)[0])  # (S, B, C, *spatial)
        return logits.softmax(2).transpose(0, 1)

    return call


STUDENT_EPOCHS = 30


def train_batches(ctx: Context) -> list[dict[str, torch.Tensor]]:
    """The bundle's fold-0 training patches as ``{"image": (B, 1, H, W)}`` batches (labels unused)."""
    bundle = ctx.work / "bundles" / LIDC.name
    cfg = ConfigParser()
    cfg.read_config([str(bundle / "configs" / "common.json")])
    cfg.update({"bundle_root": str(bundle), **SMALL, "runs_dir": str(ctx.runs), "cache_dir": str(ctx.work / "cache")})
    return [{"image": b["image"].as_tensor()} for b in cfg.get_parsed_content("train_data#dataloader")]


def _save_student(kind: str) -> Callable[[Context, int], list[Path]]:
    """A one-pass student of the trained 1 % partial-Bayes teacher, of the teacher's width (2D: distilled on
    the training patches, S = 8 teacher samples each, foreground weight 10; 3D: random weights)."""

    def save(ctx: Context, dims: int) -> list[Path]:
        from monai_bayes.distill import build_student, save_student, train_student

        out = ctx.folder(f"{kind} student", dims) / "student.pt"
        student = build_student(
            kind, 2, spatial_dims=dims, channels=SMALL["network_def#channels"], strides=SMALL["network_def#strides"],
            num_res_units=1,
        )  # fmt: skip
        if dims == 2 and not out.is_file():
            checkpoint = RunLayout(ctx.runs, "sparse_bayes").model_checkpoint
            teacher = build_network(network_def(2), "sparse_bayes", checkpoint)
            train_student(
                student, teacher.eval(), train_batches(ctx), num_samples=ctx.num_samples, max_epochs=STUDENT_EPOCHS,
                batch_size=SMALL["batch_size"], lr=2e-3, foreground_weight=10.0,
            )  # fmt: skip
            save_student(student, out)
        elif dims == 3:
            save_student(student, out)
        return [out, out.with_suffix(".json")]

    return save


def _load_student(ctx: Context, dims: int, files: list[Path]) -> Predictor:
    """One student pass (3D: sliding windows over its raw outputs), then the maps; EnD²: ``S`` Dirichlet draws."""
    from monai_bayes.distill import load_student

    student = load_student(files[0]).eval()
    window = SlidingWindowInferer(ROI, sw_batch_size=1, overlap=0.25) if dims == 3 else None

    def call(x: torch.Tensor) -> torch.Tensor:
        outputs = window(x, student) if window is not None else student(x)
        return student.samples_from_outputs(outputs, ctx.num_samples, seed=0)

    return call


@dataclass(frozen=True)
class Variant:
    """One row of the table.

    Parameters
    ----------
    name : str
        Row label.
    save : callable
        ``(ctx, dims) -> files``: writes what ships (2D: from the trained runs; 3D: random weights, same
        conversion); an empty list means "not available in 3D".
    load : callable
        ``(ctx, dims, files) -> predictor`` with ``predictor(image) -> (B, S, C, *spatial)`` probabilities.
    methods : tuple of str
        Bundle methods whose training runs the variant needs.
    """

    name: str
    save: Callable[[Context, int], list[Path]]
    load: Callable[[Context, int, list[Path]], Predictor]
    methods: tuple[str, ...] = field(default=())


VARIANTS: tuple[Variant, ...] = (
    Variant("deterministic", _save_run("deterministic"), _load_run("deterministic", 1), ("deterministic",)),
    Variant("MC dropout p=0.1", _save_run("mc_dropout"), _load_run("mc_dropout"), ("mc_dropout",)),
    Variant("partial Bayes 1 %", _save_run("sparse_bayes"), _load_run("sparse_bayes"), ("sparse_bayes",)),
    Variant("full mean-field Bayes", _save_run("full_bayes"), _load_run("full_bayes"), ("full_bayes",)),
    Variant("ensemble-5", _save_run("ensemble"), _load_run("ensemble"), ("ensemble",)),
    Variant("SG-MCMC 8 samples, dense fp32", _save_run("sgmcmc"), _load_run("sgmcmc"), ("sgmcmc",)),
    Variant("SG-MCMC 8 samples, shared-sparse 90 % int8", _save_shared_sparse, _load_run("sgmcmc"), ("sgmcmc",)),
    Variant(f"BN3 width {NESTED_WIDTH}/{NESTED_GROUPS}", _save_nested, _load_nested, ("bn3",)),
    Variant("partial Bayes 1 %, ONNX (onnxruntime)", _save_onnx, _load_onnx, ("sparse_bayes",)),
    Variant("BDK student of partial Bayes 1 % (one pass)", _save_student("bdk"), _load_student, ("sparse_bayes",)),
    Variant("EnD² student of partial Bayes 1 % (one pass)", _save_student("end2"), _load_student, ("sparse_bayes",)),
)


# ---- training, quality -----------------------------------------------------------------------------------


def train(ctx: Context, methods: set[str], seed: int) -> None:
    """Train ``methods`` with the LIDC bundle (and BN3 with the nested bundle) into ``ctx.runs``."""
    bundles = ctx.work / "bundles"
    for src in (LIDC, NESTED):
        if not (bundles / src.name).exists():
            shutil.copytree(src, bundles / src.name, ignore=shutil.ignore_patterns("models", "runs", "cache", "eval"))
    base = dict(SMALL, seed=seed, runs_dir=str(ctx.runs), cache_dir=str(ctx.work / "cache"))
    for method in ["deterministic", *sorted(methods - {"deterministic", "bn3"})]:
        run_pipeline(bundles / LIDC.name, dict(base, method=method), publish=False)
    if "bn3" in methods:
        layout = NestedRunLayout(ctx.runs, NESTED_GROUPS)
        steps = [s for s in nested_pipeline_steps(layout) if s.name in ("train deterministic", "train_nested")]
        run_steps(bundles / NESTED.name, steps, dict(base, nested_groups=NESTED_GROUPS), label=layout.run_name)


def eval_data(ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
    """The bundle's fold-0 validation patches ``(B, 1, H, W)`` and rater masks ``(B, R, H, W)``."""
    bundle = ctx.work / "bundles" / LIDC.name
    cfg = ConfigParser()
    cfg.read_config([str(bundle / "configs" / n) for n in ("common.json", "evaluate.json")])
    cfg.update({"bundle_root": str(bundle), **SMALL, "runs_dir": str(ctx.runs), "cache_dir": str(ctx.work / "cache")})
    batches = list(cfg.get_parsed_content("evaluate#dataloader"))
    images = torch.cat([b["image"] for b in batches]).as_tensor()
    raters = torch.cat([b["label"] for b in batches]).as_tensor().float()
    return images, raters


def quality(probs: torch.Tensor, raters: torch.Tensor) -> dict[str, str]:
    """Dice, GED², ECE (mean ± sd over patches) of ``(B, S, 2, H, W)`` probabilities vs ``(B, R, H, W)`` raters."""
    fg = probs[:, :, 1:]
    mean = fg.mean(1)
    majority = (raters.mean(1, keepdim=True) >= 0.5).float()
    dice = DiceMetric(include_background=True, ignore_empty=True, reduction="none")(
        (mean >= 0.5).float(), majority
    ).flatten()
    ged = compute_ged(fg >= 0.5, raters[:, :, None] >= 0.5).ged.flatten()
    ece = CalibrationErrorMetric(num_bins=15, include_background=True, metric_reduction="none")(
        mean, majority
    ).flatten()

    def fmt(v: torch.Tensor) -> str:
        v = v[~torch.isnan(v)]
        return f"{v.mean().item():.3f} ± {v.std(correction=0).item():.3f}"  # sd as the bundle's summary

    return {"Dice": fmt(dice), "GED²": fmt(ged), "ECE": fmt(ece)}


# ---- the child process: load from disk, run, report time and peak RSS ------------------------------------


def _memory_kb(field_name: str) -> int:
    """``VmRSS`` / ``VmHWM`` (peak RSS since the last reset) of this process from ``/proc/self/status``, in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field_name} (peak memory needs Linux).")


def child(ctx: Context, name: str, task: str, repeats: int) -> dict[str, float]:
    """Load variant ``name`` from its files and time ``task`` in this process; ms and peak memory (MB).

    After the imports and the input tensor exist, the kernel's peak-RSS counter is reset
    (``echo 5 > /proc/self/clear_refs``); ``peak_mb`` is the peak RSS (``VmHWM``) while loading and running
    minus the RSS at the reset: the memory the model, its activations and its runtime take.
    """
    torch.set_num_threads(1)
    dims = 3 if task == "volume" else 2
    shape = {"patch": (1, 1, 128, 128), "batch8": (8, 1, 128, 128), "volume": (1, 1, *VOLUME)}[task]
    x = torch.randn(*shape)
    variant = next(v for v in VARIANTS if v.name == name)
    files = json.loads((ctx.work / "files.json").read_text())[name][str(dims)]
    Path("/proc/self/clear_refs").write_text("5")
    before = _memory_kb("VmRSS")
    predict = variant.load(ctx, dims, [Path(f) for f in files])
    times = []
    with torch.no_grad():
        predict(x)  # warm-up (and the MC inferer's plan probe)
        for _ in range(repeats):
            start = time.perf_counter()
            predict(x)
            times.append(time.perf_counter() - start)
    peak = _memory_kb("VmHWM")
    return {"ms": statistics.median(times) * 1e3, "peak_mb": (peak - before) / 1024, "rss_mb": peak / 1024}


def run_child(ctx: Context, name: str, task: str, repeats: int) -> dict[str, float]:
    """:func:`child` in a fresh interpreter."""
    cmd = [
        sys.executable,
        __file__,
        "--work",
        str(ctx.work),
        "--child",
        name,
        "--task",
        task,
        "--repeats",
        str(repeats),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"child {name!r} {task} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--output", type=Path, default=None, help="results folder (table.csv, provenance.json)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--task", default="patch", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(Context(args.work), args.child, args.task, args.repeats)))
        return
    torch.set_num_threads(1)
    work = args.work or Path(tempfile.mkdtemp(prefix="deployer_"))
    ctx = Context(work)
    started = time.perf_counter()
    train(ctx, {m for v in VARIANTS for m in v.methods}, args.seed)
    trained_s = time.perf_counter() - started
    images, raters = eval_data(ctx)
    files = {v.name: {str(d): [str(p) for p in v.save(ctx, d)] for d in (2, 3)} for v in VARIANTS}
    (work / "files.json").write_text(json.dumps(files))
    print(f"trained in {trained_s:.0f} s", flush=True)
    header = [
        "method",
        "S",
        "MB on disk",
        "peak MB, 128² / 3D",
        "ms per 128² patch",
        "s per 3D volume",
        "patches / s (batch 8)",
        "Dice",
        "GED²",
        "ECE",
    ]
    rows = []
    for v in VARIANTS:
        shipped = [Path(f) for f in files[v.name]["2"]]
        predict = v.load(ctx, 2, shipped)
        with torch.no_grad():
            probs = torch.cat([predict(images[i : i + 1]) for i in range(len(images))])
        q = quality(probs, raters)
        patch = run_child(ctx, v.name, "patch", args.repeats)
        batch = run_child(ctx, v.name, "batch8", 1)
        vol = run_child(ctx, v.name, "volume", 1) if files[v.name]["3"] else None
        nbytes = sum(p.stat().st_size for p in shipped if p.name not in ("batch8.onnx", "eval.onnx"))  # copies
        row = [
            v.name,
            str(probs.shape[1]),
            f"{nbytes / 1e6:.3f}",
            f"{patch['peak_mb']:.0f} / " + ("—" if vol is None else f"{vol['peak_mb']:.0f}"),
            f"{patch['ms']:.0f}",
            "—" if vol is None else f"{vol['ms'] / 1e3:.1f}",
            f"{8e3 / batch['ms']:.1f}",
            q["Dice"],
            q["GED²"],
            q["ECE"],
        ]
        rows.append(row)
        print(" | ".join(row), flush=True)
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if args.output is not None:
        from monai_bayes.evaluation.results import write_provenance, write_results_table

        write_results_table(args.output / "table.csv", header, rows)
        write_provenance(
            args.output,
            " ".join(["python", "benchmarks/bench_deployer.py", *sys.argv[1:]]),
            args.seed,
            f"LIDC bundle, small: {SMALL}; BN3 G={NESTED_GROUPS}, width {NESTED_WIDTH}; all trained in this run "
            f"({trained_s:.0f} s); quality on {images.shape[0]} validation patches of {tuple(images.shape[2:])} "
            f"(mean ± sd over patches); latency at 128² (batch 1, median of {args.repeats}) and batch 8 "
            f"(throughput) with the trained 2D networks; 3D: random-weight 3D UNet of the same channels and "
            f"conversion, one {VOLUME} volume, SlidingWindowInferer roi {ROI}, overlap 0.25, sw_batch_size 1; "
            "peak MB = peak RSS (VmHWM) of a fresh child process while loading the files and running, minus its "
            "RSS after imports (counter reset via /proc/self/clear_refs); 1 thread; shared 2-core VM (other "
            "sessions running): read ratios.",
        )


if __name__ == "__main__":
    main()
