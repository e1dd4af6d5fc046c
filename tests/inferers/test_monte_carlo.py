"""MonteCarloInferer: shapes, chunking, reproducibility, sliding-window coherence (issue 2)."""

from __future__ import annotations

import pytest
import torch
from monai.inferers import SimpleInferer, SlidingWindowInferer
from monai.networks.nets import UNet
from torch import nn

from monai_bayes import to_mc_dropout, to_partial_bayes
from monai_bayes.inferers import MonteCarloInferer
from monai_bayes.layers import draw_noise, fixed_noise, sampling_mode, select_noise
from monai_bayes.uncertainty import uncertainty_maps


@pytest.fixture
def partial_unet():
    torch.manual_seed(0)
    net = UNet(2, 1, 2, channels=(4, 8, 16), strides=(2, 2), num_res_units=1).eval()
    return to_partial_bayes(net, "all", sigma_init=0.05)


@torch.no_grad()
def test_output_layouts(partial_unet):
    x = torch.randn(3, 1, 16, 16)
    samples = MonteCarloInferer(4, seed=0)(x, partial_unet)
    assert samples.shape == (3, 4, 2, 16, 16)
    torch.testing.assert_close(samples.sum(dim=2), torch.ones(3, 4, 16, 16))
    mean = MonteCarloInferer(4, seed=0, output="mean")(x, partial_unet)
    torch.testing.assert_close(mean, samples.mean(dim=1))
    summary = MonteCarloInferer(4, seed=0, output="uncertainty")(x, partial_unet)
    maps = uncertainty_maps(samples)
    expected = torch.cat([maps["mean"], maps["total"], maps["aleatoric"], maps["epistemic"]], dim=1)
    torch.testing.assert_close(summary, expected)
    assert float(maps["epistemic"].mean()) > 0


def test_chunking_and_seed_reproducible(partial_unet):
    x = torch.randn(2, 1, 16, 16)
    all_at_once = MonteCarloInferer(6, seed=3)(x, partial_unet)
    again = MonteCarloInferer(6, seed=3)(x, partial_unet)
    torch.testing.assert_close(all_at_once, again)
    other_seed = MonteCarloInferer(6, seed=4)(x, partial_unet)
    assert not torch.allclose(all_at_once, other_seed)
    chunked = MonteCarloInferer(6, seed=3, chunk_size=4)(x, partial_unet)
    torch.testing.assert_close(chunked, all_at_once, rtol=1e-5, atol=1e-6)  # same noise, other chunking
    assert not torch.allclose(chunked[:, 0], chunked[:, 1]), "samples must differ"


def test_samples_equal_sequential_forward_passes(partial_unet):
    x = torch.randn(2, 1, 16, 16)
    S = 3
    inferer = MonteCarloInferer(S, seed=11, activation=None)
    batched = inferer(x, partial_unet)
    gen = torch.Generator().manual_seed(11)
    noise = draw_noise(partial_unet, S, gen)
    for s in range(S):
        with fixed_noise(partial_unet, select_noise(noise, s)):
            torch.testing.assert_close(batched[:, s], partial_unet(x), rtol=1e-4, atol=1e-5)


def test_sliding_window_samples_are_coherent():
    # a pointwise network: every window sees the same weights, so the stitched samples must equal
    # the whole-image samples exactly (a different draw per window would show up as seams)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 1), nn.ReLU(), nn.Conv2d(4, 2, 1)).eval()
    pb = to_partial_bayes(net, "all", sigma_init=0.5)
    x = torch.randn(1, 1, 24, 24)
    whole = MonteCarloInferer(5, seed=1, inferer=SimpleInferer())(x, pb)
    windows = MonteCarloInferer(5, seed=1, inferer=SlidingWindowInferer((8, 8), sw_batch_size=3, overlap=0.25))(x, pb)
    torch.testing.assert_close(windows, whole, rtol=1e-5, atol=1e-6)


def test_mc_dropout_samples_and_mode_restored():
    torch.manual_seed(0)
    net = to_mc_dropout(UNet(2, 1, 2, channels=(4, 8), strides=(2,), num_res_units=1).eval(), 0.3)
    x = torch.randn(2, 1, 16, 16)
    with sampling_mode(net, "mean"):
        out = MonteCarloInferer(4)(x, net)
        assert not torch.allclose(out[:, 0], out[:, 1]), "the inferer samples even if the model was in mean mode"
        ref = net(x)
        assert torch.equal(ref, net(x)), "mean mode is restored after inference"


@torch.no_grad()
def test_seed_covers_mc_dropout_masks_and_leaves_global_rng_alone():
    torch.manual_seed(0)
    net = to_mc_dropout(UNet(2, 1, 2, channels=(4, 8), strides=(2,), num_res_units=1).eval(), 0.3)
    x = torch.randn(2, 1, 16, 16)
    state = torch.get_rng_state()
    first = MonteCarloInferer(4, seed=7)(x, net)
    assert torch.equal(torch.get_rng_state(), state), "the caller's global RNG state is restored"
    torch.rand(5)  # whatever the caller drew in between does not change the seeded samples
    torch.testing.assert_close(MonteCarloInferer(4, seed=7)(x, net), first, rtol=0, atol=0)
    assert not torch.equal(MonteCarloInferer(4, seed=8)(x, net), first)
    assert not torch.allclose(first[:, 0], first[:, 1]), "samples still differ from each other"
    unseeded = [MonteCarloInferer(4)(x, net) for _ in range(2)]
    assert not torch.equal(*unseeded), "without a seed the masks follow the global RNG"


def test_sigmoid_multilabel_and_bad_arguments(partial_unet):
    x = torch.randn(1, 1, 16, 16)
    out = MonteCarloInferer(2, activation="sigmoid", output="uncertainty")(x, partial_unet)
    assert out.shape == (1, 2 + 3 * 2, 16, 16)
    with pytest.raises(ValueError, match="num_samples"):
        MonteCarloInferer(0)
    with pytest.raises(ValueError, match="needs probabilities"):
        MonteCarloInferer(2, activation=None, output="mean")
    with pytest.raises(ValueError, match="chunk_size"):
        MonteCarloInferer(2, chunk_size=0)
    with pytest.raises(ValueError, match=r"(?s)output: .*'averages'(?=.*'samples')(?=.*'uncertainty')"):
        MonteCarloInferer(2, output="averages")
    with pytest.raises(ValueError, match=r"(?s)activation: .*'relu'(?=.*'softmax')(?=.*'sigmoid')"):
        MonteCarloInferer(2, activation="relu")


def test_metatensor_batches_keep_their_metadata(partial_unet):
    from monai.data import MetaTensor, decollate_batch, list_data_collate

    items = [{"image": MetaTensor(torch.randn(1, 16, 16), meta={"filename_or_obj": f"case{i}.npy"})} for i in range(3)]
    batch = list_data_collate(items)["image"]
    out = MonteCarloInferer(4, seed=0)(batch, partial_unet)
    assert isinstance(out, MetaTensor) and out.shape == (3, 4, 2, 16, 16)
    per_case = decollate_batch({"pred": out})
    assert [d["pred"].meta["filename_or_obj"] for d in per_case] == ["case0.npy", "case1.npy", "case2.npy"]
    torch.testing.assert_close(out.as_tensor(), MonteCarloInferer(4, seed=0)(batch.as_tensor(), partial_unet))


def test_no_stochastic_layer_warning_once_per_inferer(caplog):
    """Issue 13 point 7: a deterministic network is warned about once per inferer, and not for one sample."""
    net = nn.Conv2d(1, 2, 3, padding=1)
    x = torch.rand(2, 1, 8, 8)
    message = "no stochastic layer"
    with caplog.at_level("WARNING", logger="monai_bayes.inferers.monte_carlo"), torch.no_grad():
        inferer = MonteCarloInferer(num_samples=3)
        for _ in range(4):  # e.g. four validation batches
            inferer(x, net)
        assert sum(message in r.getMessage() for r in caplog.records) == 1
        MonteCarloInferer(num_samples=1)(x, net)  # deterministic validation: one sample, nothing to warn about
        assert sum(message in r.getMessage() for r in caplog.records) == 1
        MonteCarloInferer(num_samples=2)(x, net)  # another inferer warns again
        assert sum(message in r.getMessage() for r in caplog.records) == 2
