"""MONAI Deploy App SDK operator (issue 21, step 4): the example app on a synthetic CT series folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pydicom
import pytest

from monai_bayes.pacs import run_pipeline

pytestmark = [pytest.mark.pacs, pytest.mark.deploy]


@pytest.mark.slow
def test_deploy_app_matches_pacs_run(ct_series, tiny_bundle, tmp_path, dciodvfy):
    """The app (loader → CT selector → MonaiBayesInferenceOperator) writes the same SEG and Parametric
    Maps as ``run_pipeline`` on the same folder: same deterministic UIDs, same pixels; dciodvfy-clean."""
    out = tmp_path / "app"
    cmd = [sys.executable, "-m", "monai_bayes.pacs.deploy", "--input", str(ct_series.folder), "--output", str(out)]
    cmd += ["--bundle", str(tiny_bundle)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stdout = proc.stdout
    [app] = json.loads(stdout[stdout.index("{") : stdout.rindex("}") + 1])["results"]
    assert app["status"] == "local" and app["study_instance_uid"] == ct_series.study_instance_uid
    assert sorted(i["kind"] for i in app["instances"]) == ["parametric_map", "parametric_map", "segmentation"]

    direct = run_pipeline(tiny_bundle, input_dir=ct_series.folder, output_dir=tmp_path / "direct", push=False)
    want = {i.sop_instance_uid: direct.result.directory / i.file for i in direct.result.instances}
    assert {i["sop_instance_uid"] for i in app["instances"]} == set(want)
    for inst in app["instances"]:
        path = os.path.join(app["result_dir"], inst["file"])
        got, ref = pydicom.dcmread(path), pydicom.dcmread(want[inst["sop_instance_uid"]])
        np.testing.assert_array_equal(got.pixel_array, ref.pixel_array)
        dciodvfy(path)
