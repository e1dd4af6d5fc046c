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
