"""ELBO loss: KL term and sample-averaged NLL (issue 3, point 3)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from monai_bayes import to_partial_bayes
from monai_bayes.layers import stochastic_layers
from monai_bayes.losses import ELBOLoss, WeightedCrossEntropyLoss


@pytest.fixture
def partial_net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 1))
    masks = {n: torch.rand(p.shape) < 0.3 for n, p in net.named_parameters()}
    return to_partial_bayes(net, masks)


@pytest.mark.parametrize(
    ("reduction", "divisor"), [("dataset", 250.0), ("batch", 3.0), ("sum", 1.0), (40.0, 40.0), ("parameters", None)]
)
def test_kl_term_is_sum_of_layer_kls_times_scaling(partial_net, reduction, divisor):
    elbo = ELBOLoss(partial_net, "ce", beta=0.07, kl_reduction=reduction, dataset_size=250)
    preds = torch.randn(3, 5, 2, 4, 4)  # (B, S, C, H, W)
    target = torch.randint(0, 2, (3, 1, 4, 4))
    layers = [layer for _, layer in stochastic_layers(partial_net)]
    kl = sum(layer.kl() for layer in layers)
    if divisor is None:
        divisor = float(sum(layer.num_bayes() for layer in layers))
    nll = sum(nn.functional.cross_entropy(preds[:, s], target[:, 0]) for s in range(5)) / 5
    torch.testing.assert_close(elbo(preds, target), nll + 0.07 * kl / divisor)
    torch.testing.assert_close(elbo.last_kl, kl.detach())


def test_weighted_ce_and_single_sample_layout(partial_net):
    loss = WeightedCrossEntropyLoss([0.2, 0.8])
    preds, target = torch.randn(2, 2, 3, 3), torch.randint(0, 2, (2, 1, 3, 3))
    expected = nn.functional.cross_entropy(preds, target[:, 0], weight=torch.tensor([0.2, 0.8]))
    torch.testing.assert_close(loss(preds, target), expected)
    elbo = ELBOLoss(partial_net, loss, beta=0.0, kl_reduction="sum")
    torch.testing.assert_close(elbo(preds, target), expected)


def test_bad_arguments(partial_net):
    with pytest.raises(ValueError, match="needs dataset_size"):
        ELBOLoss(partial_net, "ce")
    with pytest.raises(ValueError, match=r"(?s)kl_reduction: .*'mean'.*positive number"):
        ELBOLoss(partial_net, "ce", kl_reduction="mean")
    with pytest.raises(ValueError, match=r"(?s)nll: .*'hinge'"):
        ELBOLoss(partial_net, "hinge", kl_reduction="sum")
    plain = ELBOLoss(nn.Conv2d(1, 2, 1), "ce", kl_reduction="sum")
    with pytest.raises(ValueError, match="no stochastic layer"):
        plain(torch.randn(1, 2, 2, 2), torch.zeros(1, 1, 2, 2))


def test_dice_ce_takes_class_weights_as_a_list():
    """``make_nll("dice_ce", class_weights=[...])`` used to pass the list on to CrossEntropyLoss (TypeError)."""
    from monai.losses import DiceCELoss

    from monai_bayes.losses.elbo import make_nll

    preds, target = torch.randn(2, 2, 4, 4), torch.randint(0, 2, (2, 1, 4, 4))
    loss = make_nll("dice_ce", class_weights=[0.2, 0.8])
    reference = DiceCELoss(to_onehot_y=True, softmax=True, weight=torch.tensor([0.2, 0.8]))
    torch.testing.assert_close(loss(preds, target), reference(preds, target))
