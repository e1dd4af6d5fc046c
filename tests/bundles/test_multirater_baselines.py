"""Prob. U-Net, SSN and BN3-on-the-latent as ``--method`` of the LIDC bundle: no step 1, own network, same evaluator."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from monai_bayes.bundle import RunLayout, build_network, pipeline_steps, run_pipeline, validate_pipeline_overrides
from monai_bayes.inferers import MonteCarloInferer
from monai_bayes.layers import GaussianLatent, LowRankLogits, NestedLatentMask, stochastic_layers
from monai_bayes.workflows import method_spec

LAYER = {"prob_unet": GaussianLatent, "bn3_prob_unet": NestedLatentMask, "ssn": LowRankLogits}


@pytest.mark.parametrize("method", ["prob_unet", "ssn", "bn3_prob_unet"])
def test_method_skips_step_one_and_runs_its_own_training(method, tmp_path):
    spec = method_spec(method)
    assert not spec.pretrain and spec.configs == (spec.train_config, "evaluate")
    layout = RunLayout(tmp_path, method)
    steps = pipeline_steps(layout)
    assert [s.config for s in steps] == [spec.train_config, "evaluate"]
    assert steps[0].output == layout.model_checkpoint == tmp_path / method / "model.pt"
    assert set(layout.cost_files) == {"train"}  # no deterministic pretraining cost


def test_bad_baseline_overrides_fail_before_anything_runs(lidc_bundle):
    with pytest.raises(ValueError, match="latent_prior_keep"):
        validate_pipeline_overrides(lidc_bundle, {"method": "bn3_prob_unet", "latent_prior_keep": 1.0})
    with pytest.raises(ValueError, match="ssn_rank"):
        validate_pipeline_overrides(lidc_bundle, {"method": "ssn", "ssn_rank": 0})
    with pytest.raises(ValueError, match="latent_dim"):  # a prob_unet setting is not a setting of ssn
        validate_pipeline_overrides(lidc_bundle, {"method": "ssn", "latent_dim": 4})


def test_bn3_prob_unet_config_builds_a_nested_latent(lidc_bundle, tmp_path):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(lidc_bundle / "configs" / f"{n}.json") for n in ("common", "train_prob_unet")])
    parser.update({"bundle_root": str(lidc_bundle), "runs_dir": str(tmp_path), "method": "bn3_prob_unet"})
    parser.update({"latent_dim": 4, "latent_temperature": 0.7, "latent_straight_through": False})
    network = parser.get_parsed_content("network")
    (mask,) = [m for _, m in stochastic_layers(network) if isinstance(m, NestedLatentMask)]
    assert (mask.nested_groups, mask.temperature, mask.straight_through) == (4, 0.7, False)
    settings = json.loads(RunLayout(tmp_path, "bn3_prob_unet").network_settings.read_text())
    assert settings["nested"]["temperature"] == 0.7  # what the evaluate step rebuilds


@pytest.mark.slow
@pytest.mark.parametrize("method", ["prob_unet", "ssn"])
def test_multirater_baseline_pipeline(lidc_bundle, tiny, tmp_path, method):
    extra = {"ssn_rank": 2, "ssn_mc_samples": 4} if method == "ssn" else {"latent_dim": 3}
    overrides = dict(tiny, runs_dir=str(tmp_path / "runs"), method=method, baseline_epochs=1, **extra)
    summary = run_pipeline(lidc_bundle, overrides)
    assert summary["method"] == method and summary["mc_samples"] == tiny["eval_samples"]
    for metric in ("GED", "GED_hm_iou", "GED_sample_diversity"):
        assert np.isfinite(summary["metrics"][metric]["mean"])
    layout = RunLayout(tmp_path / "runs", method)
    settings = json.loads(layout.network_settings.read_text())
    assert "nested" not in settings
    assert not (tmp_path / "runs" / "deterministic").exists()  # no step 1
    assert not (lidc_bundle / "models" / "model.pt").exists()  # own architecture: not published as network_def
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(lidc_bundle / "configs" / "common.json"))
    parser.update({"bundle_root": str(lidc_bundle), **overrides})
    network = build_network(parser.get_parsed_content("network_def"), method, layout.model_checkpoint)
    assert any(isinstance(layer, LAYER[method]) for _, layer in stochastic_layers(network))
    network.eval()
    x = torch.rand(2, 1, tiny["patch_size"], tiny["patch_size"])
    probs = MonteCarloInferer(4, seed=0)(x, network)  # (B, S, C, H, W)
    assert float(probs.std(dim=1).max()) > 0  # the samples differ: the latent / covariance is used


def test_nested_bundle_offers_straight_through():
    from pathlib import Path

    from monai_bayes.bundle.overrides import validate_overrides

    configs = Path(__file__).resolve().parents[2] / "bundles" / "lidc_nested_unet" / "configs"
    files = [configs / f"{n}.json" for n in ("common", "nested", "train_nested")]
    validate_overrides({"nested_straight_through": True}, files)
    with pytest.raises(ValueError, match="nested_straight_through"):
        validate_overrides({"nested_straight_through": "yes"}, files)
    assert "straight_through=@nested_straight_through" in (configs / "train_nested.json").read_text()
