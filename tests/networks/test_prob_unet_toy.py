"""Two-mode toy: the Prob. U-Net's latent and the SSN's covariance carry both rater modes; a deterministic UNet cannot.

Every image is the same bright square; rater A marks it, rater B marks nothing (the LIDC raters' "nodule or
not" disagreement), and training shows one random rater per item (as the LIDC bundles do). A network whose
samples ignore the latent / the covariance can only output one mask, whose Hungarian-matched IoU against
{A, B} is at most 0.5. With S = 16 samples and R = 2 raters the balanced matching pairs each rater with 8
samples, so even perfect mode samples score below 1 unless they split 8 / 8 (≈ 0.9 on average); the tests
ask for > 0.75 after 120 (Prob. U-Net) / 80 (SSN) Adam steps on 8×8 images.
"""

from __future__ import annotations

import torch
from monai.networks.nets import UNet

from monai_bayes.inferers import MonteCarloInferer
from monai_bayes.losses import ELBOLoss, LowRankLikelihoodLoss, make_nll
from monai_bayes.metrics import compute_hm_iou
from monai_bayes.networks import ProbabilisticUNet, StochasticSegmentationNetwork

SIZE = 8
NET = {
    "spatial_dims": 2,
    "in_channels": 1,
    "out_channels": 2,
    "channels": (4, 8),
    "strides": (2,),
    "num_res_units": 0,
    "norm": None,
}
STEPS = 80  # SSN; the Prob. U-Net's prior needs longer to match its posteriors
PROB_UNET_STEPS = 120


def _toy() -> tuple[torch.Tensor, torch.Tensor]:
    """Image ``(1, 1, 8, 8)`` and the two rater masks ``(2, 8, 8)`` (the square / nothing)."""
    image = torch.zeros(1, 1, SIZE, SIZE)
    image[..., 2:6, 2:6] = 1.0
    raters = torch.zeros(2, SIZE, SIZE)
    raters[0, 2:6, 2:6] = 1.0
    return image, raters


def _batch(
    image: torch.Tensor, raters: torch.Tensor, size: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    pick = torch.randint(0, 2, (size,), generator=gen)
    return image.expand(size, -1, -1, -1), raters[pick].unsqueeze(1)


def _train(net: torch.nn.Module, loss_fn, steps: int, posterior: bool, lr: float = 3e-2) -> None:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    image, raters = _toy()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    for _ in range(steps):
        x, y = _batch(image, raters, 8, gen)
        out = net(x, y) if posterior else net(x)
        loss = loss_fn(out, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()


def _hm_iou(net: torch.nn.Module, num_samples: int = 16) -> float:
    image, raters = _toy()
    x = image.expand(8, -1, -1, -1)  # 8 cases: the matching's luck averages out a little
    probs = MonteCarloInferer(num_samples, seed=1)(x, net)
    y = torch.nn.functional.one_hot(raters.long(), 2).movedim(-1, 1).unsqueeze(0).expand(8, -1, -1, -1, -1)
    return float(compute_hm_iou(probs, y, binarize="argmax").mean())


def test_prob_unet_covers_both_modes():
    torch.manual_seed(0)
    net = ProbabilisticUNet(**NET, latent_dim=2, fcomb_layers=2)
    _train(net, ELBOLoss(net, "ce", beta=1.0, kl_reduction=float(SIZE * SIZE)), steps=PROB_UNET_STEPS, posterior=True)
    assert _hm_iou(net) > 0.75


def test_ssn_covers_both_modes():
    torch.manual_seed(0)
    net = StochasticSegmentationNetwork(**NET, rank=2)
    _train(net, LowRankLikelihoodLoss(net, num_samples=8), steps=STEPS, posterior=False)
    assert _hm_iou(net) > 0.75


def test_deterministic_unet_cannot():
    torch.manual_seed(0)
    net = UNet(**NET)
    _train(net, make_nll("ce"), steps=STEPS, posterior=False)
    probs = torch.softmax(net(_toy()[0]), 1).unsqueeze(1).expand(-1, 16, -1, -1, -1)
    raters = _toy()[1]
    y = torch.nn.functional.one_hot(raters.long(), 2).movedim(-1, 1).unsqueeze(0)
    assert float(compute_hm_iou(probs, y, binarize="argmax").mean()) <= 0.55
