"""``monai-bayes export``: the bundle's published partial-Bayes model as a torch.export artefact with noise inputs."""

from __future__ import annotations

import json

import pytest
import torch

from monai_bayes.bundle import load_published_network
from monai_bayes.bundle.export import _network_def, export_bundle_model
from monai_bayes.cli import build_parser
from monai_bayes.export import NoiseInputNetwork, load_program
from monai_bayes.networks import to_partial_bayes
from monai_bayes.selection import select_topk

TINY_NET = {"network_def#channels": [4, 8, 16], "network_def#strides": [2, 2], "network_def#num_res_units": 1}


def _publish_partial_bayes(bundle) -> None:
    torch.manual_seed(0)
    network = _network_def(bundle, TINY_NET)
    base_keys = set(network.state_dict())
    scores = {n: torch.rand_like(p) for n, p in network.named_parameters() if p.dim() > 1}
    state = to_partial_bayes(network, select_topk(scores, 0.05)).state_dict()
    models = bundle / "models"
    models.mkdir(exist_ok=True)
    torch.save({k: v for k, v in state.items() if k in base_keys}, models / "model.pt")
    torch.save({k: v for k, v in state.items() if k not in base_keys}, models / "model_bayes.pt")
    (models / "model.json").write_text(json.dumps({"method": "sparse_bayes", "extras": "model_bayes.pt"}))


@pytest.mark.slow
def test_exported_bundle_model_samples_like_the_published_network(lidc_bundle, tmp_path):
    _publish_partial_bayes(lidc_bundle)
    out = export_bundle_model(lidc_bundle, tmp_path / "m.pt2", num_samples=3, patch_size=32, overrides=TINY_NET)
    sidecar = json.loads((tmp_path / "m.pt2.json").read_text())
    assert sidecar["inputs"]["image"] == [1, 1, 32, 32] and sidecar["model"]["method"] == "sparse_bayes"
    reference = NoiseInputNetwork(
        load_published_network(_network_def(lidc_bundle, TINY_NET), lidc_bundle / "models"), 3
    )
    assert len(sidecar["inputs"]) == 1 + len(reference.noise_names)
    x = torch.randn(1, 1, 32, 32)
    noise = reference.draw_noise(torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(load_program(out)(x, *noise), reference(x, *noise), atol=1e-4, rtol=1e-4)


def test_export_command_and_bad_output(lidc_bundle, tmp_path):
    args = build_parser(["export"]).parse_args(["export", str(lidc_bundle), "m.onnx", "--num-samples", "4"])
    assert args.num_samples == 4 and args.patch == 128
    with pytest.raises(ValueError, match=r"\.onnx or \.pt2"):
        export_bundle_model(lidc_bundle, tmp_path / "m.bin")
