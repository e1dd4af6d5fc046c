"""``monai-bayes synth …`` command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from monai_bayes.cli import main


def test_synth_lidc_with_prepare(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out, cache = tmp_path / "raw", tmp_path / "cache"
    rc = main(
        [
            "synth",
            "lidc",
            str(out),
            "--num-cases",
            "2",
            "--shape",
            "12",
            "96",
            "96",
            "--seed",
            "3",
            "--prepare",
            str(cache),
            "--patch-size",
            "32",
            "--no-progress",
        ]
    )
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert result["cases"] == 2 and (out / "manifest.json").is_file()
    assert (cache / "datalist.json").is_file() and result["training"] > 0


def test_synth_chestmnist_and_isic(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["synth", "chestmnist", str(tmp_path), "--num-train", "40", "--num-val", "5", "--num-test", "5"]) == 0
    assert (tmp_path / "chestmnist.npz").is_file()
    assert main(["synth", "isic", str(tmp_path / "isic"), "--num-cases", "3"]) == 0
    assert (tmp_path / "isic" / "ISIC2018_Task1-2_Training_Input").is_dir()


def test_errors_give_exit_code_1(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["synth", "prepare-lidc", str(tmp_path / "absent"), str(tmp_path / "c")]) == 1
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["synth", "nonsense"])
