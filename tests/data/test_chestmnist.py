"""ChestMNIST npz: reader validation and the long-tailed synthetic writer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from monai_bayes.data import CHESTMNIST_CLASSES, ChestMNISTDataset, DataFormatError, load_chestmnist
from monai_bayes.data.synthetic import prepare_synthetic_chestmnist, write_chestmnist_npz


@pytest.fixture(scope="module")
def npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_chestmnist_npz(tmp_path_factory.mktemp("cm") / "chestmnist.npz", 3000, 200, 300, seed=0)


def test_format_matches_medmnist(npz: Path) -> None:
    with np.load(npz, allow_pickle=False) as f:
        assert sorted(f.files) == sorted(f"{s}_{k}" for s in ("train", "val", "test") for k in ("images", "labels"))
        assert f["train_images"].shape == (3000, 28, 28) and f["train_images"].dtype == np.uint8
        assert f["train_labels"].shape == (3000, 14) and f["train_labels"].dtype == np.uint8


def test_long_tail_and_cooccurrence(npz: Path) -> None:
    labels = load_chestmnist(npz)["train"]["labels"].astype(float)
    freq = labels.mean(axis=0)
    assert freq.min() > 0 and freq.max() / freq.min() >= 40  # published counts: infiltration / hernia = 88
    corr = np.corrcoef(labels.T)
    i = CHESTMNIST_CLASSES.index
    assert corr[i("effusion"), i("atelectasis")] > 0.1
    assert corr[i("mass"), i("nodule")] > 0.1
    assert (labels.sum(axis=1) >= 2).mean() > 0.05  # multi-label images exist


def test_published_prevalence_and_copula_orthant() -> None:
    from scipy.stats import multivariate_normal, norm

    from monai_bayes.data.synthetic.chestmnist import CHESTMNIST_CLASS_COUNTS, bivariate_upper_orthant

    i = CHESTMNIST_CLASSES.index
    assert CHESTMNIST_CLASS_COUNTS[i("infiltration")] == 19894 and CHESTMNIST_CLASS_COUNTS[i("hernia")] == 227
    for pa, pb, rho in ((0.11, 0.13, 0.45), (0.002, 0.3, -0.2), (0.7, 0.05, 0.8), (0.2, 0.9, 0.0)):
        ta, tb = norm.ppf(1 - pa), norm.ppf(1 - pb)  # P(z_a > t_a, z_b > t_b) = Φ2(-t_a, -t_b; rho)
        ref = multivariate_normal([0, 0], [[1, rho], [rho, 1]]).cdf([-ta, -tb])
        assert bivariate_upper_orthant(pa, pb, rho) == pytest.approx(ref, abs=2e-6)
    assert bivariate_upper_orthant(0.2, 0.9, 0.0) == pytest.approx(0.18)  # independence


def test_fit_label_copula_recovers_the_latent_correlation() -> None:
    from monai_bayes.data.synthetic.chestmnist import default_correlation, fit_label_copula, sample_chestmnist_labels

    prevalence = np.array([0.2, 0.15, 0.1, 0.3])
    corr = np.array([[1, 0.5, 0.0, -0.2], [0.5, 1, 0.3, 0], [0, 0.3, 1, 0], [-0.2, 0, 0, 1]])
    labels = sample_chestmnist_labels(np.random.default_rng(0), 60000, prevalence, corr)
    p, fitted = fit_label_copula(labels)
    np.testing.assert_allclose(p, prevalence, atol=0.01)
    np.testing.assert_allclose(fitted, corr, atol=0.05)
    assert np.linalg.eigvalsh(default_correlation()).min() > 0
    with pytest.raises(ValueError, match="positives and negatives"):
        fit_label_copula(np.zeros((10, 3)))


def test_dataset_items(npz: Path) -> None:
    ds = ChestMNISTDataset(npz, "val")
    item = ds[3]
    assert len(ds) == 200 and tuple(item["image"].shape) == (1, 28, 28) and tuple(item["label"].shape) == (14,)
    assert float(item["image"].min()) >= 0 and float(item["image"].max()) <= 1
    # the findings leave a trace: mean image differs between cardiomegaly-positive and -negative
    tr = load_chestmnist(npz)["train"]
    pos = tr["labels"][:, CHESTMNIST_CLASSES.index("cardiomegaly")] == 1
    assert abs(tr["images"][pos].mean() - tr["images"][~pos].mean()) > 1.0


def test_missing_keys_and_bad_shapes(tmp_path: Path, npz: Path) -> None:
    with np.load(npz) as f:
        arrays = {k: f[k] for k in f.files}
    broken = dict(arrays)
    del broken["val_labels"]
    p = tmp_path / "broken.npz"
    np.savez(p, **broken)
    with pytest.raises(DataFormatError, match=r"missing keys \['val_labels'\]"):
        load_chestmnist(p)
    broken = dict(arrays, test_labels=arrays["test_labels"][:, :5])
    np.savez(p, **broken)
    with pytest.raises(DataFormatError, match=r"test_labels must be \(N, 14\)"):
        load_chestmnist(p)
    broken = dict(arrays, train_labels=np.array([object()] * 3, dtype=object))
    np.savez(p, **broken)
    with pytest.raises(DataFormatError, match="without pickle"):
        load_chestmnist(p)
    with pytest.raises(ValueError, match="split must be one of"):
        ChestMNISTDataset(npz, "training")


def test_224_variant_and_prepare(tmp_path: Path) -> None:
    p = prepare_synthetic_chestmnist(tmp_path, 20, 5, 5, size=224, seed=1)
    assert load_chestmnist(p)["train"]["images"].shape == (20, 224, 224)
    assert prepare_synthetic_chestmnist(tmp_path, 20, 5, 5, size=224, seed=1) == p


def _medmnist_chestmnist(monkeypatch: pytest.MonkeyPatch, home: Path) -> type:
    """medmnist's own ChestMNIST class (medmnist is installed with --no-deps: it requires torchvision, which
    this project never installs; its dataset class does not use it). ``HOME`` is redirected because importing
    medmnist creates ``~/.medmnist``."""
    monkeypatch.setenv("HOME", str(home))
    from medmnist.dataset import ChestMNIST

    return ChestMNIST


def test_small_file_opens_in_medmnist_but_cannot_be_iterated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, npz: Path
) -> None:
    """What the CLI help and docs/data.md say: medmnist asserts the official split sizes in len()."""
    chestmnist = _medmnist_chestmnist(monkeypatch, tmp_path)
    ds = chestmnist(split="val", root=str(npz.parent), download=False)
    assert ds.imgs.shape == (200, 28, 28) and ds.labels.shape == (200, 14)
    with pytest.raises(AssertionError):
        len(ds)


@pytest.mark.slow
def test_official_sizes_load_and_iterate_in_medmnist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from monai_bayes.cli import main
    from monai_bayes.data import CHESTMNIST_OFFICIAL_SIZES

    assert main(["synth", "chestmnist", str(tmp_path), "--official-sizes", "--seed", "3"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["sizes"] == CHESTMNIST_OFFICIAL_SIZES and result["medmnist_loadable"] is True
    chestmnist = _medmnist_chestmnist(monkeypatch, tmp_path)
    ours = ChestMNISTDataset(tmp_path / "chestmnist.npz", "test")
    for split, size in CHESTMNIST_OFFICIAL_SIZES.items():
        assert len(chestmnist(split=split, root=str(tmp_path), download=False)) == size
    to_tensor = lambda img: torch.from_numpy(np.asarray(img, dtype=np.float32)[None] / 255.0)  # noqa: E731
    test = chestmnist(split="test", root=str(tmp_path), download=False, transform=to_tensor)
    images, labels = next(iter(DataLoader(test, batch_size=8, shuffle=False)))
    assert images.shape == (8, 1, 28, 28) and labels.shape == (8, 14)
    for i in range(8):
        torch.testing.assert_close(images[i], ours[i]["image"])
        assert labels[i].tolist() == ours[i]["label"].long().tolist()
