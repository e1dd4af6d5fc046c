"""The bundles' ``selection_region`` setting (issue 22, item 3): selection restricted to a named scope."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser
from monai.networks.nets import UNet

from monai_bayes.bundle import RunLayout, run_config, run_selection, validate_pipeline_overrides
from monai_bayes.bundle.steps import selection_summary_path
from monai_bayes.layers import mc_cost_split
from monai_bayes.networks.checkpoint import load_checkpoint, save_checkpoint
from monai_bayes.selection import SELECTION_REGIONS, num_selected, scope_modules

REPO = Path(__file__).resolve().parents[2]
LIDC = REPO / "bundles" / "lidc_sparse_bayes"

#: region -> the scope_modules call it stands for
EXPECTED_SCOPE = {
    "decoder": {"scope": "decoder"},
    "decoder_skipfree": {"scope": "decoder", "skip_readers": False},
    "last3": {"scope": "last", "last_n": 3},
}


def _unet() -> UNet:
    torch.manual_seed(0)
    return UNet(2, 1, 2, channels=(4, 8, 16), strides=(2, 2), num_res_units=1)


def _loader() -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [
        {"image": torch.randn(2, 1, 16, 16, generator=g), "label": torch.randint(0, 2, (2, 1, 16, 16), generator=g)}
        for _ in range(2)
    ]


def _loss(out: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(out, label[:, 0].long())


def _select(tmp_path: Path, name: str, **kwargs) -> tuple[dict[str, torch.Tensor], list[dict]]:
    det = tmp_path / "det.pt"
    if not det.is_file():
        save_checkpoint(_unet(), det)
    out, report = tmp_path / f"{name}.pt", tmp_path / name / "selection.json"
    report.parent.mkdir()
    run_selection(
        _unet(), "sparse_bayes", det, out, report, loader=_loader(), loss_function=_loss, r_bayes=0.05, **kwargs
    )
    return torch.load(out, weights_only=True), json.loads(report.read_text())


def test_all_is_the_selection_without_the_argument(tmp_path):
    before, rows_before = _select(tmp_path, "before")
    after, rows_after = _select(tmp_path, "all", region="all")
    assert rows_after == rows_before
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key
    summary = json.loads(selection_summary_path(tmp_path / "all" / "selection.json").read_text())
    assert summary["region"] == "all" and summary["modules"] is None and summary["num_samples"] == 8


@pytest.mark.parametrize("region", ["decoder", "decoder_skipfree", "last3"])
def test_bayesian_weights_lie_only_in_the_region(tmp_path, region):
    state, rows = _select(tmp_path, region, region=region, num_samples=4)
    example = _loader()[0]["image"][:1]
    expected = scope_modules(_unet(), example, **EXPECTED_SCOPE[region])
    bayes = {r["layer"] for r in rows if r["num_bayes"] > 0}
    assert bayes and bayes <= set(expected)
    index_modules = {k.rsplit(".", 1)[0] for k in state if k.endswith("_bayes_index")}
    assert index_modules <= set(expected)
    # r_bayes is the fraction of the region's entries
    region_entries = sum(r["num_params"] for r in rows if r["layer"] in expected)
    assert sum(r["num_bayes"] for r in rows) == num_selected(0.05, region_entries)
    # the summary's predicted cost is mc_cost_split of the converted network at S = num_samples
    summary = json.loads(selection_summary_path(tmp_path / region / "selection.json").read_text())
    assert summary["region"] == region and summary["modules"] == expected
    net = load_checkpoint(_unet(), tmp_path / f"{region}.pt").eval()
    with torch.no_grad():
        cost = mc_cost_split(net, example)
    assert summary["predicted_mc_cost"] == pytest.approx(cost.predicted_cost(4))
    assert summary["predicted_mc_cost"] < 1.0


def test_region_and_include_are_intersected_or_rejected(tmp_path):
    expected = scope_modules(_unet(), _loader()[0]["image"][:1], "last", last_n=3)
    _, rows = _select(tmp_path, "both", region="last3", include=[expected[-1]])
    assert {r["layer"] for r in rows if r["num_bayes"] > 0} == {expected[-1]}
    first = next(n for n, m in _unet().named_modules() if isinstance(m, torch.nn.Conv2d))
    with pytest.raises(ValueError, match=r"selection_region 'last3' .* share no module"):
        _select(tmp_path, "conflict", region="last3", include=[first])
    with pytest.raises(ValueError, match=r"selection_region must be one of \['all', 'decoder'"):
        _select(tmp_path, "typo", region="decoder_skip_free")
    with pytest.raises(ValueError, match="needs a loader"):
        run_selection(
            _unet(), "sparse_bayes", tmp_path / "det.pt", tmp_path / "x.pt", tmp_path / "x.json", region="decoder"
        )


@pytest.mark.parametrize("region", SELECTION_REGIONS)
def test_override_accepts_every_region(region):
    validate_pipeline_overrides(LIDC, {"selection_region": region})


def test_override_rejects_a_typo_naming_the_setting():
    with pytest.raises(ValueError, match=r"--selection_region must be one of \['all', 'decoder', 'decoder_skipfree'"):
        validate_pipeline_overrides(LIDC, {"selection_region": "decoder_skip_free"})


def test_bundle_select_step_with_a_region(lidc_bundle, tiny, tmp_path):
    """The select step of the LIDC bundle with ``--selection_region decoder_skipfree --sigma_init 0.02``."""
    overrides = dict(tiny, runs_dir=str(tmp_path / "runs"), selection_region="decoder_skipfree", sigma_init=0.02)
    layout = RunLayout(tmp_path / "runs", "sparse_bayes", 0.01)
    parser = ConfigParser()
    parser.read_config([str(lidc_bundle / "configs" / f"{n}.json") for n in ("common", "select")])
    parser.update({"bundle_root": str(lidc_bundle), **overrides})
    network = parser.get_parsed_content("network_def")
    save_checkpoint(network, layout.deterministic_checkpoint)  # an untrained model: the scope needs no training
    run_config(lidc_bundle, ["select"], overrides)
    example = torch.zeros(1, 1, tiny["patch_size"], tiny["patch_size"])
    expected = scope_modules(network, example, "decoder", skip_readers=False)
    rows = json.loads(layout.selection_report.read_text())
    assert {r["layer"] for r in rows if r["num_bayes"] > 0} <= set(expected)
    summary = json.loads(selection_summary_path(layout.selection_report).read_text())
    assert summary["region"] == "decoder_skipfree" and summary["modules"] == expected
    assert summary["num_samples"] == tiny["eval_samples"] and 0 < summary["predicted_mc_cost"] < 1
    rhos = [v for k, v in torch.load(layout.selected_checkpoint, weights_only=True).items() if k.endswith("_rho")]
    assert rhos  # --sigma_init 0.02 reached the step: every initial sigma = softplus(rho) is 0.02
    torch.testing.assert_close(
        torch.cat([torch.nn.functional.softplus(r).reshape(-1) for r in rhos]).unique(), torch.tensor([0.02])
    )
