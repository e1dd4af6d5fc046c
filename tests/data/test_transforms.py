"""Multi-rater transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_bayes.data import MajorityVoted, RandRaterd, RaterMeand


def _stack() -> np.ndarray:
    lab = np.zeros((4, 3, 3), np.uint8)
    lab[0, 0, 0] = lab[1, 0, 0] = lab[2, 0, 0] = 1  # 3 votes
    lab[0, 1, 1] = lab[1, 1, 1] = 1  # 2 votes (tie)
    lab[3, 2, 2] = 1  # 1 vote
    return lab


def test_rand_rater_seeded_and_uniform() -> None:
    lab = np.arange(4)[:, None, None] * np.ones((4, 2, 2), np.int64)
    t = RandRaterd(keys=["label", "weight"])
    t.set_random_state(7)
    picks = [int(t({"label": lab, "weight": lab})["label"][0, 0, 0]) for _ in range(400)]
    t.set_random_state(7)
    again = [int(t({"label": lab, "weight": lab})["rater_index"]) for _ in range(400)]
    assert picks == again
    counts = np.bincount(picks, minlength=4)
    assert counts.min() > 60  # every rater drawn, roughly uniformly
    out = t({"label": lab, "weight": lab})
    assert out["label"].shape == (1, 2, 2)
    np.testing.assert_array_equal(out["label"], out["weight"])  # same rater for every key


def test_rand_rater_nonempty_only_and_metatensor() -> None:
    lab = torch.zeros(4, 2, 2)
    lab[2, 0, 0] = 1
    x = MetaTensor(lab, meta={"filename_or_obj": "a.npy"})
    t = RandRaterd("label", nonempty_only=True)
    t.set_random_state(0)
    for _ in range(20):
        out = t({"label": x})
        assert out["rater_index"] == 2
        assert isinstance(out["label"], MetaTensor) and out["label"].meta["filename_or_obj"] == "a.npy"
    with pytest.raises(ValueError, match="raters"):
        t({"label": torch.zeros(4)})


@pytest.mark.parametrize("to", [np.asarray, torch.as_tensor])
def test_majority_vote_and_mean(to) -> None:
    lab = to(_stack())
    maj = MajorityVoted("label")({"label": lab})["label"]
    assert tuple(maj.shape) == (1, 3, 3)
    assert maj[0, 0, 0] == 1 and maj[0, 1, 1] == 0 and maj[0, 2, 2] == 0
    tie = MajorityVoted("label", inclusive=True)({"label": lab})["label"]
    assert tie[0, 1, 1] == 1
    mean = RaterMeand("label")({"label": lab})["label"]
    np.testing.assert_allclose(np.asarray(mean)[0], [[0.75, 0, 0], [0, 0.5, 0], [0, 0, 0.25]])
    assert np.asarray(mean).dtype == np.float32
