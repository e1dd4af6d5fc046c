"""``bmr`` and ``tiered_ff`` in the ChestMNIST classification workflow (seed 002 wired into the classifier)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from monai_bayes.bundle import ChestMNISTPipeline
from monai_bayes.bundle.chestmnist import bmr_pass_rows
from monai_bayes.data.synthetic import write_chestmnist_npz
from monai_bayes.layers import HorseshoeBayesLayer
from monai_bayes.reduction import MASK_SUFFIX, prune_report
from monai_bayes.workflows.classification import (
    ClassificationTraining,
    load_classification_data,
    predict_samples,
    train_classifier,
)

SETTINGS = ClassificationTraining(
    deterministic_epochs=1, bayes_epochs=1, batch_size=32, num_samples=1, bmr_rounds=2, bmr_interval=1, hs_tau0=0.05
)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    path = write_chestmnist_npz(tmp_path_factory.mktemp("cxr") / "c.npz", 64, 8, 16, size=28, seed=0)
    return load_classification_data(path)


def _masks(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: b for n, b in net.named_buffers() if n.endswith(MASK_SUFFIX)}


def test_bmr_prunes_the_classifier_and_resumes(tmp_path: Path, data) -> None:  # type: ignore[no-untyped-def]
    run = tmp_path / "run_0"
    result = train_classifier("bmr", data, run, width=4, settings=SETTINGS)
    net = result.network
    assert set(result.costs) == {"deterministic", "bmr"} and (run / "deterministic.pt").is_file()
    masks = _masks(net)
    assert masks, "no BMR mask buffers"
    # pruned entries are exactly zero in the means (mask False <=> value 0 for every pruned entry)
    params = dict(net.named_parameters())
    pruned = 0
    for name, keep in masks.items():
        value = params[name[: -len(MASK_SUFFIX)]]
        assert torch.all(value.detach()[~keep] == 0)
        pruned += int((~keep).sum())
    assert pruned > 0
    # the report counts what the masks say (independent count over the buffers), and the passes are on disk
    report = prune_report(net)
    assert report.pruned == pruned and 0 < report.fraction < 1
    passes = json.loads((run / "bmr_prune_report.json").read_text())["passes"]
    assert len(passes) == SETTINGS.bmr_rounds
    fractions = [p["fraction"] for p in passes]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(report.fraction)
    rows = bmr_pass_rows(run / "bmr_prune_report.json")
    assert [r["pass"] for r in rows] == ["1", "2"] and rows[-1]["pruned fraction"] == f"{report.fraction:.3f}"
    probs = predict_samples(net, data.images["test"], num_samples=2)
    assert probs.shape == (16, 2, 14) and torch.isfinite(probs).all()
    # a rerun resumes the saved pruned network (masks and zeros included) without training
    again = train_classifier("bmr", data, run, width=4, settings=SETTINGS)
    assert again.costs == {}
    state, resumed = net.state_dict(), again.network.state_dict()
    assert state.keys() == resumed.keys()
    assert all(torch.equal(state[k], resumed[k]) for k in state)


def test_tiered_ff_shares_the_deterministic_step(tmp_path: Path, data) -> None:  # type: ignore[no-untyped-def]
    run = tmp_path / "run_0"
    train_classifier("deterministic", data, run, width=4, settings=SETTINGS)
    result = train_classifier("tiered_ff", data, run, width=4, settings=SETTINGS)
    assert set(result.costs) == {"tiered_ff"}  # deterministic.pt reused
    layers = [m for m in result.network.modules() if isinstance(m, HorseshoeBayesLayer)]
    assert layers and all(float(m.hs_tau0) == pytest.approx(0.05) for m in layers)
    # β = 1 for bayes_epochs + rounds · interval epochs, on the classifier's Adam
    epochs = SETTINGS.bayes_epochs + SETTINGS.bmr_rounds * SETTINGS.bmr_interval
    assert len(result.costs["tiered_ff"]["epoch_seconds"]) == epochs
    probs = predict_samples(result.network, data.images["test"], num_samples=2)
    assert probs.shape == (16, 2, 14) and not torch.equal(probs[:, 0], probs[:, 1])


def test_reduction_settings_are_validated(tmp_path: Path) -> None:
    for bad in ({"bmr_rounds": 0}, {"bmr_interval": 1.5}, {"bmr_gamma0": 0.0}, {"hs_tau0": -1.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ClassificationTraining(**bad)  # type: ignore[arg-type]
    ChestMNISTPipeline(methods=("deterministic", "bmr", "tiered_ff"))  # registry methods accepted
    (tmp_path / "r.json").write_text("{}")
    with pytest.raises(ValueError, match=r"r\.json"):
        bmr_pass_rows(tmp_path / "r.json")
