"""Selection scopes (issue 22 item 2): decoder / last-n layers found from the call order, MC cost in the report."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import BasicUNet, UNet
from torch import nn

from monai_bayes import to_partial_bayes
from monai_bayes.layers import mc_cost_split
from monai_bayes.selection import (
    call_order,
    cat_readers,
    format_selection_report,
    magnitude_scores,
    restrict_scores,
    scope_modules,
    select_topk,
    selection_report,
)


def test_basicunet_decoder_is_the_upsampling_path():
    net = BasicUNet(2, 1, 2, features=(4, 4, 8, 8, 16, 4))
    x = torch.randn(1, 1, 32, 32)
    decoder = scope_modules(net, x, "decoder")
    assert decoder[0] == "upcat_4.upsample.deconv" and decoder[-1] == "final_conv"
    assert all(name.startswith(("upcat_", "final_conv")) for name in decoder)
    assert scope_modules(net, x, "last", 1) == ["final_conv"]
    order = call_order(net, x)
    assert order[0] == ("conv_0.conv_0.conv", 32 * 32)
    assert min(size for _, size in order) == 2 * 2  # 4 halvings of 32


def test_decoder_scope_gives_long_prefix_and_report_predicts_cost():
    torch.manual_seed(0)
    net = UNet(2, 1, 2, channels=(4, 8, 16), strides=(2, 2), num_res_units=1).eval()
    x = torch.randn(2, 1, 16, 16)
    decoder = scope_modules(net, x, "decoder")
    scores = restrict_scores(magnitude_scores(net), decoder)
    assert {n.rsplit(".", 1)[0] for n in scores} <= set(decoder)
    pb = to_partial_bayes(net, select_topk(scores, 0.05), inplace=False).eval()
    split = mc_cost_split(pb, x)
    assert split.prefix_macs > 0 and split.suffix_macs > 0
    text = format_selection_report(selection_report(pb), split, num_samples=(8,))
    assert f"predicted MC cost, S=8: {split.predicted_cost(8):.3f}" in text
    assert split.predicted_cost(8) < 0.7  # the encoder (about 45 % of the MACs here) runs once


def test_scope_errors():
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.MaxPool2d(2))
    x = torch.randn(1, 1, 8, 8)
    with pytest.raises(ValueError, match="no layer after its bottleneck"):
        scope_modules(net, x, "decoder")
    with pytest.raises(ValueError, match="last_n"):
        scope_modules(net, x, "last", 0)
    with pytest.raises(ValueError, match="scope must be"):
        scope_modules(net, x, "encoder")
    with pytest.raises(ValueError, match="no scored parameter"):
        restrict_scores({"0.weight": torch.ones(2, 1, 3, 3)}, ["1"])


# --- skip_readers=False: the layers that read a skip concatenation stay deterministic -------------------------


def _unet_readers_by_structure(net: UNet, x: torch.Tensor) -> dict[str, int]:
    """Independently of the data flow: per MONAI ``SkipConnection``, the first conv of the block that follows
    it in its parent ``Sequential`` (``[down, SkipConnection, up]``), with the concatenation's channel count
    (the skip's input channels + the inner block's output channels, from shapes of a plain forward)."""
    from monai.networks.layers.simplelayers import SkipConnection

    channels: dict[str, int] = {}
    handles = []
    for name, module in net.named_modules():
        if isinstance(module, SkipConnection):

            def hook(m: nn.Module, args: tuple, out: torch.Tensor, name: str = name) -> None:
                inner = m.submodule(args[0])
                channels[name] = args[0].shape[1] + inner.shape[1]

            handles.append(module.register_forward_hook(hook))
    net(x)
    for h in handles:
        h.remove()
    expected = {}
    for skip_name, c in channels.items():
        parent_name, index = skip_name.rsplit(".", 1)
        up = net.get_submodule(parent_name)[int(index) + 1]
        first_conv = next(n for n, m in up.named_modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)))
        expected[f"{parent_name}.{int(index) + 1}.{first_conv}"] = c
    return expected


@torch.no_grad()
def test_cat_readers_of_monai_unet_are_the_up_convs_after_each_skip_connection():
    net = UNet(2, 1, 2, channels=(4, 8, 16, 32), strides=(2, 2, 2), num_res_units=2).eval()
    x = torch.randn(1, 1, 32, 32)
    expected = _unet_readers_by_structure(net, x)
    readers = cat_readers(net, x)
    assert readers == ["model.1.submodule.1.submodule.2.0.conv", "model.1.submodule.2.0.conv", "model.2.0.conv"]
    assert set(readers) == set(expected)
    for name in readers:  # the reader's input channels are the concatenation's
        assert net.get_submodule(name).in_channels == expected[name]
    decoder = scope_modules(net, x, "decoder")
    without = scope_modules(net, x, "decoder", skip_readers=False)
    assert without == [n for n in decoder if n not in expected] and len(without) == len(decoder) - 3
    assert scope_modules(net, x, "last", 2, skip_readers=False) == ["model.2.1.conv.unit0.conv"]


@torch.no_grad()
def test_cat_readers_of_basicunet_are_the_first_conv_of_each_upcat():
    net = BasicUNet(2, 1, 2, features=(4, 4, 8, 8, 16, 4)).eval()
    x = torch.randn(1, 1, 32, 32)
    # independently: the concatenation in each UpCat joins the encoder skip (2nd input) and the up-sampled path
    cat_channels: dict[str, int] = {}
    handles = []
    for i in (4, 3, 2, 1):
        upcat = net.get_submodule(f"upcat_{i}")
        handles.append(upcat.register_forward_pre_hook(lambda m, a, i=i: cat_channels.update({f"s{i}": a[1].shape[1]})))
        handles.append(
            upcat.upsample.register_forward_hook(lambda m, a, o, i=i: cat_channels.update({f"u{i}": o.shape[1]}))
        )
    net(x)
    for h in handles:
        h.remove()
    readers = cat_readers(net, x)
    assert readers == [f"upcat_{i}.convs.conv_0.conv" for i in (4, 3, 2, 1)]  # the first conv of UpCat.convs
    for i in (4, 3, 2, 1):
        assert (
            net.get_submodule(f"upcat_{i}.convs.conv_0.conv").in_channels
            == cat_channels[f"s{i}"] + cat_channels[f"u{i}"]
        )
    without = scope_modules(net, x, "decoder", skip_readers=False)
    assert not set(without) & set(readers)
    assert set(without) | set(readers) == set(scope_modules(net, x, "decoder"))


class _CatNet(nn.Module):
    """Channel cat read directly / through an activation, a cat along the width, and a linear on a feature cat."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(1, 2, 3, padding=1)
        self.direct, self.after_relu = nn.Conv2d(4, 2, 1), nn.Conv2d(4, 2, 1)
        self.width_cat = nn.Conv2d(2, 2, 1)
        self.fc = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.a(x), self.b(x)
        joined = torch.cat([a, b], dim=1)
        y = self.direct(joined) + self.after_relu(torch.relu(joined))
        y = self.width_cat(torch.concat((y, y), dim=-1))  # (B, 2, H, 2W): not along the channels
        pooled = y.mean((2, 3))
        return self.fc(torch.cat([pooled, pooled, pooled, pooled], dim=-1))


def test_cat_readers_follow_the_data_flow_not_the_names():
    assert cat_readers(_CatNet(), torch.randn(2, 1, 4, 4)) == ["direct", "fc"]


class _InPlaceNet(nn.Module):
    """Two convs read one concatenation (``torch.concatenate(axis=1)``); another is modified in place first."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.residual = nn.Conv2d(2, 2, 3, padding=1), nn.Conv2d(2, 2, 1)
        self.relu, self.after_inplace, self.after_iadd = nn.ReLU(inplace=True), nn.Conv2d(2, 2, 1), nn.Conv2d(2, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        joined = torch.concatenate([x, x], axis=1)
        y = self.conv(joined) + self.residual(joined)
        y = self.after_inplace(self.relu(torch.cat([x, x], 1)))
        z = torch.cat([x, x], 1)
        z += 1.0
        return y + self.after_iadd(z)


def test_cat_readers_include_every_reader_and_exclude_in_place_modified_concatenations():
    assert cat_readers(_InPlaceNet(), torch.randn(1, 1, 4, 4)) == ["conv", "residual"]


def test_skip_readers_false_errors_when_no_layer_is_left():
    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.down = nn.Conv2d(1, 2, 3, stride=2, padding=1)
            self.up = nn.Upsample(scale_factor=2)
            self.head = nn.Conv2d(3, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(torch.cat([x, self.up(self.down(x))], 1))

    x = torch.randn(1, 1, 8, 8)
    assert scope_modules(Tiny(), x, "decoder") == ["head"]
    with pytest.raises(ValueError, match=r"every layer of the 'decoder' scope .* reads a skip concatenation"):
        scope_modules(Tiny(), x, "decoder", skip_readers=False)


@torch.no_grad()
def test_skip_free_decoder_runs_the_split_conv_and_report_predicts_the_lower_cost(monkeypatch):
    from monai_bayes.inferers import MonteCarloInferer
    from monai_bayes.layers import shared_prefix as sp

    modes: list = []
    init = sp.SharedPrefixMode.__init__

    def recording_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        modes.append(self)

    monkeypatch.setattr(sp.SharedPrefixMode, "__init__", recording_init)
    torch.manual_seed(0)
    net = UNet(2, 1, 2, channels=(4, 8, 16), strides=(2, 2), num_res_units=1).eval()
    x = torch.randn(2, 1, 16, 16)
    scores = magnitude_scores(net)
    nets = {}
    for skip_readers in (True, False):
        scope = scope_modules(net, x, "decoder", skip_readers=skip_readers)
        masks = select_topk(restrict_scores(scores, scope), 0.05, scope="layer")  # every scope layer stochastic
        nets[skip_readers] = to_partial_bayes(net, masks, inplace=False)
    costs = {k: mc_cost_split(n.eval(), x) for k, n in nets.items()}
    # skip readers deterministic: their shared half counts as prefix (split conv), so the prediction drops
    assert costs[False].predicted_cost(8) < costs[True].predicted_cost(8)
    assert mc_cost_split(nets[False], x, split_conv=False).prefix_macs < costs[False].prefix_macs
    assert mc_cost_split(nets[True], x, split_conv=False) == costs[True]  # stochastic readers: nothing to split
    text = format_selection_report(selection_report(nets[False]), costs[False], num_samples=(8,))
    assert f"predicted MC cost, S=8: {costs[False].predicted_cost(8):.3f}" in text
    for skip_readers, split_taken in ((False, True), (True, False)):
        modes.clear()
        MonteCarloInferer(4, chunk_size=4, shared_prefix=True, split_conv=True, seed=0)(x, nets[skip_readers])
        assert (sum(m.split_convs for m in modes) > 0) is split_taken
