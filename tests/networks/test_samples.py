"""Posterior-sample sets: save/load round trip, lazy per-sample state dicts, and the ensemble MonteCarloInferer uses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from monai_bayes.inferers import MonteCarloInferer
from monai_bayes.networks import PosteriorSamples, is_samples_file, load_samples, sample_ensemble, save_samples


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))


def _states(num: int) -> list[dict[str, torch.Tensor]]:
    states = []
    for s in range(num):
        torch.manual_seed(s)
        net = _net()
        net.train()(torch.randn(2, 1, 8, 8))  # different BN running statistics per sample
        states.append({k: v.clone() for k, v in net.state_dict().items()})
    return states


def test_round_trip_keeps_every_sample(tmp_path):
    states = _states(3)
    path = save_samples(states, tmp_path / "samples.pt")
    assert is_samples_file(path) and not is_samples_file(tmp_path / "missing.pt")
    loaded = load_samples(path)
    assert len(loaded) == 3 and loaded.keys() == list(states[0])
    for s, state in enumerate(states):
        for k, v in state.items():
            assert torch.equal(loaded.state_dict(s)[k], v)
    mean = loaded.mean()
    torch.testing.assert_close(mean["0.weight"], torch.stack([st["0.weight"] for st in states]).mean(0))
    with pytest.raises(IndexError):
        loaded.state_dict(3)


def test_ensemble_returns_each_stored_sample_once_through_the_inferer():
    states = _states(3)
    ensemble = sample_ensemble(_net(), PosteriorSamples(states)).eval()
    x = torch.randn(2, 1, 8, 8)
    probs = MonteCarloInferer(num_samples=3, activation="softmax", output="samples", chunk_size=None)(x, ensemble)
    expected = []
    for state in states:
        net = _net().eval()
        net.load_state_dict(state)
        expected.append(torch.softmax(net(x), dim=1))
    got = probs if probs.shape[0] == 3 else probs.transpose(0, 1)
    torch.testing.assert_close(got, torch.stack(expected))


def test_bad_inputs_are_named(tmp_path):
    states = _states(2)
    states[1] = {**states[1], "0.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match=r"sample 1: '0.weight' has shape"):
        PosteriorSamples(states)
    torch.save({"a": torch.zeros(1)}, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="not a posterior-samples file"):
        load_samples(tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="does not fit the network"):
        sample_ensemble(nn.Linear(2, 2), PosteriorSamples(_states(2)))


def _conv_samples(num: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    torch.manual_seed(seed)
    base = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 4, 3)).state_dict()
    return [
        {k: (v + 0.3 * torch.randn_like(v) if v.is_floating_point() else v) for k, v in base.items()}
        for _ in range(num)
    ]


def test_shared_sparse_keeps_the_largest_mean_magnitudes(tmp_path):
    states = _conv_samples(5)
    path = save_samples(states, tmp_path / "s.pt", layout="shared_sparse", sparsity=0.75)
    loaded = load_samples(path)
    w = np.stack([s["0.weight"].numpy().ravel() for s in states])  # (S, K)
    keep = np.argsort(-np.abs(w).mean(0))[: round(w.shape[1] * 0.25)]
    mask = np.zeros(w.shape[1], bool)
    mask[keep] = True
    np.testing.assert_array_equal(loaded.stacked["0.weight"].reshape(5, -1).numpy(), w * mask)
    torch.testing.assert_close(loaded.stacked["1.running_mean"], torch.stack([s["1.running_mean"] for s in states]))
    assert torch.equal(loaded.stacked["1.bias"], torch.stack([s["1.bias"] for s in states]))  # 1-d: kept dense


def test_coo_is_torch_coo_of_each_samples_own_top_entries(tmp_path):
    states = _conv_samples(3)
    path = save_samples(states, tmp_path / "c.pt", layout="coo", sparsity=0.9)
    payload = torch.load(path, weights_only=True)
    entry = payload["entries"]["2.weight"]
    for s, state in enumerate(states):
        matrix = state["2.weight"].reshape(4, -1)
        n_keep = round(matrix.numel() * 0.1)
        threshold = matrix.abs().flatten().topk(n_keep).values[-1]
        reference = torch.where(matrix.abs() >= threshold, matrix, torch.zeros(())).to_sparse()  # torch's own COO
        assert torch.equal(entry["indices"][s], reference.indices())
        torch.testing.assert_close(entry["fp32"][s], reference.values())
    decoded = load_samples(path).stacked["2.weight"][1]
    assert int((decoded != 0).sum()) == round(states[1]["2.weight"].numel() * 0.1)


def test_value_codecs_and_lazy_loading(tmp_path):
    states = _conv_samples(4)
    w = torch.stack([s["0.weight"] for s in states])  # (S, C_out, ...)
    half = load_samples(save_samples(states, tmp_path / "h.pt", values="fp16")).stacked["0.weight"]
    assert torch.equal(half, w.half().float())
    q = load_samples(save_samples(states, tmp_path / "q.pt", values="int8")).stacked["0.weight"]
    scale = w.abs().amax(dim=(2, 3, 4), keepdim=True) / 127  # symmetric int8 per sample and output channel
    assert ((q - w).abs() <= scale / 2 + 1e-6).all() and not torch.equal(q, w)
    for layout, sparsity in (("dense", 0.0), ("shared_sparse", 0.5), ("coo", 0.5)):
        path = save_samples(states, tmp_path / f"{layout}.pt", layout=layout, sparsity=sparsity, values="int8")
        lazy, full = load_samples(path, lazy=True), load_samples(path)
        assert len(lazy) == 4
        for k, v in lazy.state_dict(2).items():
            assert torch.equal(v, full.state_dict(2)[k]), (layout, k)
    with pytest.raises(ValueError, match="needs a sparsity > 0"):
        save_samples(states, tmp_path / "x.pt", layout="coo")
    with pytest.raises(ValueError, match="layout"):
        save_samples(states, tmp_path / "x.pt", layout="csr", sparsity=0.5)


def test_shared_sparse_bytes_at_16_samples_and_90_percent(tmp_path):
    """Tensor bytes follow N + N·S (shared, int32 index) vs (2·8 + 4)·N·S (torch COO): ≤ 0.3× at S = 16."""
    torch.manual_seed(0)
    state = {"w": torch.randn(64, 32, 3, 3)}
    states = [{"w": state["w"] + 0.1 * torch.randn(64, 32, 3, 3)} for _ in range(16)]
    n = round(state["w"].numel() * 0.1)
    shared = save_samples(states, tmp_path / "s.pt", layout="shared_sparse", sparsity=0.9).stat().st_size
    coo = save_samples(states, tmp_path / "c.pt", layout="coo", sparsity=0.9).stat().st_size
    dense = save_samples(states, tmp_path / "d.pt").stat().st_size
    overhead = 4096  # pickle / zip metadata of a torch.save file
    assert abs(shared - (4 * n + 4 * n * 16)) < overhead and abs(coo - 20 * n * 16) < overhead
    assert abs(dense - 4 * state["w"].numel() * 16) < overhead
    assert shared / coo <= 0.3
