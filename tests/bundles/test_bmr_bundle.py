"""``--method bmr`` and ``--method tiered_ff`` through the LIDC bundle at tiny size (issue 17, point 3)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from monai_bayes.bundle import (
    RunLayout,
    build_network,
    load_published_network,
    run_pipeline,
    validate_pipeline_overrides,
)
from monai_bayes.layers import HorseshoeBayesLayer, PartialBayesLayer, kl_divergence, sampling_mode
from monai_bayes.reduction import MASK_SUFFIX, prune_report

LIDC_BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "lidc_sparse_bayes"


def _network_def(overrides: dict) -> torch.nn.Module:
    parser = ConfigParser()
    parser.read_config([str(LIDC_BUNDLE / "configs" / "common.json")])
    parser.update({"bundle_root": str(LIDC_BUNDLE), **overrides})
    return parser.get_parsed_content("network_def")


@pytest.mark.slow
def test_bmr_method_prunes_and_is_evaluated(lidc_bundle, tiny, tmp_path):
    overrides = dict(tiny, runs_dir=str(tmp_path / "runs"), method="bmr", bmr_rounds=2, bmr_interval=1)
    summary = run_pipeline(lidc_bundle, overrides)
    assert summary["method"] == "bmr" and np.isfinite(summary["metrics"]["Dice"]["mean"])
    layout = RunLayout(tmp_path / "runs", "bmr")
    passes = json.loads((layout.run_dir / "prune_report.json").read_text())["passes"]
    assert len(passes) == 2 and passes[1]["pruned"] >= passes[0]["pruned"] > 0
    network = build_network(_network_def(overrides), "bmr", layout.model_checkpoint)
    assert any(isinstance(m, PartialBayesLayer) for m in network.modules())
    # the evaluated network is the pruned one: the stored masks hold, and their entries are exact zeros
    assert prune_report(network).pruned == passes[1]["pruned"]
    for name, mask in network.named_buffers():
        if name.endswith(MASK_SUFFIX):
            param = network.get_parameter(name[: -len(MASK_SUFFIX)])
            assert torch.count_nonzero(param[~mask]) == 0


@pytest.mark.slow
def test_tiered_ff_method_trains_horseshoe_layers(lidc_bundle, tiny, tmp_path):
    overrides = dict(tiny, runs_dir=str(tmp_path / "runs"), method="tiered_ff", bmr_rounds=1, hs_tau0=0.2)
    summary = run_pipeline(lidc_bundle, overrides)
    assert summary["method"] == "tiered_ff" and np.isfinite(summary["metrics"]["GED"]["mean"])
    layout = RunLayout(tmp_path / "runs", "tiered_ff")
    network = build_network(_network_def(overrides), "tiered_ff", layout.model_checkpoint)
    layers = [m for m in network.modules() if isinstance(m, HorseshoeBayesLayer)]
    assert layers and all(float(m.hs_tau0) == pytest.approx(0.2) for m in layers)
    assert summary["metrics"]["GED_sample_diversity"]["mean"] > 0
    # published: model.pt is the posterior-median network (plain architecture), model_bayes.pt rebuilds the posterior
    x = torch.randn(2, 1, 32, 32)
    plain = _network_def(overrides).eval()
    plain.load_state_dict(torch.load(lidc_bundle / "models" / "model.pt", weights_only=True), strict=True)
    published = load_published_network(_network_def(overrides), lidc_bundle / "models").eval()
    network.eval()
    with torch.no_grad(), sampling_mode(network, "mean"):
        assert torch.allclose(plain(x), network(x), atol=1e-5)
    assert float(kl_divergence(published)) == pytest.approx(float(kl_divergence(network)), rel=1e-6)


@pytest.mark.parametrize(
    "override, message",
    [
        ({"method": "bmr", "bmr_rounds": 0}, r"--bmr_rounds must be a positive int"),
        ({"method": "bmr", "bmr_gamma0": -0.1}, r"--bmr_gamma0 must be a number > 0"),
        ({"method": "bmr", "bmr_sigma_init": "wide"}, r"--bmr_sigma_init must be 'relative' or a number > 0"),
        ({"method": "tiered_ff", "hs_tau0": 0}, r"--hs_tau0 must be a number > 0"),
        ({"method": "tiered_ff", "bmr_gamma0": 0.1}, r"unknown setting 'bmr_gamma0'"),
        ({"method": "sparse_bayes", "bmr_rounds": 2}, r"unknown setting 'bmr_rounds'"),
    ],
)
def test_bmr_settings_are_validated(override, message):
    with pytest.raises(ValueError, match=message):
        validate_pipeline_overrides(LIDC_BUNDLE, override)


def test_bmr_settings_are_accepted():
    validate_pipeline_overrides(LIDC_BUNDLE, {"method": "bmr", "bmr_rounds": 3, "bmr_sigma_init": 0.01, "bmr_k_max": 2})
    validate_pipeline_overrides(LIDC_BUNDLE, {"method": "tiered_ff", "hs_tau0": 0.05, "bmr_interval": 2})
