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
   inside :class:`~monai_bayes.inferers.MonteCarloInferer` (the deterministic network and the students are
   called directly, without it; ONNX rows: onnxruntime alone, S samples in one graph call). Peak memory:
   the child resets the kernel's peak-RSS counter after its imports (``/proc/self/clear_refs``) and reports
   the peak resident set size (``VmHWM``) while loading and running minus the RSS at the reset -- torch's
   allocations are outside Python's tracemalloc, and ``ru_maxrss`` cannot be reset (its peak is the import of
   torch + MONAI).

A variant is one :class:`Variant` entry of :data:`VARIANTS` (``save`` writes its files, ``load`` rebuilds a
predictor from them): a distilled student (BDK, EnD²) is one more entry whose ``save`` trains or copies the
student and whose ``load`` returns its ``(B, S, C, *spatial)`` probabilities; an ONNX row is
``_onnx_variant(row)`` of a row whose ``network`` rebuilds its torch network.

``--only NAME ...`` re-measures just the named rows (saving, and training if needed, only theirs) and keeps
every other row of ``<output>/table.csv`` as it was measured before (a new row or a changed one).
"""

from __future__ import annotations

import argparse
import json
import os
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
    recalibrate_batch_norm,
    save_checkpoint,
    save_samples,
    to_full_bayes,
    to_partial_bayes,
)
from monai_bayes.selection import select_topk
from monai_bayes.utils import read_json_if_exists

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


def _window(dims: int) -> SlidingWindowInferer | None:
    """The 3D sliding-window inferer (``None`` in 2D: one call on the whole patch)."""
    return SlidingWindowInferer(ROI, sw_batch_size=1, overlap=0.25) if dims == 3 else None


def _mc(net: torch.nn.Module, samples: int, dims: int) -> Predictor:
    inferer = MonteCarloInferer(
        num_samples=samples, inferer=_window(dims), activation="softmax", output="samples", seed=0
    )
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


#: ``(ctx, dims, files) -> (network, nested width or None)``: the torch network rebuilt from the shipped files
Network = Callable[[Context, int, list[Path]], tuple[torch.nn.Module, int | None]]


def _run_network(method: str) -> Network:
    """The bundle method's network from its checkpoint(s) (``build_network``); no width."""

    def network(ctx: Context, dims: int, files: list[Path]) -> tuple[torch.nn.Module, int | None]:
        if method == "ensemble":
            return build_network(network_def(dims), method, member_checkpoints=files), None
        return build_network(network_def(dims), method, files[0]), None

    return network


def _load_mc(network: Network) -> Callable[[Context, int, list[Path]], Predictor]:
    """``S`` samples through :class:`MonteCarloInferer` (3D: around the sliding windows), at the network's width."""

    def load(ctx: Context, dims: int, files: list[Path]) -> Predictor:
        net, width = network(ctx, dims, files)
        predict = _mc(net, len(net.members) if isinstance(net, DeepEnsemble) else ctx.num_samples, dims)
        if width is None:
            return predict

        def call(x: torch.Tensor) -> torch.Tensor:
            with nested_width(net, width):
                return predict(x)

        return call

    return load


def _load_direct(ctx: Context, dims: int, files: list[Path]) -> Predictor:
    """The deterministic network called directly, like the students (no MonteCarloInferer; 3D: sliding windows)."""
    net = build_network(network_def(dims), "deterministic", files[0]).eval()
    window = _window(dims)

    def call(x: torch.Tensor) -> torch.Tensor:
        logits = window(x, net) if window is not None else net(x)
        return logits.softmax(1)[:, None]  # (B, 1, C, *spatial): S = 1

    return call


def _save_shared_sparse(ctx: Context, dims: int) -> list[Path]:
    dense = _save_run("sgmcmc")(ctx, dims)[0]
    out = ctx.folder("sgmcmc shared sparse", dims) / "m0.pt"
    return [save_samples(load_samples(dense), out, layout="shared_sparse", sparsity=0.9, values="int8")]


def _save_nested(width: int) -> Callable[[Context, int], list[Path]]:
    """BN3 at ``width`` of ``NESTED_GROUPS``: 2D, the trained network with its batch norms recalibrated at that
    width (S-sample mode, one epoch of the training patches, as the nested bundle's evaluator does); 3D: random
    weights."""

    def save(ctx: Context, dims: int) -> list[Path]:
        out = ctx.folder(f"bn3 width {width}", dims) / "m0.pt"
        if dims == 3:
            return [save_checkpoint(nested_network(_random_3d(), NESTED_GROUPS), out)]
        checkpoint = NestedRunLayout(ctx.runs, NESTED_GROUPS).model_checkpoint
        net = nested_network(network_def(2), NESTED_GROUPS, checkpoint=checkpoint)
        recalibrate_batch_norm(net, train_batches(ctx), width=width, seed=0)
        return [save_checkpoint(net, out)]

    return save


def _nested_network(width: int) -> Network:
    """The shipped BN3 checkpoint at ``width``."""

    def network(ctx: Context, dims: int, files: list[Path]) -> tuple[torch.nn.Module, int | None]:
        return nested_network(network_def(dims), NESTED_GROUPS, checkpoint=files[0]), width

    return network


ONNX_SHAPES = {
    "patch": (1, 1, 128, 128),
    "batch8": (8, 1, 128, 128),
    "eval": (1, 1, SMALL["patch_size"], SMALL["patch_size"]),
}


def _save_onnx(source: Variant) -> Callable[[Context, int], list[Path]]:
    """``source``'s trained 2D network (from the files it ships) exported with noise inputs (S samples batched
    in one graph call; MC dropout: masks bound to each shape; BN3: its width cut, weight noise only), one graph
    per shape: the 128² patch, the batch of 8, the evaluation patch. No 3D export."""

    def save(ctx: Context, dims: int) -> list[Path]:
        if dims == 3 or source.network is None:
            return []
        from monai_bayes.export import NoiseInputNetwork, export_onnx

        net, width = source.network(ctx, 2, source.save(ctx, 2))
        out = ctx.folder(f"onnx {source.name}", 2)
        files = []
        for key, shape in ONNX_SHAPES.items():
            image = torch.zeros(*shape)
            wrapper = NoiseInputNetwork(net, ctx.num_samples, example_image=image, width=width).eval()
            files.append(export_onnx(wrapper, image, out / f"{key}.onnx"))
        return files

    return save


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


def _save_student(kind: str, frozen_trunk: bool = False) -> Callable[[Context, int], list[Path]]:
    """A one-pass student of the trained 1 % partial-Bayes teacher, of the teacher's width (2D: distilled on
    the training patches, S = 8 teacher samples each, foreground weight 10; 3D: random weights).

    ``frozen_trunk`` (EnD²): the teacher's posterior-mean UNet, frozen, plus a trained Dirichlet-precision head
    (``build_student(..., frozen_trunk=True)`` initialised by ``init_student_from_teacher``), trained with the
    settings of docs/distillation.md for it (Adam 1e-3, initial temperature 1) instead of 2e-3 and 2.5."""

    def save(ctx: Context, dims: int) -> list[Path]:
        from monai_bayes.distill import build_student, init_student_from_teacher, save_student, train_student

        out = ctx.folder(f"{kind} student" + (" frozen trunk" if frozen_trunk else ""), dims) / "student.pt"
        student = build_student(
            kind, 2, spatial_dims=dims, channels=SMALL["network_def#channels"], strides=SMALL["network_def#strides"],
            num_res_units=1, frozen_trunk=frozen_trunk,
        )  # fmt: skip
        if dims == 2 and not out.is_file():
            checkpoint = RunLayout(ctx.runs, "sparse_bayes").model_checkpoint
            teacher = build_network(network_def(2), "sparse_bayes", checkpoint)
            recipe = {"lr": 1e-3, "initial_temperature": 1.0} if frozen_trunk else {"lr": 2e-3}
            if frozen_trunk:
                init_student_from_teacher(student, teacher)
            train_student(
                student, teacher.eval(), train_batches(ctx), num_samples=ctx.num_samples, max_epochs=STUDENT_EPOCHS,
                batch_size=SMALL["batch_size"], foreground_weight=10.0, **recipe,
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
    window = _window(dims)

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
    network : callable, optional
        ``(ctx, dims, files) -> (network, width)``: the torch network rebuilt from the shipped files (and its
        nested width), for the rows that sample it with ``MonteCarloInferer`` and for its ONNX export.
    """

    name: str
    save: Callable[[Context, int], list[Path]]
    load: Callable[[Context, int, list[Path]], Predictor]
    methods: tuple[str, ...] = field(default=())
    network: Network | None = None


def _mc_variant(name: str, save: Callable[[Context, int], list[Path]], network: Network, method: str) -> Variant:
    """A row sampled with ``MonteCarloInferer`` from the network its files rebuild."""
    return Variant(name, save, _load_mc(network), (method,), network)


def _onnx_variant(source: Variant) -> Variant:
    """``source`` exported to ONNX and run with onnxruntime alone (same training runs)."""
    return Variant(f"{source.name}, ONNX (onnxruntime)", _save_onnx(source), _load_onnx, source.methods)


_MC_DROPOUT = _mc_variant("MC dropout p=0.1", _save_run("mc_dropout"), _run_network("mc_dropout"), "mc_dropout")
_PARTIAL = _mc_variant("partial Bayes 1 %", _save_run("sparse_bayes"), _run_network("sparse_bayes"), "sparse_bayes")
_BN3 = _mc_variant(
    f"BN3 width {NESTED_WIDTH}/{NESTED_GROUPS}", _save_nested(NESTED_WIDTH), _nested_network(NESTED_WIDTH), "bn3"
)
VARIANTS: tuple[Variant, ...] = (
    Variant("deterministic", _save_run("deterministic"), _load_direct, ("deterministic",)),
    _MC_DROPOUT,
    _PARTIAL,
    _mc_variant("full mean-field Bayes", _save_run("full_bayes"), _run_network("full_bayes"), "full_bayes"),
    _mc_variant("ensemble-5", _save_run("ensemble"), _run_network("ensemble"), "ensemble"),
    _mc_variant("SG-MCMC 8 samples, dense fp32", _save_run("sgmcmc"), _run_network("sgmcmc"), "sgmcmc"),
    _mc_variant("SG-MCMC 8 samples, shared-sparse 90 % int8", _save_shared_sparse, _run_network("sgmcmc"), "sgmcmc"),
    _BN3,
    _mc_variant(
        f"BN3 width {NESTED_GROUPS}/{NESTED_GROUPS}", _save_nested(NESTED_GROUPS), _nested_network(NESTED_GROUPS), "bn3"
    ),
    _onnx_variant(_PARTIAL),
    _onnx_variant(_MC_DROPOUT),
    _onnx_variant(_BN3),
    Variant("BDK student of partial Bayes 1 % (one pass)", _save_student("bdk"), _load_student, ("sparse_bayes",)),
    Variant("EnD² student of partial Bayes 1 % (one pass)", _save_student("end2"), _load_student, ("sparse_bayes",)),
    Variant(
        "EnD² frozen-trunk student of partial Bayes 1 % (one pass)",
        _save_student("end2", frozen_trunk=True),
        _load_student,
        ("sparse_bayes",),
    ),
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


def _measured_variants(only: list[str] | None, output: Path | None) -> list[Variant]:
    """The rows to measure: all, or those named by ``--only`` (which needs ``--output`` with a table)."""
    if only is None:
        return list(VARIANTS)
    unknown = sorted(set(only) - {v.name for v in VARIANTS})
    if unknown:
        raise SystemExit(f"--only: no rows named {unknown}; rows: {[v.name for v in VARIANTS]}")
    if output is None or not (output / "table.csv").is_file():
        raise SystemExit("--only keeps the other rows of <output>/table.csv: pass --output with an existing table.")
    return [v for v in VARIANTS if v.name in only]


def _previous_rows(output: Path) -> dict[str, list[str]]:
    """Rows of ``<output>/table.csv`` by method name."""
    import csv

    with open(output / "table.csv", newline="", encoding="utf-8") as f:
        return {row[0]: row for row in list(csv.reader(f))[1:]}


# ---- the child process: load from disk, run, report time and peak RSS ------------------------------------


def _memory_kb(field_name: str) -> int:
    """``VmRSS`` / ``VmHWM`` (peak RSS since the last reset) of this process from ``/proc/self/status``, in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field_name} (peak memory needs Linux).")


def child(ctx: Context, name: str, task: str, repeats: int) -> dict[str, float]:
    """Load variant ``name`` from its files and time ``task`` in this process; ms and peak memory (MB).

    ``ms`` is this process's CPU time (``time.process_time``, all its threads; one intra-op thread), the
    median over ``repeats``: on an idle core it is the wall time of the single-threaded call, and on a shared,
    overloaded VM it does not count the time the process waits for a core (``wall_ms``: the wall time too).

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
    cpu, wall = [], []
    with torch.no_grad():
        predict(x)  # warm-up (and the MC inferer's plan probe)
        for _ in range(repeats):
            start_cpu, start_wall = time.process_time(), time.perf_counter()
            predict(x)
            cpu.append(time.process_time() - start_cpu)
            wall.append(time.perf_counter() - start_wall)
    peak = _memory_kb("VmHWM")
    return {
        "ms": statistics.median(cpu) * 1e3,
        "wall_ms": statistics.median(wall) * 1e3,
        "peak_mb": (peak - before) / 1024,
        "rss_mb": peak / 1024,
    }


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
    parser.add_argument(
        "--only", nargs="+", default=None, help="re-measure only these rows; keep the others from --output's table"
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--task", default="patch", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(Context(args.work), args.child, args.task, args.repeats)))
        return
    torch.set_num_threads(1)
    work = args.work or Path(tempfile.mkdtemp(prefix="deployer_"))
    ctx = Context(work)
    started, started_at, load = time.perf_counter(), time.gmtime(), os.getloadavg()
    measured = _measured_variants(args.only, args.output)
    kept = _previous_rows(args.output) if args.only else {}
    missing = [v.name for v in VARIANTS if v not in measured and v.name not in kept]
    if missing:
        raise SystemExit(f"--only: rows {missing} are neither measured now nor in {args.output}/table.csv.")
    train(ctx, {m for v in measured for m in v.methods}, args.seed)
    trained_s = time.perf_counter() - started
    images, raters = eval_data(ctx)
    files = (read_json_if_exists(work / "files.json") or {}) if args.only else {}
    files |= {v.name: {str(d): [str(p) for p in v.save(ctx, d)] for d in (2, 3)} for v in measured}
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
        if v not in measured:
            rows.append(kept[v.name])
            continue
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
        command = " ".join(["python", "benchmarks/bench_deployer.py", *sys.argv[1:]])
        notes = (
            f"LIDC bundle, small: {SMALL}; BN3 G={NESTED_GROUPS}; bundle runs trained (or reused from --work, "
            f"resume=True) in {trained_s:.0f} s; run {time.strftime('%H:%M', started_at)}-"
            f"{time.strftime('%H:%M', time.gmtime())} UTC, load average {load[0]:.1f} at the start, "
            f"{os.getloadavg()[0]:.1f} at the end; "
            f"quality on {images.shape[0]} validation patches of {tuple(images.shape[2:])} "
            f"(mean ± sd over patches); latency at 128² (batch 1, median of {args.repeats}) and batch 8 "
            f"(throughput) with the trained 2D networks; 3D: random-weight 3D UNet of the same channels and "
            f"conversion, one {VOLUME} volume, SlidingWindowInferer roi {ROI}, overlap 0.25, sw_batch_size 1; "
            "peak MB = peak RSS (VmHWM) of a fresh child process while loading the files and running, minus its "
            "RSS after imports (counter reset via /proc/self/clear_refs); 1 thread; shared 2-core VM (other "
            "sessions running): times are each child's CPU time (time.process_time), not wall time, so that the "
            "waits for a core on the overloaded VM do not count (contention for caches and memory bandwidth still "
            "does): read ratios. The deterministic row calls the network directly (3D: "
            "SlidingWindowInferer alone), like the students; the stochastic PyTorch rows go through "
            "MonteCarloInferer (S samples batched). BN3 rows: the trained nested network with its batch norms "
            "recalibrated at the row's width (sample mode, one epoch of the training patches, seed 0; what the "
            "nested bundle's evaluator does) before it is saved. ONNX rows: the row's trained 2D network "
            "exported with NoiseInputNetwork (noise as inputs, S samples in one graph call; MC dropout: masks "
            "bound to each input shape; BN3: its width cut, weight noise only), one graph per input shape, run "
            "with onnxruntime alone (1 thread, standard-normal noise drawn with torch per call); not exported in "
            "3D; MB on disk counts the 128² graph only."
        )
        if args.only:
            previous = read_json_if_exists(args.output / "provenance.json") or {}
            command = f"{previous.get('command', '?')}; then {command}"
            notes = (
                f"{previous.get('notes', '')} THEN (--only) re-measured only the rows {args.only}, the others "
                f"kept from the run above; this invocation: {notes}"
            )
        write_provenance(args.output, command, args.seed, notes)


if __name__ == "__main__":
    main()
