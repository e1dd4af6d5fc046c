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
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["sizes"] == {"train": 40, "val": 5, "test": 5} and result["medmnist_loadable"] is False
    assert "medmnist.ChestMNIST opens it but its len() / DataLoader fail (use --official-sizes)" in captured.err
    assert main(["synth", "isic", str(tmp_path / "isic"), "--num-cases", "3"]) == 0
    assert (tmp_path / "isic" / "ISIC2018_Task1-2_Training_Input").is_dir()


def test_errors_give_exit_code_1(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["data", "prepare", "lidc", str(tmp_path / "absent"), str(tmp_path / "c")]) == 1
    err = capsys.readouterr().err
    assert "monai-bayes data prepare: error:" in err and "does not exist" in err
    assert main(["synth", "chestmnist", str(tmp_path), "--official-sizes", "--num-train", "10"]) == 1
    assert "do not also pass --num-train" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["synth", "nonsense"])


def test_data_prepare_isic_and_deprecated_alias(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    raw = tmp_path / "isic"
    assert main(["synth", "isic", str(raw), "--num-cases", "4"]) == 0
    capsys.readouterr()
    assert main(["data", "prepare", "isic", str(raw), str(tmp_path / "new"), "--size", "32", "--no-progress"]) == 0
    captured = capsys.readouterr()
    new = json.loads(captured.out)
    assert "deprecated" not in captured.err and (tmp_path / "new" / "datalist.json").is_file()
    assert main(["synth", "prepare-isic", str(raw), str(tmp_path / "old"), "--size", "32", "--no-progress"]) == 0
    captured = capsys.readouterr()
    old = json.loads(captured.out)
    warning = [line for line in captured.err.splitlines() if "deprecated" in line]
    assert warning == [
        "monai-bayes: warning: 'monai-bayes synth prepare-isic' is deprecated and will be removed;"
        " use 'monai-bayes data prepare isic'"
    ]
    assert {k: v for k, v in old.items() if k != "datalist"} == {k: v for k, v in new.items() if k != "datalist"}
    old_list = json.loads((tmp_path / "old" / "datalist.json").read_text())
    new_list = json.loads((tmp_path / "new" / "datalist.json").read_text())
    assert [Path(d["image"]).name for d in old_list["test"]] == [Path(d["image"]).name for d in new_list["test"]]


def test_data_prepare_kinds_match_the_deprecated_aliases() -> None:
    """Every ``synth prepare-X`` alias has a ``data prepare X`` verb with the same options."""
    from monai_bayes.cli import build_parser

    def options(argv: list[str]) -> set[str]:
        parser = build_parser(argv)
        sub = parser._subparsers._group_actions[0].choices[argv[0]]  # type: ignore[union-attr]
        for word in argv[1:]:
            sub = sub._subparsers._group_actions[0].choices[word]  # type: ignore[union-attr]
        return {o for a in sub._actions for o in a.option_strings} | {a.dest for a in sub._actions}

    for kind in ("lidc", "lidc-pickle", "isic"):
        assert options(["data", "prepare", kind]) == options(["synth", f"prepare-{kind}"])
