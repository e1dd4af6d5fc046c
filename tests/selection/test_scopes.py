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
