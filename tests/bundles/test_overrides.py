"""Pipeline / sweep overrides: every id of every step config reaches the steps; bad ones fail before any step."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from monai.bundle import ConfigParser, run

import monai_bayes.bundle.runner as runner
from monai_bayes.bundle import config_overrides, setting_defaults, validate_overrides, validate_pipeline_overrides

REPO = Path(__file__).resolve().parents[2]
LIDC = REPO / "bundles" / "lidc_sparse_bayes"


class _FirstStepError(Exception):
    """Raised by the stand-in for run_config: the pipeline reached its first step."""


@pytest.fixture
def first_step(monkeypatch) -> list:
    """Replace the step runner: record (configs, overrides) of the first step and stop there."""
    calls: list = []

    def record(bundle_root, names, overrides=None):
        calls.append((list(names), dict(overrides or {})))
        raise _FirstStepError

    monkeypatch.setattr(runner, "run_config", record)
    return calls


def _run_pipeline_config(bundle: Path, config: str = "pipeline", **override) -> None:
    try:
        run(config_file=str(bundle / "configs" / f"{config}.json"), bundle_root=str(bundle), **override)
    except RuntimeError as err:  # MONAI wraps errors of config expressions
        if not isinstance(err.__cause__, _FirstStepError):
            raise err.__cause__ or err from err


@pytest.mark.parametrize("config", ["pipeline", "sweep"])
def test_weight_decay_reaches_the_training_step(first_step, lidc_bundle, tmp_path, config):
    """The acceptance command: ``monai.bundle run --config_file pipeline.json --weight_decay 0.5``."""
    _run_pipeline_config(lidc_bundle, config, weight_decay=0.5, rho_lr=0.002, runs_dir=str(tmp_path))
    names, overrides = first_step[0]
    assert names == ["train_deterministic"]
    # the sweep's first run: 1 % partial Bayes evaluated at the first of sweep.json's sample_counts
    variant = {"method": "sparse_bayes", "r_bayes": 0.01, "eval_samples": 1} if config == "sweep" else {}
    assert overrides == {"weight_decay": 0.5, "rho_lr": 0.002, "runs_dir": str(tmp_path), **variant}
    # ... and the training step builds its optimizer with it
    parser = ConfigParser()
    parser.read_config([str(lidc_bundle / "configs" / f"{n}.json") for n in ("common", *names)])
    parser.update({"bundle_root": str(lidc_bundle), "device": "cpu", **overrides})
    optimizer = parser.get_parsed_content("optimizer")
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.5]


def test_every_step_setting_is_forwarded_without_a_list(first_step, lidc_bundle, tmp_path):
    settings = {"patch_size": 64, "momentum": 0.9, "val_interval": 3, "hu_window": [-900, 300], "num_workers": 1}
    _run_pipeline_config(lidc_bundle, runs_dir=str(tmp_path), **settings)
    assert first_step[0][1] == {**settings, "runs_dir": str(tmp_path)}
    own = ConfigParser.load_config_file(str(LIDC / "configs" / "pipeline.json"))
    assert set(own) & set(setting_defaults([LIDC / "configs" / "common.json"])) == {"bundle_root"}  # no forwarding list


@pytest.mark.parametrize(
    "override, message",
    [
        ({"weight_decai": 0.5}, r"unknown setting 'weight_decai'.*nearest valid: 'weight_decay'"),
        ({"num_samples": 0}, r"--num_samples must be a positive int \(>= 1\), got 0"),
        ({"eval_samples": 0}, r"--eval_samples must be a positive int \(>= 1\), got 0"),
        ({"lr": "fast"}, r"--lr must be a number > 0, got 'fast'"),
        ({"mc_dropout_p": 1.0}, r"--mc_dropout_p must be a number in \[0, 1\)"),
        ({"method": "sparse_bayse"}, r"Did you mean 'sparse_bayes'"),
        ({"dataset_dir": "/no/such/folder"}, r"--dataset_dir must be an existing file or folder"),
        ({"r_bayes": 0}, r"--r_bayes must be a number in \(0, 1\]"),
    ],
)
def test_bad_overrides_fail_before_the_first_step(first_step, lidc_bundle, tmp_path, override, message):
    with pytest.raises(ValueError, match=message):
        _run_pipeline_config(lidc_bundle, runs_dir=str(tmp_path), **override)
    assert first_step == []


def test_several_problems_are_reported_together(tmp_path):
    files = [LIDC / "configs" / f"{n}.json" for n in ("common", "train_deterministic", "select", "train", "evaluate")]
    with pytest.raises(ValueError) as info:
        validate_overrides({"num_samples": 0, "batch_sise": 4, "seed": -1}, files)
    text = str(info.value)
    assert "num_samples" in text and "'batch_size'" in text and "--seed must be an int >= 0" in text


@pytest.mark.parametrize("source", ["synthetic", "real-annotations", ""])
def test_built_in_dataset_sources_are_valid(source):
    validate_pipeline_overrides(LIDC, {"dataset_dir": source})


def test_nested_ids_and_expressions_are_accepted():
    validate_pipeline_overrides(LIDC, {"network_def#channels": [4, 8], "device": "$torch.device('cpu')"})
    with pytest.raises(ValueError, match="unknown setting 'network_def#chanels'"):
        validate_pipeline_overrides(LIDC, {"network_def#chanels": [4, 8]})


def test_ids_of_the_methods_own_steps_only():
    """``beta_start`` belongs to train.json, which a deterministic run does not use."""
    validate_pipeline_overrides(LIDC, {"beta_start": 0.1})
    with pytest.raises(ValueError, match="unknown setting 'beta_start'"):
        validate_pipeline_overrides(LIDC, {"method": "deterministic", "beta_start": 0.1})


def test_config_overrides_are_the_entries_the_file_does_not_define():
    parser = ConfigParser()
    parser.read_config(str(LIDC / "configs" / "pipeline.json"))
    parser.update({"weight_decay": 0.5, "resume": False})
    parser.read_meta({"version": "0"})
    assert config_overrides(LIDC / "configs" / "pipeline.json", parser) == {"weight_decay": 0.5}
    with pytest.raises(RuntimeError, match="must be called from a bundle config expression"):
        config_overrides(LIDC / "configs" / "pipeline.json")


@pytest.mark.parametrize("bad", ["--weight_decai", "--num_samples", "--eval_samples"])
def test_cli_fails_before_the_first_step(lidc_bundle, tmp_path, bad):
    """The acceptance commands fail in validation (timed in benchmarks/bundle_override_errors.py, not here)."""
    value = "0.5" if bad == "--weight_decai" else "0"
    command = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        str(lidc_bundle / "configs" / "pipeline.json"),
    ]
    command += ["--bundle_root", str(lidc_bundle), "--runs_dir", str(tmp_path), bad, value]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1")
    )
    assert done.returncode != 0
    assert "invalid settings, nothing was run" in done.stderr and bad.lstrip("-") in done.stderr
    assert not (tmp_path / "deterministic").exists() and "] train_deterministic" not in done.stderr + done.stdout


def _step_configs_trained_with_the_common_optimizer() -> list[Path]:
    """Every step config of every bundle whose trainer steps common.json's ``optimizer``."""
    steps = []
    for path in sorted((REPO / "bundles").glob("*/configs/*.json")):
        config = ConfigParser.load_config_file(str(path))
        trainer = config.get("train", {}).get("trainer", {}) if isinstance(config.get("train"), dict) else {}
        if trainer.get("optimizer") == "@optimizer" and "optimizer" not in config:
            steps.append(path)
    return steps


def test_lr_schedule_reaches_every_step_trained_with_lr():
    """``--lr_schedule`` is not silently ignored: each step stepping ``@optimizer`` attaches the schedule handler."""
    steps = _step_configs_trained_with_the_common_optimizer()
    names = {f"{p.parts[-3]}/{p.stem}" for p in steps}
    expected = {"lidc_sparse_bayes/train", "lidc_sparse_bayes/train_deterministic", "lidc_nested_unet/train_nested"}
    assert expected <= names
    assert "lidc_sparse_bayes/train_sgmcmc" not in names  # its own sampler and cyclical schedule
    for path in steps:
        handlers = ConfigParser.load_config_file(str(path))["train"]["handlers"]
        assert "@lr_schedule_handler" in handlers, f"{path} trains with @optimizer but has no lr schedule"


def test_lr_schedule_setting_builds_the_handler_on_the_step_optimizer(lidc_bundle):
    parser = ConfigParser()
    parser.read_config([str(lidc_bundle / "configs" / f"{n}.json") for n in ("common", "train_deterministic")])
    parser.update({"bundle_root": str(lidc_bundle), "device": "cpu", "lr_schedule": "cosine"})
    handler = parser.get_parsed_content("lr_schedule_handler")
    assert handler.schedule == "cosine"
    assert handler.optimizer is parser.get_parsed_content("optimizer")
    with pytest.raises(ValueError, match=r"--lr_schedule must be one of .*'constant'.*'step'"):
        validate_overrides({"lr_schedule": "step"}, [lidc_bundle / "configs" / "common.json"])
