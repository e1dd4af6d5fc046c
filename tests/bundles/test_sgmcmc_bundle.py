"""``--method sgmcmc`` in the LIDC bundle: cyclical SGHMC from the deterministic model, evaluated as an ensemble."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_bayes.bundle import RunLayout, build_network, run_pipeline, validate_pipeline_overrides
from monai_bayes.networks import DeepEnsemble, is_samples_file, load_samples


@pytest.mark.slow
def test_sgmcmc_pipeline_collects_cycle_end_samples(lidc_bundle, tiny, tmp_path):
    overrides = dict(
        tiny,
        runs_dir=str(tmp_path / "runs"),
        method="sgmcmc",
        sgmcmc_cycles=2,
        sgmcmc_epochs_per_cycle=1,
        sgmcmc_samples_per_cycle=2,
        eval_samples=4,
    )
    summary = run_pipeline(lidc_bundle, overrides)
    assert summary["method"] == "sgmcmc" and summary["mc_samples"] == 4
    assert np.isfinite(summary["metrics"]["Dice"]["mean"]) and summary["metrics"]["GED_sample_diversity"]["mean"] > 0
    layout = RunLayout(tmp_path / "runs", "sgmcmc")
    assert is_samples_file(layout.model_checkpoint) and not (lidc_bundle / "models" / "model.pt").exists()
    samples = load_samples(layout.model_checkpoint)
    assert len(samples) == 4
    weights = [k for k in samples.stacked if k.endswith("conv.weight")]
    stacked = samples.stacked[weights[0]]
    assert not torch.equal(stacked[0], stacked[1]) and not torch.equal(stacked[1], stacked[2])
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(lidc_bundle / "configs" / "common.json")])
    parser.update({"bundle_root": str(lidc_bundle), **overrides})
    network = build_network(parser.get_parsed_content("network_def"), "sgmcmc", layout.model_checkpoint)
    assert isinstance(network, DeepEnsemble) and len(network.members) == 4


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"sgmcmc_sampler": "sghcm"}, "sgmcmc_sampler must be one of"),
        ({"sgmcmc_momentum": 1.0}, r"sgmcmc_momentum must be a number in \[0, 1\)"),
        ({"sgmcmc_cycles": 0}, "sgmcmc_cycles must be a positive int"),
    ],
)
def test_bad_sgmcmc_settings_fail_before_training(lidc_bundle, override, message):
    with pytest.raises(ValueError, match=message):
        validate_pipeline_overrides(lidc_bundle, {"method": "sgmcmc", **override})


def test_sgmcmc_settings_belong_to_the_sgmcmc_step_only(lidc_bundle):
    validate_pipeline_overrides(lidc_bundle, {"method": "sgmcmc", "sgmcmc_lr": 0.05})
    with pytest.raises(ValueError, match="unknown setting 'sgmcmc_lr'"):
        validate_pipeline_overrides(lidc_bundle, {"method": "sparse_bayes", "sgmcmc_lr": 0.05})
