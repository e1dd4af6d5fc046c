"""Library side of the ``lidc_nested_unet`` bundle: BN3 run layout, network builder, pipeline, report.

The bundle shares the LIDC data, network and deterministic training configs and adds two steps
(``configs/nested.json`` is merged into both)::

    train_deterministic (method deterministic) -> <runs_dir>/deterministic/model.pt
    train_deterministic (method mc_dropout)    -> <runs_dir>/mc_dropout/model.pt
    train_nested                               -> <runs_dir>/nested_g<G>/model.pt (BN3, θ = deterministic weights)
    evaluate_widths                            -> <runs_dir>/nested_g<G>/eval/width_sweep.{csv,md},
                                                  width_sweep_{ged,hm_iou,sample_diversity}.png

:func:`run_nested_pipeline` runs them with :func:`~monai_bayes.bundle.run_steps` (finished training
steps are skipped) after checking the nested settings, so a bad width or group count fails before any
training.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.bundle import ConfigParser
from torch import nn

from monai_bayes.bundle.layout import RunLayout
from monai_bayes.bundle.overrides import validate_overrides
from monai_bayes.bundle.runner import PipelineStep, _clean, bundle_config, run_steps
from monai_bayes.evaluation.nested import SWEEP_METRICS, WidthSweepResult, write_width_sweep_report
from monai_bayes.layers.nested import nested_layers, set_nested_width
from monai_bayes.networks.checkpoint import load_checkpoint
from monai_bayes.networks.extract import extract_width
from monai_bayes.networks.nested import to_nested
from monai_bayes.utils.atomic import atomic_path, atomic_write_json, atomic_write_text
from monai_bayes.utils.progress import progress_bar

__all__ = [
    "DEFAULT_WIDTH_FRACTIONS",
    "PUBLISHED_NESTED",
    "NestedRunLayout",
    "NestedWidthHandler",
    "ProgressPasses",
    "load_published_nested_network",
    "nested_network",
    "nested_pipeline_steps",
    "nested_widths",
    "publish_nested_model",
    "run_nested_pipeline",
    "sweep_sample_counts",
    "width_sweep_markdown",
    "write_nested_report",
]

logger = logging.getLogger(__name__)

#: default evaluated widths as fractions of the groups: seed 001 Fig. 7's 6/32, 8/32, 12/32, 16/32, 24/32, 32/32
DEFAULT_WIDTH_FRACTIONS: tuple[Fraction, ...] = tuple(
    Fraction(n, d) for n, d in ((3, 16), (1, 4), (3, 8), (1, 2), (3, 4), (1, 1))
)


def nested_widths(groups: int, widths: Sequence[int] | None = None) -> list[int]:
    """The widths (numbers of kept groups) to evaluate, sorted and without repeats.

    ``widths=None``: :data:`DEFAULT_WIDTH_FRACTIONS` of ``groups``, rounded half up (at least 1):
    ``[3, 4, 6, 8, 12, 16]`` for 16 groups, ``[6, 8, 12, 16, 24, 32]`` for 32. Otherwise every entry
    must be an int in ``[1, groups]`` (``ValueError`` naming the bad entries).
    """
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"nested_groups must be a positive int, got {groups!r}.")
    if widths is None:
        return sorted({max(1, math.floor(f * groups + Fraction(1, 2))) for f in DEFAULT_WIDTH_FRACTIONS})
    widths = list(widths)
    bad = [w for w in widths if isinstance(w, bool) or not isinstance(w, int) or not 1 <= w <= groups]
    if not widths or bad:
        raise ValueError(
            f"widths must be a non-empty list of ints in [1, nested_groups={groups}] (kept groups), "
            f"got {widths!r}" + (f"; out of range or not an int: {bad!r}." if bad else ".")
        )
    return sorted(set(widths))


def sweep_sample_counts(num_samples: Sequence[int]) -> list[int]:
    """Sample counts ``S`` of the sweep, sorted without repeats; ``ValueError`` unless positive ints."""
    counts = list(num_samples) if isinstance(num_samples, Sequence) and not isinstance(num_samples, str) else None
    if not counts or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in counts):
        raise ValueError(f"sweep_samples must be a non-empty list of positive ints, got {num_samples!r}.")
    return sorted(set(counts))


@dataclass(frozen=True)
class NestedRunLayout:
    """Where the nested bundle's files go (see module docstring); the baselines are the LIDC runs.

    Parameters
    ----------
    runs_dir
        root of all runs (e.g. ``<bundle_root>/runs``).
    groups
        ``G`` of the nested layers (part of the run name, ``nested_g<G>``).
    """

    runs_dir: str | os.PathLike
    groups: int = 16

    def __post_init__(self) -> None:
        nested_widths(self.groups, [self.groups])  # validates groups

    @property
    def root(self) -> Path:
        return Path(self.runs_dir)

    @property
    def run_name(self) -> str:
        return f"nested_g{self.groups}"

    @property
    def run_dir(self) -> Path:
        return self.root / self.run_name

    @property
    def model_checkpoint(self) -> Path:
        """The trained BN3 network."""
        return self.run_dir / "model.pt"

    @property
    def deterministic_checkpoint(self) -> Path:
        """The deterministic UNet (BN3's θ and the deterministic baseline)."""
        return RunLayout(self.runs_dir, "deterministic").model_checkpoint

    @property
    def mc_dropout_checkpoint(self) -> Path:
        """The MC-dropout UNet (baseline)."""
        return RunLayout(self.runs_dir, "mc_dropout").model_checkpoint

    def costs_file(self, step: str) -> Path:
        """Cost summary JSON of the BN3 training step (``train_nested``)."""
        return self.run_dir / f"costs_{step}.json"

    @property
    def cost_files(self) -> dict[str, Path]:
        """The training cost of BN3: the deterministic model it starts from, then its own step."""
        return {
            "train_deterministic": RunLayout(self.runs_dir, "deterministic").costs_file("train_deterministic"),
            "train_nested": self.costs_file("train_nested"),
        }

    @property
    def eval_dir(self) -> Path:
        return self.run_dir / "eval"


def nested_network(
    network_def: nn.Module,
    groups: int,
    *,
    always_kept: int = 2,
    checkpoint: str | os.PathLike | None = None,
    pretrained: str | os.PathLike | None = None,
    device: torch.device | str | None = None,
    **nested_kwargs: Any,
) -> nn.Module:
    """A BN3 network from a copy of ``network_def`` (the config's network is left unchanged).

    * ``pretrained``: a deterministic checkpoint whose weights become the means θ (training);
    * ``checkpoint``: a trained BN3 checkpoint (evaluation; ``groups`` / ``always_kept`` must be the
      ones it was trained with -- they fix the shapes of ``order_logits`` and ``prior_keep``).

    ``nested_kwargs`` go to :func:`~monai_bayes.networks.to_nested` (``prior_keep``, ``order_init``,
    ``log_alpha_init``, ``temperature``, ``kl_constant``, ...). A missing file or one of another
    network is a ``ValueError`` naming it.
    """
    network = to_nested(
        copy.deepcopy(network_def),
        groups,
        always_kept=always_kept,
        pretrained=None if pretrained is None else os.fspath(pretrained),
        **nested_kwargs,
    )
    if checkpoint is not None:
        if not Path(checkpoint).is_file():
            raise ValueError(f"BN3 checkpoint {os.fspath(checkpoint)!r} does not exist; run train_nested first.")
        load_checkpoint(network, checkpoint)
    return network.to(torch.device(device)) if device is not None else network


class NestedWidthHandler:
    """Run an engine (e.g. the validator during BN3 training) with the nested layers fixed to ``width``
    groups: set on ``STARTED``, the previous widths restored on ``COMPLETED``, so training keeps sampling
    its widths.

    Why: a batch-norm network sampled at random per-layer widths with the running statistics of training
    can predict nothing at all, while the same network at a fixed width scores well (the seed evaluates
    fixed widths); validating the full width (weight noise only) keeps the validation metric meaningful.

    Parameters
    ----------
    width
        kept groups (``None``: the sampled widths).
    network
        defaults to ``engine.network``.
    """

    def __init__(self, width: int | None, network: nn.Module | None = None) -> None:
        if width is not None and (isinstance(width, bool) or not isinstance(width, int) or width < 1):
            raise ValueError(f"width must be a positive int or None, got {width!r}.")
        self.width = width
        self.network = network
        self._previous: dict[str, int | None] = {}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.COMPLETED, self._completed)

    def _network(self, engine: Engine) -> nn.Module:
        return self.network if self.network is not None else engine.network  # type: ignore[attr-defined]  # MONAI workflows set .network; a plain ignite Engine needs network=

    def _started(self, engine: Engine) -> None:
        self._previous = set_nested_width(self._network(engine), self.width)

    def _completed(self, engine: Engine) -> None:
        layers = dict(nested_layers(self._network(engine)))
        for name, old in self._previous.items():
            if name in layers:
                layers[name].width = old
        self._previous = {}


class ProgressPasses:
    """Iterable over ``data`` showing a progress bar for every pass (``evaluate_width_sweep`` makes one
    pass per width). Pass ``i`` is titled ``"<desc> <labels[i]> (i+1/n)"`` when ``labels`` are given.
    """

    def __init__(self, data: Iterable[Any], desc: str = "", labels: Sequence[Any] | None = None) -> None:
        self.data = data
        self.desc = desc
        self.labels = None if labels is None else list(labels)
        self.passes = 0

    def __len__(self) -> int:
        return len(self.data)  # type: ignore[arg-type]  # only called when data is Sized (len() of the loader)

    def __iter__(self) -> Iterator[Any]:
        index, self.passes = self.passes, self.passes + 1
        desc = self.desc
        if self.labels:
            desc = f"{desc} {self.labels[index % len(self.labels)]} ({index % len(self.labels) + 1}/{len(self.labels)})"
        total = len(self.data) if hasattr(self.data, "__len__") else None  # type: ignore[arg-type]  # hasattr checks Sized
        yield from progress_bar(self.data, desc=desc.strip(), total=total, leave=False, dynamic_ncols=True)


def _fmt(mean: float, std: float) -> str:
    return "–" if math.isnan(mean) else f"{mean:.4f} ± {std:.4f}"


def width_sweep_markdown(results: Sequence[WidthSweepResult]) -> str:
    """A Markdown table of :meth:`WidthSweepResult.table` rows: metrics as mean ± std over cases."""
    header = ["method", "width", "width (%)", "samples", "cases", "GED", "HM-IoU", "sample diversity"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for result in results:
        for row in result.table():
            width = row["width"] if row["groups"] == "" or row["width"] == "full" else f"{row['width']}/{row['groups']}"
            cells = [row["method"], str(width), f"{100 * row['width_fraction']:.1f}"]
            cells += [str(row["samples"]), str(row["cases"])]
            cells += [_fmt(row[f"{m}_mean"], row[f"{m}_std"]) for m in SWEEP_METRICS]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_nested_report(
    results: Sequence[WidthSweepResult], output_dir: str | os.PathLike, prefix: str = "width_sweep"
) -> dict[str, Path]:
    """:func:`~monai_bayes.evaluation.write_width_sweep_report` (``<prefix>.csv`` + one figure per metric,
    seed 001 Fig. 7) plus ``<prefix>.md``; the table is also logged. Returns the paths by name.
    """
    paths = write_width_sweep_report(results, output_dir, prefix=prefix)
    table = width_sweep_markdown(results)
    paths["markdown"] = atomic_write_text(Path(output_dir) / f"{prefix}.md", table)
    logger.info("samples x widths (%s):\n%s", output_dir, table)
    return paths


def nested_pipeline_steps(layout: NestedRunLayout) -> list[PipelineStep]:
    """Deterministic UNet, MC-dropout UNet, BN3, then the samples × widths evaluation of all three."""
    deterministic, mc_dropout = {"method": "deterministic"}, {"method": "mc_dropout"}
    return [
        PipelineStep("train deterministic", "train_deterministic", deterministic, layout.deterministic_checkpoint),
        PipelineStep("train mc_dropout", "train_deterministic", mc_dropout, layout.mc_dropout_checkpoint),
        PipelineStep("train_nested", ("nested", "train_nested"), {}, layout.model_checkpoint),
        PipelineStep("evaluate_widths", ("nested", "evaluate_widths"), {}, None),
    ]


def _nested_settings(bundle_root: str | os.PathLike, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Parse the nested settings (after overrides) and check them before anything is trained."""
    parser = ConfigParser()
    parser.read_config([str(bundle_config(bundle_root, n)) for n in ("common", "nested", "evaluate_widths")])
    parser.update({"bundle_root": str(bundle_root), **overrides})
    groups = parser.get_parsed_content("nested_groups")
    always_kept = parser.get_parsed_content("nested_always_kept")
    widths = nested_widths(groups, parser.get_parsed_content("widths"))
    sweep_sample_counts(parser.get_parsed_content("sweep_samples"))
    # structure check: raises naming the layer if the network has fewer channels than groups somewhere
    network_def = parser.get_parsed_content("network_def")
    nested_network(network_def, groups, always_kept=always_kept)
    return {
        "network_def": network_def,
        "layout": NestedRunLayout(parser.get_parsed_content("runs_dir"), groups),
        "always_kept": always_kept,
        "widths": widths,
    }


#: the BN3 checkpoint of a published nested bundle (``models/model.pt`` holds its full-width mean network)
PUBLISHED_NESTED = "model_nested.pt"


def publish_nested_model(
    bundle_root: str | os.PathLike,
    layout: NestedRunLayout,
    always_kept: int = 2,
    network_def: nn.Module | None = None,
) -> Path:
    """Publish the BN3 model in ``<bundle>/models``.

    Parameters
    ----------
    bundle_root : str or os.PathLike
        The bundle folder.
    layout : NestedRunLayout
        The run whose ``model_checkpoint`` is published.
    always_kept : int
        Groups every nested layer always keeps (recorded to rebuild the network).
    network_def : nn.Module, optional
        The plain architecture; with it, ``models/model.pt`` holds the full-width posterior-mean network
        (:func:`~monai_bayes.networks.extract_width` at ``G`` groups, loads strictly into ``network_def``,
        for MONAI's ``ckpt_export`` / ``verify_net_in_out``). Without it, ``model.pt`` is the BN3 checkpoint.

    Returns
    -------
    Path
        ``models/model.pt``. ``models/model_nested.pt`` holds the BN3 checkpoint and ``models/model.json``
        how to rebuild it (:func:`load_published_nested_network`).

    Raises
    ------
    ValueError
        If the BN3 checkpoint does not exist.
    """
    source = layout.model_checkpoint
    if not source.is_file():
        raise ValueError(f"BN3 checkpoint {str(source)!r} does not exist; run train_nested first.")
    models = Path(bundle_root) / "models"
    with atomic_path(models / PUBLISHED_NESTED) as tmp:
        shutil.copyfile(source, tmp)
    target = models / "model.pt"
    if network_def is not None:
        bn3 = nested_network(network_def, layout.groups, always_kept=always_kept, checkpoint=source, device="cpu")
        with atomic_path(target) as tmp:
            torch.save(extract_width(bn3, layout.groups).state_dict(), tmp)
    else:
        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)
    info = {
        "run": layout.run_name,
        "method": "nested",
        "groups": layout.groups,
        "always_kept": always_kept,
        "nested_checkpoint": PUBLISHED_NESTED,
        "source": str(source),
    }
    atomic_write_json(models / "model.json", info)
    logger.info("published %s as %s (+ %s)", source, target, PUBLISHED_NESTED)
    return target


def load_published_nested_network(
    network_def: nn.Module,
    models_dir: str | os.PathLike,
    *,
    width: int | None = None,
    device: torch.device | str | None = None,
) -> nn.Module:
    """The published BN3 network at a fixed width, for Monte-Carlo inference.

    Parameters
    ----------
    network_def : nn.Module
        The plain architecture (a copy is converted).
    models_dir : str or os.PathLike
        The bundle's ``models`` folder (:func:`publish_nested_model`'s layout).
    width : int, optional
        Kept groups ``w`` in ``[1, G]``; ``None``: all ``G`` groups. The other groups are dropped
        deterministically; each Monte-Carlo pass samples the remaining multiplicative weight noise.
    device : torch.device or str, optional
        Where to put the network.

    Returns
    -------
    nn.Module
        The BN3 network with its nested layers fixed to ``width``.

    Raises
    ------
    ValueError
        Naming the file when ``model.json`` or the BN3 checkpoint is missing or not a nested model, or
        when ``width`` is out of range.
    """
    models = Path(models_dir)
    info_path = models / "model.json"
    if not info_path.is_file():
        raise ValueError(f"{info_path} does not exist; run the nested pipeline (configs/pipeline.json) first.")
    info = json.loads(info_path.read_text(encoding="utf-8"))
    if info.get("method") != "nested" or not isinstance(info.get("groups"), int):
        raise ValueError(f"{info_path}: expected a published BN3 model (method 'nested', groups), got {info!r}.")
    groups = int(info["groups"])
    chosen = nested_widths(groups, [groups if width is None else width])[0]
    checkpoint = models / str(info.get("nested_checkpoint", PUBLISHED_NESTED))
    network = nested_network(
        network_def, groups, always_kept=int(info.get("always_kept", 2)), checkpoint=checkpoint, device=device
    )
    set_nested_width(network, chosen)
    return network


def run_nested_pipeline(
    bundle_root: str | os.PathLike,
    overrides: Mapping[str, Any] | None = None,
    resume: bool = True,
    publish: bool = True,
) -> dict[str, Path]:
    """Train the deterministic and MC-dropout UNets and BN3, then evaluate all three over samples × widths.

    Parameters
    ----------
    bundle_root
        the ``lidc_nested_unet`` bundle folder.
    overrides
        config ids to override in every step (``None`` values are ignored), e.g.
        ``{"nested_groups": 8, "widths": [2, 4, 8], "bayes_epochs": 10}``.
    resume
        skip training steps whose checkpoint exists (the evaluation always runs).
    publish
        copy the BN3 model to ``models/model.pt`` (:func:`publish_nested_model`).

    Returns
    -------
    dict
        The report files: ``{"table": csv, "markdown": md, "ged": png, "hm_iou": png,
        "sample_diversity": png}``.
    """
    overrides = _clean(overrides)
    names = ("common", "train_deterministic", "nested", "train_nested", "evaluate_widths")
    validate_overrides(overrides, [bundle_config(bundle_root, n) for n in names], where="nested pipeline")
    settings = _nested_settings(bundle_root, overrides)
    layout: NestedRunLayout = settings["layout"]
    logger.info("[%s] widths %s of %d groups", layout.run_name, settings["widths"], layout.groups)
    run_steps(bundle_root, nested_pipeline_steps(layout), overrides, resume=resume, label=layout.run_name)
    prefix = layout.eval_dir / "width_sweep"
    paths = {"table": prefix.with_suffix(".csv"), "markdown": prefix.with_suffix(".md")}
    paths |= {m: layout.eval_dir / f"width_sweep_{m}.png" for m in SWEEP_METRICS}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise RuntimeError(f"the evaluate_widths step did not write {missing}.")
    if publish:
        publish_nested_model(bundle_root, layout, settings["always_kept"], network_def=settings["network_def"])
    return paths
