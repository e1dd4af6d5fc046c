"""Multi-process (DDP, gloo, 2 CPU processes) training and selection equal single-process runs (issue 6, point 4)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from monai_bayes.bundle import run_config

DRIVER = Path(__file__).with_name("_dist_driver.py")

# deterministic data (majority vote instead of a random rater, no flips), instance norm and SGD, so
# the only difference between the runs is how the global batches are split over processes. (Adam
# would turn the round-off-level gradients of conv biases in front of instance norm -- zero in exact
# arithmetic -- into full-size steps of random sign.)
EXACT = {
    "network_def#norm": "instance",
    "optimizer_name": "sgd",
    "lr": 0.01,
    "class_weights": [1.0, 1.0],
    "val_interval": 1000,
    "train_data#augmentation": "$[monai_bayes.data.MajorityVoted(keys='label')]",
    "split": "$(lambda s: (s[0][:8], s[1][:4]))(monai_bayes.data.get_fold_split(@datalist, @fold))",
    "r_bayes": 0.05,
}
SALIENCY_DATA = {
    "saliency#preprocessing": "$monai.transforms.Compose("
    "@base_transforms + [monai_bayes.data.MajorityVoted(keys='label')])"
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(bundle: Path, step: str, overrides: dict) -> None:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        str(DRIVER),
        str(bundle),
        step,
        json.dumps(overrides),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-4000:]


@pytest.mark.dist
@pytest.mark.slow
def test_ddp_trains_and_selects_like_one_process(lidc_bundle, tiny, tmp_path):
    base = dict(tiny, **EXACT)
    single = dict(base, runs_dir=str(tmp_path / "single"), batch_size=4, **{"train_data#dataloader#shuffle": False})
    ddp = dict(base, runs_dir=str(tmp_path / "ddp"), batch_size=2, ddp_shuffle=False)  # 2 ranks x 2 = 4 per step

    run_config(lidc_bundle, ["train_deterministic"], single)
    _torchrun(lidc_bundle, "train_deterministic", ddp)
    a = torch.load(tmp_path / "single/deterministic/model.pt", weights_only=True)
    b = torch.load(tmp_path / "ddp/deterministic/model.pt", weights_only=True)
    assert set(a) == set(b)
    for key in a:  # same global batches, gradients averaged over ranks: the same training up to round-off
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-4, msg=key)

    # selection from the same trained model: identical masks
    shutil.copy(tmp_path / "single/deterministic/model.pt", tmp_path / "ddp/deterministic/model.pt")
    run_config(lidc_bundle, ["select"], dict(single, **SALIENCY_DATA))
    _torchrun(lidc_bundle, "select", dict(ddp, **SALIENCY_DATA))
    sa = torch.load(tmp_path / "single/sparse_bayes_r0.05/selected.pt", weights_only=True)
    sb = torch.load(tmp_path / "ddp/sparse_bayes_r0.05/selected.pt", weights_only=True)
    index_keys = sorted(k for k in sa if k.endswith("_bayes_index"))
    assert index_keys and index_keys == sorted(k for k in sb if k.endswith("_bayes_index"))
    for key in index_keys:
        assert torch.equal(sa[key], sb[key]), key
