"""Hostile or broken inputs to the readers (issue 14 items 3, 4, 10, 12): every failure is a
DataFormatError naming the file, nothing is allocated on the file's say-so, nothing is written
outside the cache, skip mode skips."""

from __future__ import annotations

import io
import json
import logging
import pickle
import shutil
import struct
import uuid
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from monai_bayes.data import DataFormatError, UnsafePickleError, convert_lidc_pickle, safe_load_pickle
from monai_bayes.data.cache import inside, safe_name, short_uid
from monai_bayes.data.chestmnist import load_chestmnist
from monai_bayes.data.dicom import read_dicom_series
from monai_bayes.data.errors import DicomSeriesError
from monai_bayes.data.isic import prepare_isic_dataset
from monai_bayes.data.lidc_pickle import MAX_ARRAY_ELEMENTS


# ------------------------------------------------------------------------------------- item 4: pickle
class _Calls:
    """Pickles as ``fn(*args)``: what a hostile file can ask the unpickler to run."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


def _reconstruct_fn():
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy 1
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (_Calls(np.ndarray, (40000, 40000)), "calls numpy.ndarray directly"),
        (_Calls(np.ndarray, (6000, 6000)), "calls numpy.ndarray directly"),
        (_Calls(_reconstruct_fn(), np.ndarray, (40000, 40000), b"b"), "placeholder without data"),
        (_Calls(bytearray, 2**50), r"bytearray\(1125899906842624\)"),
        (_Calls(bytes, 2**50), r"bytes\(1125899906842624\)"),
    ],
)
def test_allocating_pickles_are_refused(payload, message, tmp_path):
    path = tmp_path / "hostile.pickle"
    path.write_bytes(pickle.dumps({"a": payload}, protocol=4))
    with pytest.raises(UnsafePickleError, match=message) as info:
        safe_load_pickle(path)
    assert str(path) in str(info.value)


def test_the_119_byte_pickle_of_the_issue_is_refused(tmp_path):
    blob = pickle.dumps(_Calls(np.ndarray, (40000, 40000)), protocol=2)
    assert len(blob) < 120
    with pytest.raises(UnsafePickleError, match=r"numpy\.ndarray"):
        safe_load_pickle(blob)


@pytest.mark.parametrize(
    "blob",
    [
        pickle.dumps(_Calls(int, "9" * 5000), protocol=2),  # over-long int: ValueError inside int()
        b"\x80\x02X\xff\xff\xff\x7fabc.",  # BINUNICODE claiming 2 GiB, 3 bytes present
        b"\x80\x04\x8d" + (2**62).to_bytes(8, "little") + b"abc.",  # BINUNICODE8 claiming 4 EiB
        b"\x80\x04\x8e" + (2**62).to_bytes(8, "little") + b"abc.",  # BINBYTES8
        b"\x80\x05\x96" + (2**62).to_bytes(8, "little") + b"abc.",  # BYTEARRAY8
        b"\x80\x02(" * 3 + b".",  # unbalanced marks
        b"",  # empty
        b"\x80\x02}q\x00",  # truncated dict
    ],
)
def test_malformed_pickles_are_data_format_errors(blob, tmp_path):
    path = tmp_path / "bad.pickle"
    path.write_bytes(blob)
    with pytest.raises(DataFormatError, match=r"bad\.pickle"):
        safe_load_pickle(path)


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"\x80\x04Nr\xff\xff\xff\xff.", "memo index 4294967295"),  # LONG_BINPUT: a 32 GiB memo in C
        (b"\x80\x05N\x98.", "READONLY_BUFFER"),  # out-of-band buffer opcodes
        (
            b"\x80\x04cnumpy\ndtype\n(X\x02\x00\x00\x00f4\x89\x88tR(K\x03X\x01\x00\x00\x00<NNNJ\x00\x00\x00\xc0J\xff\xff\xff\xffK\x00tb.",
            "element size",
        ),
    ],
)
def test_opcodes_and_states_that_corrupt_the_unpickler_are_refused(blob, message):
    with pytest.raises(UnsafePickleError, match=message):
        safe_load_pickle(blob)


def test_arrays_are_rebuilt_from_their_bytes_with_a_size_cap(tmp_path):
    ok = np.arange(12, dtype=np.int16).reshape(3, 4)
    for protocol in (2, 3, 4, 5):
        loaded = safe_load_pickle(pickle.dumps({"x": ok, "f": np.asfortranarray(ok)}, protocol=protocol))
        np.testing.assert_array_equal(loaded["x"], ok)
        np.testing.assert_array_equal(loaded["f"], ok)
    side = int(np.sqrt(MAX_ARRAY_ELEMENTS)) + 1  # just above the cap (as float32: a few MiB)
    big = np.zeros((side, side), dtype=np.float32)
    with pytest.raises(UnsafePickleError, match="more than the"):
        safe_load_pickle(pickle.dumps({"image": big}, protocol=4))


def test_array_state_with_too_few_bytes_is_refused():
    blob = pickle.dumps(np.zeros((4, 4), dtype=np.float64), protocol=2)
    raw = np.zeros((4, 4)).tobytes()
    hostile = blob.replace(raw, raw[:64]).replace(b"C\x80", b"C@", 1)  # SHORT_BINBYTES length 128 -> 64
    with pytest.raises(DataFormatError):
        safe_load_pickle(hostile)


def test_conversion_of_a_hostile_pickle_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "lidc.pickle"
    path.write_bytes(pickle.dumps({"k": {"image": _Calls(np.ndarray, (40000, 40000)), "masks": []}}, protocol=2))
    with pytest.raises(UnsafePickleError):
        convert_lidc_pickle(path, tmp_path / "cache", show_progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lidc.pickle"]


# ------------------------------------------------------------------------------------- item 3: names
def test_series_uid_ending_in_an_absolute_folder_stays_in_the_cache(tmp_path):
    """``_short()`` used to keep the last 8 characters of a series UID, so ``1.2.840/tmp/abc``
    became the absolute folder ``/tmp/abc`` and the .npy files landed there."""
    name = "/tmp/" + uuid.uuid4().hex[:3]  # 8 characters: the last 8 of the UID after dropping dots
    escaped = Path(name)
    assert not escaped.exists()
    rng = np.random.default_rng(0)
    entry = {
        "image": rng.random((16, 16)).astype(np.float32),
        "masks": [np.zeros((16, 16), np.uint8)] * 4,
        "series_uid": "1.2.840" + name,
        "patient_id": "../../../outside",
    }
    path = tmp_path / "lidc.pickle"
    path.write_bytes(pickle.dumps({"../../key/..": entry}, protocol=4))
    cache = tmp_path / "cache"
    try:
        datalist = convert_lidc_pickle(path, cache, num_folds=2, show_progress=False)
    finally:
        leaked = escaped.exists()
        if leaked:
            shutil.rmtree(escaped)
    assert not leaked
    items = json.loads(datalist.read_text())["training"]
    for item in items:
        for key in ("image", "label"):
            assert (cache / item[key]).resolve().is_relative_to(cache.resolve()), item[key]
            assert (cache / item[key]).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "lidc.pickle"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("LIDC-IDRI-0001", "LIDC-IDRI-0001"), ("../..", "_._.."), ("/etc/passwd", "_etc_passwd"), ("", "unknown")],
)
def test_safe_name(raw, expected):
    assert safe_name(raw) == expected
    assert "/" not in safe_name(raw) and not safe_name(raw).startswith(".")


def test_short_uid_and_inside(tmp_path):
    assert short_uid("1.3.6.1.4.1.14519.5.2.1.6279.6001.179049373636438705059720603192") == "20603192"
    assert short_uid("1.2.840/tmp/abc") == "40tmpabc" and short_uid("///") == "unknown"
    assert inside(tmp_path / "a" / "b", tmp_path) == tmp_path / "a" / "b"
    with pytest.raises(DataFormatError, match="outside the cache folder"):
        inside(tmp_path / ".." / "x", tmp_path)


# ------------------------------------------------------------------------------------- item 10: DICOM sizes
@pytest.fixture(scope="module")
def ct_files(tmp_path_factory) -> list[Path]:
    from monai_bayes.data.synthetic import write_lidc_cases

    root = tmp_path_factory.mktemp("hostile_ct")
    case = write_lidc_cases(root / "lidc", num_cases=1, seed=5, shape=(8, 32, 32))[0]
    return [Path(p) for p in case.dicom_files]


def _changed(files: list[Path], folder: Path, **changes) -> list[Path]:
    folder.mkdir()
    out = []
    for p in files:
        ds = pydicom.dcmread(p)
        for key, value in changes.items():
            setattr(ds, key, value)
        out.append(folder / p.name)
        ds.save_as(out[-1])
    return out


def test_dimensions_are_checked_against_the_pixel_data_before_allocating(ct_files, tmp_path):
    files = _changed(ct_files, tmp_path / "big", Rows=4096, Columns=4096)
    with pytest.raises(DicomSeriesError, match="PixelData holds 2048 bytes") as info:
        read_dicom_series(files, max_voxels=None)
    assert str(files[0]) in str(info.value) or str(tmp_path) in str(info.value)
    with pytest.raises(DicomSeriesError, match="exceeds the maximum of 1000"):
        read_dicom_series(ct_files, max_voxels=1000)
    assert read_dicom_series(ct_files, max_voxels=8 * 32 * 32).shape == (8, 32, 32)


def test_undecodable_compressed_pixels_log_no_traceback(ct_files, tmp_path, caplog):
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless

    ds = pydicom.dcmread(ct_files[0])
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 40])
    ds["PixelData"].VR = "OB"
    path = tmp_path / "j2k.dcm"
    ds.save_as(path, enforce_file_format=True)
    with caplog.at_level(logging.INFO), pytest.raises(DicomSeriesError, match="cannot decode pixel data"):
        read_dicom_series([path])
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    with caplog.at_level(logging.DEBUG, logger="monai_bayes.data.dicom"), pytest.raises(DicomSeriesError):
        read_dicom_series([path])
    assert any(r.exc_info for r in caplog.records if r.name == "monai_bayes.data.dicom")  # kept for -v


# ------------------------------------------------------------------------------------- item 12: ChestMNIST
def _chest_arrays(rng: np.random.Generator, dtype=np.uint8) -> dict[str, np.ndarray]:
    out = {}
    for split, n in (("train", 6), ("val", 2), ("test", 2)):
        out[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28)).astype(dtype)
        out[f"{split}_labels"] = rng.integers(0, 2, (n, 14)).astype(np.uint8)
    return out


def test_truncated_npz_is_a_data_format_error(tmp_path):
    path = tmp_path / "chestmnist.npz"
    np.savez_compressed(path, **_chest_arrays(np.random.default_rng(0)))
    blob = path.read_bytes()
    for cut in (len(blob) // 2, len(blob) - 30, 100):
        path.write_bytes(blob[:cut])
        with pytest.raises(DataFormatError, match=r"chestmnist\.npz"):
            load_chestmnist(path)


def test_non_finite_or_out_of_range_images_are_rejected(tmp_path):
    arrays = _chest_arrays(np.random.default_rng(1), dtype=np.float32)
    path = tmp_path / "chestmnist.npz"
    arrays["train_images"][0, 3, 3] = np.nan
    np.savez(path, **arrays)
    with pytest.raises(DataFormatError, match=r"train_images holds 1 NaN/inf"):
        load_chestmnist(path)
    arrays["train_images"][0, 3, 3] = 300.0
    np.savez(path, **arrays)
    with pytest.raises(DataFormatError, match=r"values span \[.*300"):
        load_chestmnist(path)
    arrays["train_images"][0, 3, 3] = 7.0
    np.savez(path, **arrays)
    assert load_chestmnist(path)["train"]["images"][0, 3, 3] == 7


# ------------------------------------------------------------------------------------- item 12: ISIC bomb
def _png_claiming(width: int, height: int) -> bytes:
    """A 1x1 grey PNG whose IHDR claims ``width x height`` (CRC fixed): a decompression bomb header."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr : ihdr + 17])) & 0xFFFFFFFF
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", crc)
    return bytes(data)


def test_decompression_bomb_is_skipped_in_skip_mode(tmp_path):
    from monai_bayes.data.synthetic import write_isic_cases

    raw = tmp_path / "raw"
    write_isic_cases(raw, num_cases=20, seed=0, size_range=(32, 40))
    victim = sorted((raw / "ISIC2018_Task1_Training_GroundTruth").glob("*.png"))[0]
    victim.write_bytes(_png_claiming(20000, 20000))
    with pytest.raises(DataFormatError, match="decompression bomb"):
        prepare_isic_dataset(raw, tmp_path / "cache", size=(16, 16), show_progress=False)
    assert not (tmp_path / "cache").exists()
    dl = prepare_isic_dataset(raw, tmp_path / "cache", size=(16, 16), on_error="skip", show_progress=False)
    data = json.loads(dl.read_text())
    report = json.loads((dl.parent / "report.json").read_text())
    assert len(data["training"]) == 13 and "decompression bomb" in report["skipped"][0]["reason"]
