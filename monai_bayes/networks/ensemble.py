"""Deep ensembles (Lakshminarayanan et al. 2017) as a stochastic module of the common protocol.

A :class:`DeepEnsemble` of ``M`` independently trained members behaves like any other stochastic
network: in ``"sample"`` mode, Monte-Carlo sample ``s`` is member ``s mod M`` (so
``MonteCarloInferer(num_samples=M)`` returns every member exactly once), batched over the
``S·B`` sample-major input like the other layers; in ``"mean"`` mode it returns the members'
averaged raw outputs (logit averaging). Its KL is 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from monai_bayes.layers.base import StochasticLayer

__all__ = ["DeepEnsemble"]


class DeepEnsemble(StochasticLayer, nn.Module):
    """An ensemble of networks with identical input/output layouts.

    Parameters
    ----------
    members
        the trained member networks (at least 2).
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"a DeepEnsemble needs at least 2 members, got {len(members)}.")
        self.members = nn.ModuleList(members)
        self._init_stochastic_state()

    def kl(self) -> torch.Tensor:
        return torch.zeros(())

    def noise_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"member": ()}

    def draw_noise(self, num_samples: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Member indices ``0, 1, …, M-1, 0, …`` for ``num_samples`` samples (no randomness needed)."""
        ref = self._reference_tensor()
        return {"member": torch.arange(num_samples, device=ref.device) % len(self.members)}

    def deterministic_module(self) -> nn.Module:
        raise NotImplementedError("an ensemble has no single posterior-mean network; export its members one by one.")

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if self._sampling_mode == "mean":
            return torch.stack([m(x, *args, **kwargs) for m in self.members]).mean(dim=0)
        S = self._num_samples
        B = self._check_batch(x.shape[0])
        if self._noise is not None:
            frozen = self._noise["member"]
            if frozen.shape[0] != S:
                raise ValueError(f"frozen member indices hold {frozen.shape[0]} samples, the pass runs {S}.")
            members = frozen.tolist()
        else:
            members = torch.randint(len(self.members), (S,)).tolist()
        return torch.cat([self.members[m](x[s * B : (s + 1) * B], *args, **kwargs) for s, m in enumerate(members)])
