"""Run a bundle's step configs in order (pipeline) and over several methods (sweep).

A monai_bayes bundle keeps each step in its own config, merged with ``configs/common.json``:
``train_deterministic`` → ``select`` → ``train`` → ``evaluate`` (see the bundle's README).
:func:`run_pipeline` runs the steps a method needs through MONAI's
:class:`~monai.bundle.ConfigWorkflow`, forwarding the same overrides to every step and skipping a
training step whose output checkpoint already exists (``resume=True``), so a sweep trains the
shared deterministic model once. :func:`run_sweep` runs the pipeline for several ``r_bayes``
values and baselines and writes a comparison table and figure (seed 000 Fig. 4).
"""

from __future__ import annotations

import csv
import logging
import os
import shlex
import statistics
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monai.bundle import ConfigParser, ConfigWorkflow

from monai_bayes.bundle.distributed import barrier, init_distributed, is_main_process
from monai_bayes.bundle.layout import RunLayout
from monai_bayes.bundle.overrides import SETTING_RULES, setting_defaults, validate_overrides
from monai_bayes.bundle.steps import publish_model
from monai_bayes.evaluation.results import render_table, write_provenance, write_results_table
from monai_bayes.evaluation.tables import metric_table_rows
from monai_bayes.utils.atomic import atomic_path, atomic_write_json, atomic_write_text
from monai_bayes.utils.errors import summarize_errors
from monai_bayes.utils.files import read_json_if_exists
from monai_bayes.visualize import plot_results_csv
from monai_bayes.workflows.methods import check_method, method_spec

__all__ = [
    "FIG4_R_BAYES",
    "PipelineStep",
    "bundle_config",
    "pipeline_steps",
    "run_config",
    "run_pipeline",
    "run_steps",
    "run_sweep",
    "sweep_results_table",
    "sweep_sample_counts_for",
    "validate_pipeline_overrides",
]

logger = logging.getLogger(__name__)

#: metrics shown in the sweep table / figure: key in summary.json → display name
SWEEP_METRICS: dict[str, str] = {
    "Dice": "Dice",
    "IoU": "IoU",
    "GED": "GED²",
    "GED_hm_iou": "HM-IoU",
    "GED_sample_diversity": "sample diversity",
    "ThresholdedJaccard": "thresholded Jaccard (ISIC)",
    "Brier": "Brier",
    "ECE": "ECE (per-image mean)",
    "ECE_pooled": "ECE (pooled pixels)",
    "Uncertainty_entropy_mean": "mean entropy (nats)",
}


@dataclass(frozen=True)
class PipelineStep:
    """One step: the config to run (merged after ``common``; a tuple merges several in order), extra
    overrides, the file whose existence means it is done, and the config merged in when the pipeline
    runs under torchrun (``None``: rank 0 runs it alone).
    """

    name: str
    config: str | tuple[str, ...]
    overrides: Mapping[str, Any]
    output: Path | None  # None: always run
    distributed_config: str | None = None

    @property
    def configs(self) -> list[str]:
        """The config names of this step, in merge order."""
        return [self.config] if isinstance(self.config, str) else list(self.config)


def bundle_config(bundle_root: str | os.PathLike, name: str) -> Path:
    """Path of ``configs/<name>.json`` (or ``.yaml``) of a bundle; ``ValueError`` if missing."""
    root = Path(bundle_root) / "configs"
    for ext in (".json", ".yaml", ".yml"):
        if (root / f"{name}{ext}").is_file():
            return root / f"{name}{ext}"
    raise ValueError(f"bundle {str(bundle_root)!r} has no config {name!r} in {root}.")


def _defaults(bundle_root: str | os.PathLike, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Method, r_bayes, ensemble size, MC-dropout rate and runs folder after applying ``overrides`` to common.json."""
    parser = ConfigParser()
    parser.read_config(str(bundle_config(bundle_root, "common")))
    parser.update({"bundle_root": str(bundle_root), **overrides})
    keys = ("method", "r_bayes", "ensemble_size", "mc_dropout_p", "runs_dir", "seed")
    values = {k: parser.get_parsed_content(k) for k in keys}
    values["base_keys"] = list(parser.get_parsed_content("network_def").state_dict())
    return values


def _method(bundle_root: str | os.PathLike, overrides: Mapping[str, Any]) -> str:
    """The run's method (the override, else common.json's default), validated against the method registry."""
    method = overrides.get("method", setting_defaults([bundle_config(bundle_root, "common")]).get("method"))
    return check_method(method)


def validate_pipeline_overrides(
    bundle_root: str | os.PathLike,
    overrides: Mapping[str, Any],
    methods: Sequence[str] | None = None,
    distributed: bool = False,
    where: str = "pipeline",
) -> None:
    """Validate ``overrides`` against ``common`` and every step config the method(s) run (see
    :func:`~monai_bayes.bundle.overrides.validate_overrides`); ``ValueError`` before anything runs.
    """
    names: list[str] = ["common"]
    for method in methods if methods is not None else [_method(bundle_root, overrides)]:
        names += [c for c in method_spec(method).configs if c not in names]
    if distributed:
        names += ["multi_gpu_train", "multi_gpu_select"]
    validate_overrides(overrides, [bundle_config(bundle_root, n) for n in names], where=where)


def pipeline_steps(layout: RunLayout) -> list[PipelineStep]:
    """The steps of ``layout.method``'s pipeline (its registry entry's ``configs``), with their resume markers."""
    spec = layout.spec
    steps: list[PipelineStep] = []
    for config in spec.configs:
        if config == "train_deterministic" and spec.deterministic_output == "members":
            steps.extend(
                PipelineStep(f"train member {m}", config, {"member_index": m}, path, "multi_gpu_train")
                for m, path in enumerate(layout.member_checkpoints)
            )
        elif config == "train_deterministic":
            steps.append(PipelineStep(config, config, {}, layout.train_deterministic_checkpoint, "multi_gpu_train"))
        elif config == "select":
            steps.append(PipelineStep(config, config, {}, layout.selected_checkpoint, "multi_gpu_select"))
        elif config == spec.train_config:  # step 3: ELBO training ("train") or the method's own (e.g. SG-MCMC)
            distributed = "multi_gpu_train" if config == "train" else None
            steps.append(PipelineStep(config, config, {}, layout.model_checkpoint, distributed))
        else:  # evaluation always runs
            steps.append(PipelineStep(config, config, {}, None))
    return steps


def run_config(
    bundle_root: str | os.PathLike, names: Sequence[str], overrides: Mapping[str, Any] | None = None
) -> ConfigWorkflow:
    """Run ``configs/common`` + the named configs of a bundle with MONAI's ConfigWorkflow."""
    root = Path(bundle_root)
    files = [str(bundle_config(root, n)) for n in ("common", *names)]
    meta = root / "configs" / "metadata.json"
    logging_conf = root / "configs" / "logging.conf"
    workflow = ConfigWorkflow(
        config_file=files,
        meta_file=str(meta) if meta.is_file() else None,
        logging_file=str(logging_conf) if logging_conf.is_file() else None,
        **{"bundle_root": str(root), **(overrides or {})},
    )
    try:
        with summarize_errors(f"bundle step {'+'.join(names)}"):  # our message first, then MONAI's tracebacks
            workflow.initialize()
            workflow.run()
            workflow.finalize()
    except Exception as err:
        cause = _root_cause(err)
        if isinstance(cause, ValueError) and cause is not err:
            # MONAI wraps errors of config expressions in "Failed to evaluate ..."; surface ours
            raise ValueError(f"bundle step {'+'.join(names)}: {cause}") from err
        raise
    return workflow


def _root_cause(err: BaseException) -> BaseException:
    seen = set()
    while err.__cause__ is not None and id(err) not in seen:
        seen.add(id(err))
        err = err.__cause__
    return err


def _clean(overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """Drop ``None`` values: an override left at ``None`` keeps the step config's default."""
    return {k: v for k, v in (overrides or {}).items() if v is not None}


def run_steps(
    bundle_root: str | os.PathLike,
    steps: Sequence[PipelineStep],
    overrides: Mapping[str, Any] | None = None,
    *,
    resume: bool = True,
    distributed: bool = False,
    label: str = "",
) -> None:
    """Run ``steps`` in order with :func:`run_config`, each with ``overrides`` plus its own.

    A step whose ``output`` exists is skipped when ``resume`` is true (finished training). Under
    torchrun (``distributed``; the process group must be initialised), a step with a
    ``distributed_config`` runs on every rank with that config merged in; any other step runs on rank
    0 while the other ranks wait. ``label`` prefixes the log lines (e.g. the run name).
    """
    overrides = _clean(overrides)
    for step in steps:
        if resume and step.output is not None and step.output.is_file():
            logger.info("[%s] %s: done already (%s), skipping", label, step.name, step.output)
            continue
        configs = step.configs
        if distributed and step.distributed_config is not None:
            configs.append(step.distributed_config)
        elif distributed and not is_main_process():
            barrier()  # rank-0-only step (evaluation): the other ranks wait for it
            continue
        logger.info("[%s] %s", label, step.name)
        run_config(bundle_root, configs, {**overrides, **step.overrides})
        if distributed and step.distributed_config is None:
            barrier()


def run_pipeline(
    bundle_root: str | os.PathLike,
    overrides: Mapping[str, Any] | None = None,
    resume: bool = True,
    publish: bool = True,
    distributed: bool = False,
) -> dict[str, Any]:
    """Run every step of the configured method's pipeline; return the evaluation summary.

    Parameters
    ----------
    bundle_root
        the bundle folder.
    overrides
        config ids to override in every step (e.g. ``{"method": "mc_dropout",
        "deterministic_epochs": 2}``); ``None`` values are ignored. Every id must exist in ``common`` or
        a step config of the method, with a value of the default's type and in range
        (:func:`validate_pipeline_overrides`), checked before the first step.
    resume
        skip training steps whose output checkpoint exists (evaluation always runs).
    publish
        copy the final model to ``models/model.pt`` (:func:`~monai_bayes.bundle.publish_model`).
    distributed
        the pipeline runs under torchrun: training and selection steps run on every rank
        with their ``multi_gpu_*`` config merged in; evaluation and publishing run on rank 0.
    """
    overrides = _clean(overrides)
    validate_pipeline_overrides(bundle_root, overrides, distributed=distributed)
    d = _defaults(bundle_root, overrides)
    layout = RunLayout(d["runs_dir"], check_method(d["method"]), d["r_bayes"], d["ensemble_size"])
    if distributed:
        init_distributed()
    run_steps(
        bundle_root, pipeline_steps(layout), overrides, resume=resume, distributed=distributed, label=layout.run_name
    )
    if distributed and not is_main_process():
        return {}
    summary = read_json_if_exists(layout.eval_dir / "summary.json")
    if summary is None:
        raise RuntimeError(f"the evaluate step wrote no summary in {layout.eval_dir}.")
    if publish:
        publish_model(bundle_root, layout, mc_dropout_p=d["mc_dropout_p"], base_keys=d["base_keys"])
    return summary


def _variants(r_bayes_values: Sequence[float], baselines: Sequence[str]) -> list[dict[str, Any]]:
    variants = []
    for r in r_bayes_values:
        r = float(r)
        variants.append({"method": "full_bayes"} if r >= 1.0 else {"method": "sparse_bayes", "r_bayes": r})
    variants.extend({"method": check_method(b)} for b in baselines)
    return variants


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    fields = list(dict.fromkeys(k for row in rows for k in row))
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown_table(rows: list[dict[str, Any]], metrics: Mapping[str, str]) -> str:
    """A Markdown table: run, metrics as mean ± std, parameters, Bayesian parameters, FLOPs, time."""
    header = ["run", *metrics.values(), "params", "Bayesian params", "train FLOPs", "train time (s)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [str(row["run"])]
        for key in metrics:
            mean, std = row.get(key), row.get(f"{key}_std")
            cells.append(_fmt(mean) if std is None else f"{_fmt(mean)} ± {_fmt(std)}")
        flops = row.get("train_flops_total")
        cells += [
            _fmt(row.get("params_total")),
            _fmt(row.get("params_bayesian")),
            "–" if not flops else f"{flops:.3g}",
            _fmt(row.get("train_wall_seconds")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


#: the r_bayes values of seed 000 Fig. 4 (1, 10, 20, 40, 80 % partial and 100 % = full Bayes)
FIG4_R_BAYES: tuple[float, ...] = (0.01, 0.1, 0.2, 0.4, 0.8, 1.0)


def sweep_sample_counts_for(method: str, sample_counts: Sequence[int] | None, ensemble_size: int) -> list[int]:
    """The sample counts ``S`` at which a sweep evaluates ``method``.

    Parameters
    ----------
    method : str
        A registry method.
    sample_counts : Sequence of int or None
        The requested counts (e.g. ``[1, 4, 8, 16]``); ``None``: one evaluation at the configured
        ``eval_samples``.
    ensemble_size : int
        ``M``, the members of the trained ensemble.

    Returns
    -------
    list of int
        ``[0]`` (meaning: the configured count) when ``sample_counts`` is ``None``; ``[1]`` for a
        deterministic network (every sample is the same); for an ensemble its sub-ensembles of the
        first ``S`` members for every requested ``2 <= S < M`` plus ``M`` itself (``S = 1`` is the
        deterministic network, member 0); else the requested counts, sorted.
    """
    if sample_counts is None:
        return [0]
    rule = method_spec(method).mc_samples
    if rule == "one":
        return [1]
    if rule == "members":
        return sorted({s for s in sample_counts if 2 <= s < ensemble_size} | {ensemble_size})
    return sorted(set(sample_counts))


def _check_sweep_settings(
    r_bayes_values: Sequence[float], sample_counts: Sequence[int] | None, folds: Sequence[int] | None
) -> None:
    """``ValueError`` naming the sweep setting unless r_bayes values, sample counts and folds pass their
    :data:`~monai_bayes.bundle.overrides.SETTING_RULES`.
    """
    given = {"r_bayes_values": r_bayes_values, "sample_counts": sample_counts, "folds": folds}
    problems = []
    for name, value in given.items():
        expected = SETTING_RULES[name](list(value) if isinstance(value, tuple) else value)
        if expected is not None:
            problems.append(f"--{name} must be {expected}, got {value!r}")
    if problems:
        raise ValueError("sweep: invalid settings, nothing was run:\n  " + "\n  ".join(problems))


def _cell(values: Sequence[float | None], stds: Sequence[float | None]) -> str:
    """``"mean ± std"`` of one table cell: over cases for one fold, over the folds' means for several."""
    present = [v for v in values if v is not None]
    if not present:
        return "–"
    if len(values) > 1:
        mean, std = statistics.fmean(present), statistics.stdev(present) if len(present) > 1 else 0.0
    else:
        mean, std = present[0], stds[0] if stds[0] is not None else 0.0
    return f"{_num(mean)} ± {_num(std)}"


def _num(value: float) -> str:
    """3 decimals, or 3 significant digits below 0.1 (Brier / ECE / entropy are small)."""
    if value == 0 or abs(value) >= 0.1:
        return f"{value:.3f}"
    return f"{value:.3g}"


def _count(value: Any) -> str:
    """A parameter count with thin-space-free digit groups (``1 643 848``), ``–`` when unknown."""
    return "–" if value is None else f"{int(value):,}".replace(",", " ")


def sweep_results_table(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """The sweep's table as shown in the docs: one row per (run, S), metrics over cases or folds.

    Parameters
    ----------
    rows : Sequence of Mapping
        :func:`~monai_bayes.evaluation.tables.metric_table_rows` rows with ``S`` (the evaluated
        sample count) and ``fold`` added.

    Returns
    -------
    header, cells
        Column names (``run``, ``S``, the reported metrics of :data:`SWEEP_METRICS`, ``folds``,
        ``params``, ``Bayesian params``, ``train FLOPs``, ``train time (s)``) and formatted cells:
        ``mean ± std`` over the test cases when one fold was run, over the folds' means when several
        were; costs are the first fold's (identical for every fold except the wall time, which is
        the mean).
    """
    metrics = [k for k in SWEEP_METRICS if any(r.get(k) is not None for r in rows)]
    groups: dict[tuple[str, int], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault((str(row["run"]), int(row["S"])), []).append(row)
    header = ["run", "S", *(SWEEP_METRICS[k] for k in metrics), "folds", "params", "Bayesian params"]
    header += ["train FLOPs", "train time (s)"]
    cells = []
    for (run, samples), group in groups.items():
        first = group[0]
        line = [run, str(samples)]
        line += [_cell([g.get(k) for g in group], [g.get(f"{k}_std") for g in group]) for k in metrics]
        flops = first.get("train_flops_total")
        times = [g["train_wall_seconds"] for g in group if g.get("train_wall_seconds")]
        line += [
            ", ".join(str(g["fold"]) for g in group),
            _count(first.get("params_total")),
            _count(first.get("params_bayesian")),
            f"{flops:.3g}" if flops else "–",
            f"{statistics.fmean(times):.0f}" if times else "–",
        ]
        cells.append(line)
    return header, cells


def _invocation() -> str:
    """The command line of this process (``python -m monai.bundle ...`` when run through MONAI's CLI)."""
    argv = list(sys.argv)
    if argv and Path(argv[0]).parts[-2:] == ("bundle", "__main__.py"):
        return "python -m monai.bundle " + shlex.join(argv[1:])
    return "python " + shlex.join(argv)


def _write_results_folder(
    folder: Path, header: list[str], cells: list[list[str]], rows: list[dict[str, Any]], seed: Any, notes: str
) -> None:
    """The sweep's results in the results contract (:mod:`monai_bayes.evaluation.results`)."""
    write_results_table(folder / "methods.csv", header, cells)
    _write_csv(folder / "runs.csv", rows)
    write_provenance(folder, _invocation(), seed, notes)
    if folder.resolve().parent.name == "results":  # results/<experiment> of a repository: register the figure
        name = folder.resolve().name
        figure = {
            "output": f"docs/images/{name}.png",
            "function": "monai_bayes.visualize:plot_results_csv",
            "inputs": [f"results/{name}/methods.csv"],
        }
        atomic_write_json(folder / "figures.json", [figure], indent=2)


def _write_sweep_outputs(
    out: Path,
    results: Path | None,
    rows: list[dict[str, Any]],
    summaries: list[dict[str, Any]],
    seed: Any,
    notes: str,
) -> str:
    """Write the sweep's output folder (and the results contract folder); return the Markdown table."""
    header, cells = sweep_results_table(rows)
    _write_csv(out / "table.csv", rows)
    write_results_table(out / "methods.csv", header, cells)
    table = render_table(out / "methods.csv")
    atomic_write_text(out / "table.md", table)
    atomic_write_json(out / "summaries.json", summaries)
    plot_results_csv([out / "methods.csv"], out / "comparison.png")
    if results is not None:
        _write_results_folder(results, header, cells, rows, seed, notes)
    return table


def run_sweep(
    bundle_root: str | os.PathLike,
    overrides: Mapping[str, Any] | None = None,
    r_bayes_values: Sequence[float] = FIG4_R_BAYES,
    baselines: Sequence[str] = ("ensemble", "deterministic", "mc_dropout"),
    output_dir: str | os.PathLike | None = None,
    resume: bool = True,
    sample_counts: Sequence[int] | None = None,
    folds: Sequence[int] | None = None,
    results_dir: str | os.PathLike | None = None,
    notes: str = "",
) -> Path:
    """Run the pipeline for every ``r_bayes`` (1.0 = full mean-field Bayes) and baseline, evaluate each
    at several sample counts and over several folds; write the comparison table and figure (seed 000
    Fig. 4).

    Parameters
    ----------
    bundle_root : str or os.PathLike
        The bundle folder.
    overrides : Mapping or None
        Settings for every step (as :func:`run_pipeline`).
    r_bayes_values : Sequence of float
        Fractions of Bayesian weights; ``1.0`` runs ``full_bayes``. Default: seed 000 Fig. 4's
        :data:`FIG4_R_BAYES`.
    baselines : Sequence of str
        Further registry methods (``ensemble``, ``deterministic``, ``mc_dropout``, ...).
    output_dir : str or os.PathLike or None
        Where ``table.csv`` (raw numbers, one row per run, ``S`` and fold), ``table.md``,
        ``methods.csv``, ``summaries.json`` and ``comparison.png`` go (default ``<runs_dir>/sweep``).
    resume : bool
        Skip training steps whose checkpoints exist.
    sample_counts : Sequence of int or None
        Evaluate every method at these MC sample counts ``S`` where it has them
        (:func:`sweep_sample_counts_for`: deterministic ``S = 1``, ensemble its sub-ensembles of the
        first ``S`` members and all ``M``); ``None``: once at the configured ``eval_samples``.
    folds : Sequence of int or None
        Cross-validation folds to run (e.g. ``[0, 1, 2, 3]``), each in ``<runs_dir>/fold<k>``; the
        table shows mean ± std over the folds' means. ``None``: the ``fold`` setting alone, in
        ``runs_dir``, with mean ± std over the test cases.
    results_dir : str or os.PathLike or None
        Also write the results contract there: ``methods.csv`` (the docs' table), ``runs.csv`` (raw
        numbers), ``provenance.json`` (command, commit, seed, machine, date, ``notes``) and, for
        ``results/<experiment>``, ``figures.json`` registering ``docs/images/<experiment>.png``.
    notes : str
        Free text for ``provenance.json`` (sizes run, caveats).

    Returns
    -------
    Path
        The output folder.

    Raises
    ------
    ValueError
        Before anything runs, for invalid overrides, r_bayes values, sample counts, folds or methods.
    """
    base = _clean(overrides)
    _check_sweep_settings(r_bayes_values, sample_counts, folds)
    variants = _variants(r_bayes_values, baselines)
    methods = list(dict.fromkeys(v["method"] for v in variants))
    validate_pipeline_overrides(bundle_root, base, methods=methods, where="sweep")
    defaults = _defaults(bundle_root, base)
    fold_settings: list[dict[str, Any]] = (
        [{}]
        if folds is None
        else [{"fold": k, "runs_dir": str(Path(defaults["runs_dir"]) / f"fold{k}")} for k in dict.fromkeys(folds)]
    )
    out = Path(output_dir) if output_dir is not None else Path(defaults["runs_dir"]) / "sweep"
    results = Path(results_dir) if results_dir is not None and str(results_dir) else None
    summaries: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    table = ""
    for fold_setting in fold_settings:
        for variant in variants:
            counts = sweep_sample_counts_for(variant["method"], sample_counts, int(defaults["ensemble_size"]))
            for i, samples in enumerate(counts):
                key = "ensemble_size" if method_spec(variant["method"]).mc_samples == "members" else "eval_samples"
                setting = {key: samples} if samples else {}
                logger.info("sweep: %s", {**fold_setting, **variant, **setting})
                summary = run_pipeline(
                    bundle_root, {**base, **fold_setting, **variant, **setting}, resume=resume or i > 0, publish=False
                )
                summaries.append(summary)
                row = metric_table_rows([summary], list(SWEEP_METRICS))[0]
                rows.append({**row, "S": summary.get("mc_samples", samples), "fold": summary.get("fold")})
                # written after every evaluation: an interrupted sweep leaves the table of what it finished
                table = _write_sweep_outputs(out, results, rows, summaries, defaults["seed"], notes)
    logger.info("sweep table:\n%s", table)
    return out
