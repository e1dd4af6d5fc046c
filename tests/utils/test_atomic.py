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


def test_durable_and_private_writes(tmp_path, monkeypatch):
    import os
    import stat

    from monai_bayes.utils import atomic

    synced: list[str] = []
    real_fsync = os.fsync
    monkeypatch.setattr(
        atomic.os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd))
    )
    atomic.atomic_write_json(tmp_path / "plain.json", {"b": 1, "a": 2})
    assert synced == []  # atomic but not durable by default
    atomic.atomic_write_json(tmp_path / "d.json", {"b": 1, "a": 2}, sort_keys=True, indent=2, durable=True, mode=0o600)
    assert (tmp_path / "d.json").read_text() == '{\n  "a": 2,\n  "b": 1\n}\n'
    assert stat.S_IMODE((tmp_path / "d.json").stat().st_mode) == 0o600
    assert any(p.endswith(".tmp.json") for p in synced) and str(tmp_path) in synced  # file, then its folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.json", "plain.json"]


def test_scratch_and_publish(tmp_path):
    import stat

    from monai_bayes.utils.atomic import publish_dir, restrict_tree, scratch_dir

    with scratch_dir(tmp_path, "job", private=True) as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "f.txt").write_text("x")
        (tmp / "done").write_text("")
        restrict_tree(tmp)
        assert publish_dir(tmp, tmp_path / "final", complete="done")
    assert (tmp_path / "final" / "sub" / "f.txt").read_text() == "x"
    assert stat.S_IMODE((tmp_path / "final" / "sub" / "f.txt").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "final" / "sub").stat().st_mode) == 0o700
    assert not (tmp_path / ".staging").exists()
    with scratch_dir(tmp_path, "job") as tmp:  # the same content published meanwhile: keep theirs
        (tmp / "done").write_text("")
        (tmp / "other").write_text("")
        assert not publish_dir(tmp, tmp_path / "final", complete="done")
    assert not (tmp_path / "final" / "other").exists()
    with scratch_dir(tmp_path, "job") as tmp:  # replace
        (tmp / "done").write_text("new")
        assert publish_dir(tmp, tmp_path / "final", complete="done", replace=True)
    assert sorted(p.name for p in (tmp_path / "final").iterdir()) == ["done"]
    with pytest.raises(ValueError, match="plain name"), scratch_dir(tmp_path, "../x"):
        pass
