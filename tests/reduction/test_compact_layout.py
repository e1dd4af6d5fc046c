"""The compact file picks the smaller layout per masked parameter (sparse index+values vs dense + bit mask)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from monai_bayes.reduction import (
    MASK_SUFFIX,
    apply_prune_masks,
    baseline_masks,
    compact_state,
    load_compact,
    save_compact,
    to_flat_bayes,
)
from monai_bayes.reduction.compact import pack_mask, unpack_mask


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 2, 3, padding=1))


def _pruned(fraction: float) -> nn.Module:
    net = to_flat_bayes(_net(), gamma0=0.1, sigma_init=0.02)
    total = sum(p.numel() for n, p in net.named_parameters() if not n.endswith("_rho"))
    apply_prune_masks(net, baseline_masks(net, "random", round(fraction * total), torch.Generator().manual_seed(1)))
    return net


@pytest.mark.parametrize("numel", [1, 7, 8, 9, 61])
def test_pack_mask_matches_numpy_packbits(numel: int) -> None:
    mask = torch.rand(numel, generator=torch.Generator().manual_seed(numel)) < 0.5
    bits = pack_mask(mask)
    np.testing.assert_array_equal(bits.numpy(), np.packbits(mask.numpy(), bitorder="little"))
    assert torch.equal(unpack_mask(bits, numel), mask)
    with pytest.raises(ValueError, match="mask_bits"):
        unpack_mask(bits.to(torch.int32), numel)


@pytest.mark.parametrize(("fraction", "layout"), [(0.1, "masked"), (0.9, "sparse")])
def test_smaller_layout_is_chosen_and_round_trips(tmp_path, fraction: float, layout: str) -> None:
    net = _pruned(fraction)
    state = net.state_dict()
    masks = {k[: -len(MASK_SUFFIX)]: v for k, v in state.items() if k.endswith(MASK_SUFFIX)}
    size = save_compact(net, tmp_path / "n.pt")
    assert set(size.layouts) == set(masks)  # (a tiny bias may go either way: the byte count below decides)
    assert {v for k, v in size.layouts.items() if k.endswith("weight")} == {layout}
    # bytes by hand: per masked parameter min(k·(4 + 4), n·4 + ceil(n/8)), every other tensor dense
    expected = 0
    for key, t in state.items():
        if key.endswith(MASK_SUFFIX):
            continue
        if key in masks:
            n, k = t.numel(), int(masks[key].sum())
            expected += min(k * (4 + t.element_size()), n * t.element_size() + math.ceil(n / 8))
        elif key.endswith("_bayes_index") and key[: -len("_bayes_index")] in masks:
            owner = masks[key[: -len("_bayes_index")]]
            if not torch.equal(owner.reshape(-1).nonzero().squeeze(1), t):
                expected += t.numel() * t.element_size()
        else:
            expected += t.numel() * t.element_size()
    assert size.compact_bytes == expected
    dense_no_masks = sum(t.numel() * t.element_size() for k, t in state.items() if not k.endswith(MASK_SUFFIX))
    assert size.compact_bytes < dense_no_masks
    loaded = load_compact(_net(seed=5), tmp_path / "n.pt")
    for key, value in state.items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_version_1_sparse_files_still_load(tmp_path) -> None:
    net = _pruned(0.9)
    payload, _ = compact_state(net)
    payload["version"] = 1  # version 1 had "sparse" entries only: what a 90 % pruned net stores
    torch.save(payload, tmp_path / "v1.pt")
    loaded = load_compact(_net(seed=5), tmp_path / "v1.pt")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in net.state_dict().items())
    payload["version"] = 7
    torch.save(payload, tmp_path / "v7.pt")
    with pytest.raises(ValueError, match=r"v7\.pt.*version 7"):
        load_compact(_net(), tmp_path / "v7.pt")
