"""The LIDC crop pickle: restricted unpickler (never runs code) and conversion to the cache."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from monai_bayes.data import DataFormatError, UnsafePickleError, convert_lidc_pickle, load_lidc_pickle, safe_load_pickle


class _RunsCode:
    """Unpickling this calls os.system (what an attacker would put in a shared pickle)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Evil:
    def __reduce__(self):
        return (eval, ("__import__('os').getcwd()",))


def _entries(n_patients: int = 5, per_patient: int = 3, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    data = {}
    for p in range(n_patients):
        for s in range(per_patient):
            image = rng.random((32, 32)).astype(np.float32)
            masks = [(rng.random((32, 32)) > 0.8).astype(np.uint8) for _ in range(4)]
            masks[3][:] = 0  # a rater who did not mark it
            data[f"LIDC-IDRI-{p + 1:04d}_slice{s}"] = {"image": image, "masks": masks, "series_uid": f"1.2.{p}"}
    return data


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_plain_arrays_load_for_every_protocol(tmp_path: Path, protocol: int) -> None:
    data = _entries(2, 2)
    path = tmp_path / "lidc.pickle"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    records = load_lidc_pickle(path)
    assert len(records) == 4
    r = records[0]
    np.testing.assert_array_equal(r["image"], data[r["key"]]["image"])
    assert r["masks"].shape == (4, 32, 32) and r["patient_id"] == "LIDC-IDRI-0001"


def test_code_executing_pickle_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"a": {"image": np.zeros((2, 2)), "masks": [_RunsCode(marker)]}})
    path = tmp_path / "evil.pickle"
    path.write_bytes(payload)
    with pytest.raises(pickle.UnpicklingError, match=r"posix\.system|os\.system|nt\.system"):
        load_lidc_pickle(path)
    assert not marker.exists()
    with pytest.raises(UnsafePickleError, match=r"builtins\.eval"):
        safe_load_pickle(pickle.dumps(_Evil()))
    assert issubclass(UnsafePickleError, ValueError)


def test_object_arrays_and_classes_are_refused() -> None:
    with pytest.raises(UnsafePickleError, match="object dtype"):
        safe_load_pickle(pickle.dumps(np.array([{"x": 1}], dtype=object)))
    with pytest.raises(UnsafePickleError, match="pathlib"):
        safe_load_pickle(pickle.dumps(Path("/etc")))


def test_malformed_entries(tmp_path: Path) -> None:
    data = _entries(2, 1)
    data["bad"] = {"image": np.zeros((32, 32))}
    path = tmp_path / "lidc.pickle"
    path.write_bytes(pickle.dumps(data))
    with pytest.raises(DataFormatError, match=r"'bad' lacks \['masks'\]"):
        load_lidc_pickle(path)
    from monai_bayes.data import SkipReport

    report = SkipReport()
    assert len(load_lidc_pickle(path, on_error="skip", report=report)) == 2
    assert "bad" in report.skipped[0]["item"]
    path.write_bytes(b"not a pickle at all")
    with pytest.raises(DataFormatError, match="not a readable pickle"):
        load_lidc_pickle(path)


def test_convert_to_cache_with_patient_folds(tmp_path: Path) -> None:
    path = tmp_path / "lidc.pickle"
    path.write_bytes(pickle.dumps(_entries(8, 3), protocol=4))
    dl = convert_lidc_pickle(path, tmp_path / "cache", seed=3, show_progress=False)
    data = json.loads(dl.read_text())
    items = data["training"]
    assert len(items) == 24 and data["num_raters"] == 4
    folds = {}
    for it in items:
        assert folds.setdefault(it["patient_id"], it["fold"]) == it["fold"]
        label = np.load(dl.parent / it["label"])
        image = np.load(dl.parent / it["image"])
        assert label.shape == (4, 32, 32) and image.shape == (1, 32, 32)
        assert it["raters"][3] is False
    assert sorted(set(folds.values())) == [0, 1, 2, 3]
    assert convert_lidc_pickle(path, tmp_path / "cache", seed=3, show_progress=False) == dl  # reused
