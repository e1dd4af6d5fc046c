"""End-to-end sparse-Bayes recipe on tiny synthetic 2D data (issue 3, point 4) and its baselines."""

from __future__ import annotations

import pytest
import torch
from monai.metrics import DiceMetric
from monai.networks.nets import UNet

from monai_bayes import train_sparse_bayes
from monai_bayes.inferers import MonteCarloInferer
from monai_bayes.layers import sampling_mode, stochastic_layers
from monai_bayes.networks import DeepEnsemble, load_checkpoint
from monai_bayes.workflows import OptimizerSettings


def _discs(n: int, size: int = 32, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Noisy images of bright discs of random centre and radius, with their masks."""
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    items = []
    for _ in range(n):
        cy, cx = torch.randint(8, size - 8, (2,), generator=gen).tolist()
        r = float(torch.randint(3, 8, (1,), generator=gen))
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).float()
        image = mask * 0.8 + 0.35 * torch.randn(size, size, generator=gen)
        items.append({"image": image[None], "label": mask[None].long()})
    return items


def _loader(items, batch_size=8, shuffle=True):
    return torch.utils.data.DataLoader(items, batch_size=batch_size, shuffle=shuffle)


def _dice(net, items) -> float:
    metric = DiceMetric(include_background=False)
    loader = _loader(items, shuffle=False)
    with torch.no_grad(), sampling_mode(net, "mean"):
        net.eval()
        for b in loader:
            pred = net(b["image"]).argmax(1, keepdim=True)
            metric(torch.cat([1 - pred, pred], 1), torch.cat([1 - b["label"], b["label"]], 1))
    return float(metric.aggregate())


def _unet():
    return UNet(2, 1, 2, channels=(8, 16, 32), strides=(2, 2), num_res_units=1)


@pytest.mark.slow
def test_sparse_bayes_recipe_end_to_end(tmp_path):
    torch.manual_seed(0)
    train, test = _discs(64, seed=0), _discs(24, seed=1)
    opt = OptimizerSettings(name="adam", lr=5e-3, weight_decay=1e-5)
    det = _unet()
    det_result = train_sparse_bayes(
        det, _loader(train), method="deterministic", deterministic_epochs=12, optimizer=opt, progress=False, seed=0
    )
    det_dice = _dice(det_result.network, test)
    assert det_dice > 0.6, f"the deterministic baseline must learn the task (Dice {det_dice:.3f})"

    net = _unet()
    result = train_sparse_bayes(
        net,
        _loader(train),
        method="sparse_bayes",
        output_dir=tmp_path,
        deterministic_epochs=12,
        bayes_epochs=3,
        r_bayes=0.01,
        num_samples=5,
        optimizer=opt,
        progress=False,
        seed=0,
    )
    layers = stochastic_layers(result.network)
    candidates = sum(r.num_params for r in result.selection)
    assert sum(layer.num_bayes() for _, layer in layers) == int(0.01 * candidates + 0.5)
    partial_dice = _dice(result.network, test)
    print(f"deterministic Dice {det_dice:.4f}, 1 % partial mean-mode Dice {partial_dice:.4f}")
    assert abs(partial_dice - det_dice) <= 0.05, (partial_dice, det_dice)
    probs = MonteCarloInferer(8, output="uncertainty", seed=0)(torch.stack([t["image"] for t in test]), result.network)
    mutual_information = probs[:, 4]
    assert float(mutual_information.mean()) > 0 and float(mutual_information.max()) > 1e-4
    cost = result.costs["sparse_bayes"]
    assert cost["flops_per_step"] > result.costs["deterministic"]["flops_per_step"] > 0
    assert cost["parameters"]["bayesian"] == sum(layer.num_bayes() for _, layer in layers)
    assert len(cost["epoch_seconds"]) == 3
    # the checkpoints rebuild the same partial-Bayes network, and a rerun resumes instead of training
    assert {"deterministic", "sparse_bayes"} <= set(result.checkpoints)
    rebuilt = load_checkpoint(_unet(), result.checkpoints["sparse_bayes"])
    assert _dice(rebuilt, test) == pytest.approx(partial_dice)
    again = train_sparse_bayes(_unet(), _loader(train), output_dir=tmp_path, progress=False, bayes_epochs=3)
    assert again.costs == {}, "a finished run is resumed from its checkpoints, not retrained"


@pytest.mark.slow
def test_baselines_through_the_same_entry_point(tmp_path):
    train = _discs(16, seed=2)
    opt = OptimizerSettings(name="adam", lr=5e-3)
    kw = dict(deterministic_epochs=1, bayes_epochs=1, optimizer=opt, progress=False)
    mc = train_sparse_bayes(_unet(), _loader(train), method="mc_dropout", mc_dropout_p=0.2, **kw)
    assert stochastic_layers(mc.network)
    full = train_sparse_bayes(_unet(), _loader(train), method="full_bayes", num_samples=2, **kw)
    n_conv = sum(p.numel() for n, p in _unet().named_parameters() if not n.endswith("A.weight"))
    assert sum(layer.num_bayes() for _, layer in stochastic_layers(full.network)) == n_conv
    ens = train_sparse_bayes(_unet(), _loader(train), method="ensemble", ensemble_size=3, output_dir=tmp_path, **kw)
    assert isinstance(ens.network, DeepEnsemble) and len(ens.network.members) == 3
    w = [m.model[0].conv.unit0.conv.weight for m in ens.network.members]
    assert not torch.equal(w[0], w[1]), "members are initialised differently"
    x = torch.stack([t["image"] for t in train[:2]])
    samples = MonteCarloInferer(3)(x, ens.network.eval())
    for m, member in enumerate(ens.network.members):
        torch.testing.assert_close(samples[:, m], torch.softmax(member(x), 1))
    with pytest.raises(ValueError, match="method must be one of"):
        train_sparse_bayes(_unet(), _loader(train), method="laplace")
