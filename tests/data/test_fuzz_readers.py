"""Seeded mutation fuzzing of the DICOM reader, the LIDC XML reader and the crop-pickle reader.

Valid files are damaged the way transfers, disks and hostile senders damage them: flipped bytes,
truncations, 0xFF runs over length fields, swapped VR codes, duplicated or dropped chunks. Every
outcome must be a result or a :class:`DataFormatError` — never another exception, a hang, or a file
outside the output folder. Each reader gets a fixed number of mutants and a time budget, so the whole
module stays well under 60 s on one CPU core.
"""

from __future__ import annotations

import pickle
import random
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from monai_bayes.data import DataFormatError, convert_lidc_pickle, safe_load_pickle
from monai_bayes.data.dicom import read_dicom_series
from monai_bayes.data.lidc_xml import parse_lidc_xml

#: Mutants per reader and the wall-clock budget per reader (seconds); the loop stops at either.
NUM_MUTANTS = 300
BUDGET_S = 15.0
_VRS = [b"AE", b"AS", b"CS", b"DA", b"DS", b"FD", b"FL", b"IS", b"LO", b"OB", b"OW", b"SQ", b"UI", b"UL", b"US", b"UN"]


def _mutate(data: bytes, rng: random.Random) -> bytes:
    """One random damage of ``data``."""
    b = bytearray(data)
    kind = rng.randrange(7)
    if kind == 0:  # flip a few bytes
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
    elif kind == 1:  # truncate
        del b[rng.randrange(len(b)) :]
    elif kind == 2:  # huge length field: 0xFF run
        i = rng.randrange(max(1, len(b) - 4))
        b[i : i + 4] = b"\xff\xff\xff\x7f" if rng.random() < 0.5 else b"\xff\xff\xff\xff"
    elif kind == 3:  # swap a VR code (explicit VR DICOM) or any two-letter token
        positions = [i for i in range(0, len(b) - 2) if bytes(b[i : i + 2]) in _VRS]
        if positions:
            i = rng.choice(positions)
            b[i : i + 2] = rng.choice(_VRS)
        else:
            b[rng.randrange(len(b))] = rng.randrange(256)
    elif kind == 4:  # duplicate a chunk
        i, n = rng.randrange(len(b)), rng.randint(1, 64)
        b[i:i] = b[i : i + n]
    elif kind == 5:  # drop a chunk
        i = rng.randrange(len(b))
        del b[i : i + rng.randint(1, 64)]
    else:  # random bytes over a region
        i = rng.randrange(len(b))
        n = rng.randint(1, 16)
        b[i : i + n] = bytes(rng.randrange(256) for _ in range(n))
    return bytes(b)


def _fuzz(valid: bytes, read: Callable[[bytes, int], object], seed: int) -> dict[str, int]:
    """Run ``read`` on mutants of ``valid``; return outcome counts. Any other exception fails."""
    rng = random.Random(seed)
    counts = {"ok": 0, "rejected": 0}
    deadline = time.monotonic() + BUDGET_S
    for k in range(NUM_MUTANTS):
        if time.monotonic() > deadline:
            break
        mutant = _mutate(valid, rng)
        try:
            read(mutant, k)
            counts["ok"] += 1
        except DataFormatError:
            counts["rejected"] += 1
        except Exception as err:  # pragma: no cover - the failure is the report
            pytest.fail(f"mutant {k} (seed {seed}) raised {type(err).__name__}: {err}")
    assert counts["ok"] + counts["rejected"] >= 50, counts  # the budget allowed a meaningful number
    return counts


@pytest.fixture(scope="module")
def lidc_case(tmp_path_factory):
    from monai_bayes.data.synthetic import write_lidc_cases

    return write_lidc_cases(tmp_path_factory.mktemp("fuzz") / "lidc", num_cases=1, seed=7, shape=(8, 32, 32))[0]


def test_dicom_reader_mutants(lidc_case, tmp_path):
    files = [Path(p) for p in lidc_case.dicom_files]
    target = files[3]
    valid = target.read_bytes()
    folder = tmp_path / "series"
    folder.mkdir()
    others = [folder / p.name for p in files if p != target]
    for src, dst in zip([p for p in files if p != target], others):
        dst.write_bytes(src.read_bytes())

    def read(mutant: bytes, k: int) -> object:
        path = folder / target.name
        path.write_bytes(mutant)
        if k % 2:  # alone, so header mutations reach the pixel decoding too
            return read_dicom_series([path], expected_modality=None, max_voxels=8 * 32 * 32)
        return read_dicom_series(folder, expected_modality=None, max_voxels=8 * 32 * 32)

    counts = _fuzz(valid, read, seed=11)
    assert counts["rejected"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["series"]


def test_lidc_xml_mutants(lidc_case):
    valid = Path(lidc_case.xml_path).read_bytes()
    counts = _fuzz(valid, lambda mutant, k: parse_lidc_xml(mutant), seed=12)
    assert counts["rejected"] > 0


def test_crop_pickle_mutants(tmp_path):
    rng = np.random.default_rng(0)
    data = {
        f"LIDC-IDRI-{p:04d}_slice{s}": {
            "image": rng.random((16, 16)).astype(np.float32),
            "masks": [(rng.random((16, 16)) > 0.7).astype(np.uint8) for _ in range(4)],
            "series_uid": f"1.2.840.{p}",
        }
        for p in range(2)
        for s in range(2)
    }
    out = tmp_path / "out"
    out.mkdir()
    source = tmp_path / "lidc.pickle"

    def read(mutant: bytes, k: int) -> object:
        if k % 10:
            return safe_load_pickle(mutant)
        source.write_bytes(mutant)  # every tenth mutant goes through the whole conversion
        return convert_lidc_pickle(source, out / f"cache{k}", num_folds=2, show_progress=False)

    for protocol in (2, 4):
        counts = _fuzz(pickle.dumps(data, protocol=protocol), read, seed=13 + protocol)
        assert counts["rejected"] > 0
    # conversions wrote only inside their cache folders
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lidc.pickle", "out"]
    for p in out.rglob("*"):
        assert p.resolve().is_relative_to(out.resolve())
        assert ".tmp" not in p.name
