"""SaliencySelectionHandler: in-place conversion and optimizer update (issue 3, point 5)."""

from __future__ import annotations

import json

import torch
from monai.engines import SupervisedTrainer
from monai.networks.nets import UNet

from monai_bayes.handlers import SaliencySelectionHandler
from monai_bayes.inferers import MonteCarloInferer
from monai_bayes.layers import PartialBayesLayer, stochastic_layers
from monai_bayes.losses import ELBOLoss


def _data(n=4):
    gen = torch.Generator().manual_seed(0)
    return [
        {"image": torch.randn(2, 1, 16, 16, generator=gen), "label": torch.randint(0, 2, (2, 1, 16, 16), generator=gen)}
        for _ in range(n)
    ]


def test_handler_converts_and_optimizer_trains_rho_and_mu(tmp_path):
    torch.manual_seed(0)
    net = UNet(2, 1, 2, channels=(4, 8), strides=(2,), num_res_units=1)
    trained = {k: v.clone() for k, v in net.state_dict().items()}
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    data = _data()
    elbo = ELBOLoss(net, "ce", kl_reduction="dataset", dataset_size=8)
    handler = SaliencySelectionHandler(data, elbo.nll, r_bayes=0.05, report_path=tmp_path / "selection.json")
    snapshot = {}

    def remember(engine):
        snapshot.update({n: p.detach().clone() for n, p in net.named_parameters()})

    from ignite.engine import Events

    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=data,
        network=net,
        optimizer=optimizer,
        loss_function=elbo,
        inferer=MonteCarloInferer(3, activation=None),
        train_handlers=[handler],
    )
    trainer.add_event_handler(Events.ITERATION_STARTED(once=1), remember)
    trainer.run()
    layers = stochastic_layers(net)
    assert layers and all(isinstance(layer, PartialBayesLayer) for _, layer in layers)
    candidates = sum(v.numel() for k, v in trained.items() if "adn" not in k)  # conv weights and biases
    assert sum(layer.num_bayes() for _, layer in layers) == int(0.05 * candidates + 0.5)
    rho_names = [n for n, _ in net.named_parameters() if n.endswith("_rho")]
    assert rho_names
    optimized = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert all(id(dict(net.named_parameters())[n]) in optimized for n in rho_names)
    for n, p in net.named_parameters():
        if n.endswith("_rho") or n.endswith(".weight"):
            assert not torch.equal(p.detach(), snapshot[n]), f"{n} was not updated by the optimizer"
    # μ started from the trained weights
    first = layers[0][0] + ".weight"
    assert snapshot[first].shape == trained[first].shape and torch.equal(snapshot[first], trained[first])
    report = json.loads((tmp_path / "selection.json").read_text())
    assert sum(r["num_bayes"] for r in report) == sum(layer.num_bayes() for _, layer in layers)
