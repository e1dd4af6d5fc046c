"""Write-then-rename cache folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from monai_bayes.utils.atomic import staging_dir


def test_failure_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), staging_dir(tmp_path / "cache") as tmp:
        (tmp / "half.npy").write_bytes(b"x")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_concurrent_builders_first_finisher_wins(tmp_path: Path) -> None:
    with staging_dir(tmp_path / "cache") as slow:
        (slow / "who").write_text("slow")
        with staging_dir(tmp_path / "cache") as fast:
            (fast / "who").write_text("fast")
    assert (tmp_path / "cache" / "who").read_text() == "fast"
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]


def test_overwrite_replaces_only_when_asked(tmp_path: Path) -> None:
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "old").write_text("x")
    with pytest.raises(FileExistsError), staging_dir(tmp_path / "cache"):
        pass
    with staging_dir(tmp_path / "cache", overwrite=True) as tmp:
        (tmp / "new").write_text("y")
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["new"]


def test_atomic_path_renames_on_success_and_cleans_up_on_failure(tmp_path):
    from monai_bayes.utils.atomic import atomic_path, atomic_write_text

    target = tmp_path / "sub" / "model.nii.gz"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.endswith(".nii.gz") and tmp != target
        tmp.write_bytes(b"done")
    assert target.read_bytes() == b"done"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("writer crashed")
    assert target.read_bytes() == b"done", "a failed write leaves the old file untouched"
    assert sorted(p.name for p in target.parent.iterdir()) == ["model.nii.gz"], "no temporary file left"
    atomic_write_text(tmp_path / "a.txt", "x")
    assert (tmp_path / "a.txt").read_text() == "x"
