"""Recipe options of issue 16, each against an independent computation.

Saliency criteria (|Σg|, Σ|g|, (Σg)², Σg²) and the batch-norm mode during saliency; σ initialisation by name;
the authors' per-layer-mean KL; full Bayes from scratch; the seed's Brier score (1/C); SGD momentum.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from scipy import stats
from torch import nn
from torch.distributions import Normal, kl_divergence

from monai_bayes.bundle.layout import RunLayout
from monai_bayes.bundle.overrides import SETTING_RULES
from monai_bayes.bundle.runner import pipeline_steps
from monai_bayes.losses import ELBOLoss
from monai_bayes.metrics import compute_brier_score
from monai_bayes.networks import init_means_normal, to_full_bayes, to_partial_bayes
from monai_bayes.selection import SelectionSettings, saliency_scores
from monai_bayes.workflows import OptimizerSettings, train_sparse_bayes
from monai_bayes.workflows.methods import METHOD_REGISTRY, METHODS


def _dot(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (pred * target).sum()


def _batch(x: list[float], c: list[float]) -> dict[str, torch.Tensor]:
    return {"image": torch.tensor([x]), "label": torch.tensor([c])}


# ---------------------------------------------------------------------------------------------- saliency
def test_two_opposite_batches_separate_the_criteria():
    """Gradients +2 and -2 of one weight: |Σg| = (Σg)² = 0, Σ|g| = 4, Σg² = 8 (the issue's 4.0 vs 0)."""
    net = nn.Linear(1, 1, bias=False)
    batches = [_batch([1.0], [2.0]), _batch([1.0], [-2.0])]  # d(w·x·c)/dw = x·c
    expected = {"abs_of_sum": 0.0, "squared_sum": 0.0, "sum_of_abs": 4.0, "sum_of_squares": 8.0}
    for criterion, value in expected.items():
        scores = saliency_scores(net, batches, _dot, criterion=criterion, progress=False)
        assert scores["weight"].item() == pytest.approx(value), criterion
    assert saliency_scores(net, batches, _dot, progress=False)["weight"].item() == 0.0, "default is |Σg|"
    assert SelectionSettings().saliency_criterion == "abs_of_sum"
    with pytest.raises(ValueError, match="criterion"):
        saliency_scores(net, batches, _dot, criterion="abs", progress=False)


def _per_batch_grads(net: nn.Module, batches: list[dict], loss) -> list[list[torch.Tensor]]:
    return [list(torch.autograd.grad(loss(net(b["image"]), b["label"]), list(net.parameters()))) for b in batches]


def test_criteria_on_a_conv_net_equal_brute_force_and_bn_mode_is_respected():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 2, 1))
    with torch.no_grad():  # running statistics far from the batch statistics, so the two modes differ
        net[1].running_mean.fill_(0.7)
        net[1].running_var.fill_(3.0)
    batches = [{"image": torch.randn(2, 1, 5, 5), "label": torch.randint(0, 2, (2, 1, 5, 5))} for _ in range(3)]

    def ce(pred, target):
        return nn.functional.cross_entropy(pred, target[:, 0])

    names = [n for n, _ in net.named_parameters()]
    bn_before = {k: v.clone() for k, v in net[1].state_dict().items()}
    for mode in ("train", "eval"):
        ref = copy.deepcopy(net)
        ref.train(mode == "train")
        grads = _per_batch_grads(ref, batches, ce)
        total = [sum(g[i] for g in grads) for i in range(len(names))]
        brute = {
            "abs_of_sum": [t.abs() for t in total],
            "squared_sum": [t.square() for t in total],
            "sum_of_abs": [sum(g[i].abs() for g in grads) for i in range(len(names))],
            "sum_of_squares": [sum(g[i].square() for g in grads) for i in range(len(names))],
        }
        for criterion, expected in brute.items():
            scores = saliency_scores(net, batches, ce, criterion=criterion, batch_norm=mode, progress=False)
            for i, name in enumerate(names):
                if name.startswith("1."):  # batch-norm parameters are never candidates
                    assert name not in scores
                    continue
                torch.testing.assert_close(scores[name], expected[i], msg=f"{criterion}, bn {mode}, {name}")
        # the pass leaves the running statistics as they were (train-mode BN would update them)
        for k, v in net[1].state_dict().items():
            torch.testing.assert_close(v, bn_before[k])
    train = saliency_scores(net, batches, ce, batch_norm="train", progress=False)
    evals = saliency_scores(net, batches, ce, batch_norm="eval", progress=False)
    assert not torch.allclose(train["0.weight"], evals["0.weight"])
    net.eval()
    saliency_scores(net, batches, ce, progress=False)
    assert not net.training and not net[1].training


def test_select_bayesian_weights_forwards_the_saliency_settings():
    net = nn.Linear(1, 2, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[1.0], [1.0]]))
    # weight 0: gradients +3, -3 (|Σg| = 0, Σ|g| = 6); weight 1: +1, +1 (|Σg| = 2, Σ|g| = 2)
    batches = [_batch([1.0], [3.0, 1.0]), _batch([1.0], [-3.0, 1.0])]
    seed_way = to_partial_bayes(copy.deepcopy(net), {"weight": torch.tensor([[False], [True]])})
    from monai_bayes.selection import select_bayesian_weights

    a = copy.deepcopy(net)
    select_bayesian_weights(a, r_bayes=0.5, loader=batches, loss_function=_dot, progress=False)
    assert torch.equal(a.bayes_mask("weight"), seed_way.bayes_mask("weight"))
    b = copy.deepcopy(net)
    select_bayesian_weights(
        b, r_bayes=0.5, loader=batches, loss_function=_dot, saliency_criterion="sum_of_abs", progress=False
    )
    assert torch.equal(b.bayes_mask("weight"), torch.tensor([[True], [False]]))


# ------------------------------------------------------------------------------------------- σ init
def test_rho_normal_sigma_init_draws_rho_from_n_minus_3_1():
    net = nn.Linear(100, 200)
    torch.manual_seed(3)
    to_full_bayes(net, sigma_init="rho_normal")
    rho = net.weight_rho.detach().double()
    torch.manual_seed(3)  # the same draws, made independently
    expected = nn.functional.softplus(torch.randn(200 * 100, dtype=torch.float64) - 3.0)
    torch.testing.assert_close(nn.functional.softplus(rho), expected, rtol=1e-5, atol=1e-7)
    assert stats.kstest(rho.numpy(), stats.norm(loc=-3.0, scale=1.0).cdf).pvalue > 1e-3
    assert net.sigma("weight").median().item() == pytest.approx(math.log1p(math.exp(-3.0)), rel=0.05)
    relative = to_full_bayes(nn.Linear(3, 2), sigma_init="relative")
    expected_relative = (0.05 * relative.weight.detach().abs()).clamp(min=1e-3).flatten()
    torch.testing.assert_close(relative.sigma("weight"), expected_relative)
    with pytest.raises(ValueError, match="rho_normal"):
        to_full_bayes(nn.Linear(3, 2), sigma_init="normal")


# ---------------------------------------------------------------------------------------------- KL
def test_layer_mean_kl_is_the_mean_over_bayesian_entries_per_tensor_summed():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    masks = {
        "0.weight": torch.rand(3, 4) < 0.5,
        "0.bias": torch.tensor([True, False, True]),
        "2.weight": torch.rand(2, 3) < 0.5,
    }
    masks["0.weight"][0, 0] = masks["2.weight"][0, 0] = True
    to_partial_bayes(net, masks, sigma_init="rho_normal")
    expected = torch.zeros((), dtype=torch.float64)
    total = torch.zeros((), dtype=torch.float64)
    for name, mask in masks.items():
        layer, pname = net[int(name[0])], name[2:]
        mu = getattr(layer, pname).detach().double()[mask]
        sigma = layer.sigma(pname).detach().double()
        kl = kl_divergence(Normal(mu, sigma), Normal(0.0, 1.0))
        expected += kl.mean()
        total += kl.sum()
    loss = ELBOLoss(net, nll=lambda p, t: p.sum() * 0, beta=0.3, kl_reduction="layer_mean")
    value = loss(net(torch.randn(2, 4)), torch.zeros(2, 2))
    assert value.item() == pytest.approx(0.3 * expected.item(), rel=1e-5)
    summed = ELBOLoss(net, nll=lambda p, t: p.sum() * 0, beta=0.3, kl_reduction="sum")
    assert summed(net(torch.randn(2, 4)), torch.zeros(2, 2)).item() == pytest.approx(0.3 * total.item(), rel=1e-5)


def test_layer_mean_rejects_non_gaussian_layers():
    from monai_bayes.networks import to_mc_dropout

    net = to_mc_dropout(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)), 0.2, exclude_output_layer=False)
    loss = ELBOLoss(net, nll=lambda p, t: p.sum() * 0, kl_reduction="layer_mean")
    with pytest.raises(ValueError, match="layer_mean"):
        loss(net(torch.randn(2, 4)), torch.zeros(2, 2))


# ------------------------------------------------------------------------------------------- Brier
def test_brier_has_the_seeds_one_over_c_factor():
    torch.manual_seed(2)
    probs = torch.softmax(torch.randn(3, 4, 3, 5, 5), dim=2)  # (B, S, C, H, W)
    labels = torch.nn.functional.one_hot(torch.randint(0, 3, (3, 2, 5, 5)), 3).permute(0, 1, 4, 2, 3).float()
    mean = probs.mean(dim=1)
    by_hand = torch.stack(
        [((mean - labels[:, r]) ** 2).sum(dim=1).div(3).mean(dim=(1, 2)) for r in range(2)], dim=1
    ).mean(dim=1)
    torch.testing.assert_close(compute_brier_score(probs, labels)[:, 0], by_hand)
    torch.testing.assert_close(compute_brier_score(probs, labels, class_mean=False)[:, 0], 3 * by_hand)
    # C = 2: the seed's categorical score equals the Bernoulli score of the foreground channel
    p2 = torch.softmax(torch.randn(2, 3, 2, 4, 4), dim=2)
    y2 = torch.nn.functional.one_hot(torch.randint(0, 2, (2, 1, 4, 4)), 2).permute(0, 1, 4, 2, 3).float()
    bern = compute_brier_score(p2[:, :, 1:], y2[:, :, 1:], likelihood="bernoulli")
    torch.testing.assert_close(compute_brier_score(p2, y2), bern)


# ------------------------------------------------------------------------------------ from scratch
def test_full_bayes_scratch_is_registered_without_step_1():
    assert METHODS.index("full_bayes_scratch") > METHODS.index("ensemble"), "new methods are appended at the end"
    spec = METHOD_REGISTRY["full_bayes_scratch"]
    assert spec.configs == ("select", "train", "evaluate")
    assert "warm-started" in METHOD_REGISTRY["full_bayes"].description
    layout = RunLayout("runs", "full_bayes_scratch")
    assert [s.config for s in pipeline_steps(layout)] == ["select", "train", "evaluate"]
    assert set(layout.cost_files) == {"train"} and layout.reported_r_bayes == 1.0


def test_init_means_normal_draws_candidates_and_keeps_norm_layers():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(8, 16, 3), nn.BatchNorm2d(16), nn.Conv2d(16, 8, 3))
    bn = copy.deepcopy(net[1].state_dict())
    init_means_normal(net)
    draws = torch.cat([net[0].weight.flatten(), net[2].weight.flatten(), net[0].bias, net[2].bias]).detach()
    assert stats.kstest(draws.numpy(), stats.norm().cdf).pvalue > 1e-3
    assert all(torch.equal(v, net[1].state_dict()[k]) for k, v in bn.items())


def test_train_sparse_bayes_full_bayes_scratch_skips_the_deterministic_step():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 1))
    loader = [{"image": torch.randn(2, 1, 8, 8), "label": torch.randint(0, 2, (2, 1, 8, 8))} for _ in range(2)]
    result = train_sparse_bayes(
        net,
        loader,
        method="full_bayes_scratch",
        bayes_epochs=1,
        num_samples=2,
        dataset_size=4,
        optimizer=OptimizerSettings(name="adam", lr=1e-3),
        progress=False,
    )
    assert "deterministic" not in result.costs and "full_bayes_scratch" in result.costs
    assert result.network[0].num_bayes() == net[0].weight.numel() + net[0].bias.numel()
    # means were drawn N(0, 1), not kept from a default (Kaiming-uniform, |w| <= 1/3 here) initialisation
    assert result.network[0].weight.abs().max() > 1.0


# ------------------------------------------------------------------------------ optimiser, settings
def test_sgd_default_has_the_reference_momentum():
    opt = OptimizerSettings().build(nn.Linear(2, 2))
    assert isinstance(opt, torch.optim.SGD)
    assert opt.param_groups[0]["momentum"] == 0.9 and opt.param_groups[0]["lr"] == 0.01


@pytest.mark.parametrize(
    ("key", "good", "bad"),
    [
        ("saliency_criterion", "sum_of_abs", "abs"),
        ("saliency_batch_norm", "eval", "frozen"),
        ("sigma_init", "rho_normal", "normal"),
        ("kl_reduction", "layer_mean", "mean"),
    ],
)
def test_override_rules_of_the_new_settings(key, good, bad):
    assert SETTING_RULES[key](good) is None
    assert SETTING_RULES[key](bad) is not None


def test_pipeline_validation_accepts_names_and_numbers_and_rejects_typos():
    from pathlib import Path

    from monai_bayes.bundle.runner import validate_pipeline_overrides

    lidc = Path(__file__).resolve().parents[2] / "bundles" / "lidc_sparse_bayes"
    good = {"saliency_criterion": "sum_of_abs", "saliency_batch_norm": "eval", "sigma_init": 0.05, "kl_reduction": 2.0}
    validate_pipeline_overrides(lidc, good)
    validate_pipeline_overrides(lidc, {"sigma_init": "rho_normal", "kl_reduction": "layer_mean"})
    with pytest.raises(ValueError) as info:
        validate_pipeline_overrides(lidc, {"saliency_criterion": "abs", "sigma_init": -1.0, "kl_reduction": "mean"})
    text = str(info.value)
    assert "--saliency_criterion" in text and "--sigma_init" in text and "--kl_reduction" in text
