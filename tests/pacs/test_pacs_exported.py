"""The PACS pipeline run from an exported ONNX artefact alone gives the bundle's DICOM SEG and uncertainty maps."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest

from monai_bayes.bundle.export import export_bundle_model
from monai_bayes.pacs import load_inference_bundle, run_pipeline
from monai_bayes.pacs.errors import BundleError


def _pixels(result) -> dict[tuple[str, int], np.ndarray]:
    out = {}
    for instance in result.instances:
        ds = pydicom.dcmread(result.directory / instance.file)
        key = (str(ds.get("SeriesDescription", ds.Modality)), int(ds.get("InstanceNumber", 0)))
        out[key] = ds.pixel_array.astype(np.float64)
    return out


@pytest.mark.slow  # one ONNX export of a one-conv network
def test_pipeline_from_the_onnx_artefact_matches_the_bundle(bundle_factory, ct_series, tmp_path):
    bundle = bundle_factory(tmp_path / "tiny_conv_2d", num_samples=4)
    artefact = export_bundle_model(
        bundle, tmp_path / "artefact" / "model.onnx", num_samples=4, patch_size=64, optimize=False
    )
    sidecar = json.loads((tmp_path / "artefact" / "model.onnx.json").read_text())
    assert (
        sidecar["bundle"]["metadata"]["name"] == "tiny_conv_2d_softmax"
        and "image_preprocessing" in (sidecar["bundle"]["inference"])
    )
    loaded = load_inference_bundle(artefact)
    assert loaded.num_samples == 4 and loaded.spatial_dims == 2 and loaded.method == "sparse_bayes"

    from_bundle = run_pipeline(bundle, input_dir=ct_series.folder, output_dir=tmp_path / "a", push=False).result
    from_onnx = run_pipeline(artefact, input_dir=ct_series.folder, output_dir=tmp_path / "b", push=False).result
    a, b = _pixels(from_bundle), _pixels(from_onnx)
    assert set(a) == set(b) and len(a) > 1 and sum(float(v.std()) > 0 for v in a.values()) > 1
    for key in a:
        scale = max(1.0, float(np.abs(a[key]).max()))
        assert np.abs(a[key] - b[key]).max() <= 1e-3 * scale, key  # same noise seed: same samples

    with pytest.raises(BundleError, match="S = 4"):
        load_inference_bundle(artefact, num_samples=3)
    (tmp_path / "artefact" / "model.onnx.json").unlink()
    with pytest.raises(BundleError, match="sidecar"):
        load_inference_bundle(artefact)
