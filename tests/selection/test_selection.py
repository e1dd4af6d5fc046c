"""Saliency scores and Top-k selection (issue 3, points 1, 2 and 6)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from monai_bayes.networks import to_partial_bayes
from monai_bayes.selection import (
    ScoreMethod,
    SelectionScope,
    SelectionSettings,
    compute_scores,
    format_selection_report,
    magnitude_scores,
    random_scores,
    saliency_scores,
    select_bayesian_weights,
    select_topk,
    selection_report,
)


class TwoBranch(nn.Module):
    """out = l1(x[:, :3]) + l2(x[:, 3:]); with loss Σ out·c the gradients are c_o·x_i and c_o."""

    def __init__(self) -> None:
        super().__init__()
        self.l1 = nn.Linear(3, 2)
        self.l2 = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l1(x[:, :3]) + self.l2(x[:, 3:])


def _weighted_sum(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (pred * target).sum()


def _batch(x, c):
    return {"image": torch.tensor([x], dtype=torch.float32), "label": torch.tensor([c], dtype=torch.float32)}


def test_saliency_and_topk_on_known_gradients():
    net = TwoBranch()
    # gradients: W1 = c ⊗ x1 = [[1,-2,3],[2,-4,6]], b1 = c = [1,2]; W2 = c ⊗ x2 = [[10,.5],[20,1]], b2 = [1,2]
    scores = saliency_scores(net, [_batch([1, -2, 3, 10, 0.5], [1, 2])], _weighted_sum, progress=False)
    torch.testing.assert_close(scores["l1.weight"], torch.tensor([[1.0, 2, 3], [2, 4, 6]]))
    torch.testing.assert_close(scores["l1.bias"], torch.tensor([1.0, 2]))
    torch.testing.assert_close(scores["l2.weight"], torch.tensor([[10.0, 0.5], [20, 1]]))
    # global: 14 entries, r = 3/14 → k = 3: 20, 10, 6
    masks = select_topk(scores, 3 / 14, "global")
    chosen = {(n, tuple(i.tolist())) for n, m in masks.items() for i in m.nonzero()}
    assert chosen == {("l2.weight", (1, 0)), ("l2.weight", (0, 0)), ("l1.weight", (1, 2))}
    # per layer, r = 0.25: l1 has 8 entries → 2 (6 and 4); l2 has 6 → ⌊1.5 + 0.5⌋ = 2 (20 and 10)
    per_layer = select_topk(scores, 0.25, "layer")
    chosen = {(n, tuple(i.tolist())) for n, m in per_layer.items() for i in m.nonzero()}
    assert chosen == {("l1.weight", (1, 2)), ("l1.weight", (1, 1)), ("l2.weight", (1, 0)), ("l2.weight", (0, 0))}


def test_saliency_over_batches_is_sum_of_per_batch_abs_gradients():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 2, 1))
    batches = [{"image": torch.randn(2, 1, 6, 6), "label": torch.randint(0, 2, (2, 1, 6, 6))} for _ in range(4)]

    def loss(pred, target):
        return nn.functional.cross_entropy(pred, target[:, 0])

    expected = {n: torch.zeros_like(p) for n, p in net.named_parameters()}
    signed = {n: torch.zeros_like(p) for n, p in net.named_parameters()}
    for b in batches[:3]:
        grads = torch.autograd.grad(loss(net(b["image"]), b["label"]), list(net.parameters()))
        for (n, _), g in zip(net.named_parameters(), grads):
            expected[n] += g.abs()
            signed[n] += g
    scores = saliency_scores(net, batches, loss, num_batches=3, criterion="sum_of_abs", progress=False)
    for n in expected:
        torch.testing.assert_close(scores[n], expected[n])
    assert any(not torch.allclose(scores[n], signed[n].abs()) for n in expected), "|Σg| must differ from Σ|g| here"
    squared = saliency_scores(net, batches[:1], loss, squared=True, progress=False)
    g0 = torch.autograd.grad(loss(net(batches[0]["image"]), batches[0]["label"]), list(net.parameters()))
    torch.testing.assert_close(squared["0.weight"], g0[0].square())
    assert all(p.requires_grad for p in net.parameters()), "requires_grad flags are restored"


def test_ablation_selectors_are_deterministic():
    net = TwoBranch()
    a, b = random_scores(net, seed=5), random_scores(net, seed=5)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not torch.equal(a["l1.weight"], random_scores(net, seed=6)["l1.weight"])
    mags = magnitude_scores(net)
    torch.testing.assert_close(mags["l2.weight"], net.l2.weight.detach().abs())
    assert set(compute_scores("magnitude", net)) == set(mags)
    masks1 = select_topk(a, 0.3)
    masks2 = select_topk(b, 0.3)
    assert all(torch.equal(masks1[n], masks2[n]) for n in masks1)


def test_ties_are_broken_by_position():
    scores = {"a.weight": torch.ones(4), "b.weight": torch.ones(4)}
    masks = select_topk(scores, 0.25)
    assert masks["a.weight"].tolist() == [True, True, False, False] and not masks["b.weight"].any()


def test_selection_report_counts():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))
    masks = {
        "0.weight": torch.zeros(4, 1, 3, 3, dtype=torch.bool),
        "2.weight": torch.ones(2, 4, 1, 1, dtype=torch.bool),
    }
    masks["0.weight"][0, 0, 0, :2] = True
    to_partial_bayes(net, masks)
    rows = {r.layer: r for r in selection_report(net)}
    assert (rows["0"].num_bayes, rows["0"].num_params) == (2, 40)
    assert (rows["2"].num_bayes, rows["2"].num_params) == (8, 10)
    assert rows["2"].percent == pytest.approx(80.0)
    assert "total" in format_selection_report(list(rows.values()))


# --------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("r_bayes", [0, -1, 1.01, float("nan")])
def test_bad_r_bayes(r_bayes):
    with pytest.raises(ValueError, match="r_bayes"):
        select_topk({"a.weight": torch.ones(3)}, r_bayes)


def test_empty_loader_and_no_selectable_parameters():
    net = TwoBranch()
    with pytest.raises(ValueError, match="yielded no batch"):
        saliency_scores(net, [], _weighted_sum, progress=False)
    with pytest.raises(ValueError, match="no selectable parameters"):
        saliency_scores(nn.Sequential(nn.BatchNorm1d(2)), [_batch([1, 2], [1, 1])], _weighted_sum, progress=False)
    with pytest.raises(ValueError, match="needs a data loader"):
        compute_scores("saliency", net)


def test_selection_settings_validate_once_and_keywords_override():
    settings = SelectionSettings(r_bayes=0.5, method="magnitude", scope="layer")
    assert settings.method is ScoreMethod.MAGNITUDE and settings.scope is SelectionScope.LAYER
    assert not settings.needs_data and SelectionSettings().needs_data
    assert SelectionSettings.from_options(settings, r_bayes=0.25).r_bayes == 0.25
    with pytest.raises(ValueError, match=r"(?s)scope: .*'module'"):
        SelectionSettings(scope="module")
    with pytest.raises(ValueError, match=r"(?s)method: .*'gradient'"):
        SelectionSettings(method="gradient")
    with pytest.raises(ValueError, match=r"r_bayes must be a fraction in \(0, 1\]"):
        SelectionSettings(r_bayes=0)
    with pytest.raises(TypeError, match=r"unknown selection option\(s\) \['rbayes'\]"):
        SelectionSettings.from_options(rbayes=0.1)


def test_select_bayesian_weights_is_scores_then_topk_then_conversion():
    """The one-call step equals compute_scores -> select_topk -> to_partial_bayes(masks)."""
    net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    manual = to_partial_bayes(net, select_topk(magnitude_scores(net), 0.2, "layer"), inplace=False)
    rows = select_bayesian_weights(net, SelectionSettings(method="magnitude", scope="layer"), r_bayes=0.2)
    assert [r.num_bayes for r in rows] == [r.num_bayes for r in selection_report(manual)]
    for name, buffer in manual.named_buffers():
        assert torch.equal(buffer, dict(net.named_buffers())[name])
