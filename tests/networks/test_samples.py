"""Posterior-sample sets: save/load round trip, lazy per-sample state dicts, and the ensemble MonteCarloInferer uses."""

from __future__ import annotations

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
