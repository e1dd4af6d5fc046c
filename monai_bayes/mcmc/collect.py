"""Which sampler steps become stored posterior samples: burn-in, thinning, cycle-end collection.

:class:`SampleCollector` is the library half of :class:`~monai_bayes.handlers.SampleCollectionHandler`:
after optimiser step ``k`` (0-based) it decides with :meth:`SampleCollector.should_collect` whether the
network's current state is a sample and keeps a detached copy of its state dict.

* **Constant step size** (SGLD / SGHMC): steps ``k ≥ burn_in`` with ``(k − burn_in) mod thinning == 0``.
* **Cyclical** (cSGLD / cSGHMC, ``cycle_length=L``): within each cycle, only sampling-stage steps
  (``r(k) ≥ β``) count; the last ``samples_per_cycle`` of them, ``thinning`` steps apart and ending at the
  cycle's last step, are collected (Zhang et al. 2020 collect at the end of each cycle). Cycles that end
  before ``burn_in`` are skipped.
"""

from __future__ import annotations

from torch import nn

from monai_bayes.mcmc.schedule import in_sampling_stage
from monai_bayes.networks.samples import PosteriorSamples

__all__ = ["SampleCollector"]


def _check_int(name: str, value: int, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}.")


class SampleCollector:
    """Keep copies of a network's state at the steps a sampling schedule marks as samples.

    Parameters
    ----------
    network : nn.Module
        The network the sampler updates.
    burn_in : int
        Steps discarded at the start (≥ 0).
    thinning : int
        Keep every ``thinning``-th eligible step (≥ 1).
    cycle_length : int, optional
        ``L`` of a cyclical schedule: collect at each cycle's end instead of along the chain.
    exploration_fraction : float
        ``β`` of the cyclical schedule (only sampling-stage steps are collected).
    samples_per_cycle : int
        Samples per cycle (cyclical schedule only, ≥ 1).
    max_samples : int, optional
        Stop collecting after this many (≥ 1); ``None``: no limit.
    """

    def __init__(
        self,
        network: nn.Module,
        burn_in: int = 0,
        thinning: int = 1,
        cycle_length: int | None = None,
        exploration_fraction: float = 0.8,
        samples_per_cycle: int = 1,
        max_samples: int | None = None,
    ) -> None:
        _check_int("burn_in", burn_in, 0)
        _check_int("thinning", thinning, 1)
        _check_int("samples_per_cycle", samples_per_cycle, 1)
        if cycle_length is not None:
            _check_int("cycle_length", cycle_length, 1)
            in_sampling_stage(0, cycle_length, exploration_fraction)  # validates β
        if max_samples is not None:
            _check_int("max_samples", max_samples, 1)
        self.network = network
        self.burn_in = burn_in
        self.thinning = thinning
        self.cycle_length = cycle_length
        self.exploration_fraction = exploration_fraction
        self.samples_per_cycle = samples_per_cycle
        self.max_samples = max_samples
        self.states: list[dict] = []
        self.steps: list[int] = []

    def should_collect(self, step: int) -> bool:
        """Whether the state after optimiser step ``step`` (0-based) is a sample.

        Parameters
        ----------
        step : int
            Index of the step just taken.

        Returns
        -------
        bool
        """
        if step < self.burn_in or (self.max_samples is not None and len(self.states) >= self.max_samples):
            return False
        if self.cycle_length is None:
            return (step - self.burn_in) % self.thinning == 0
        to_end = self.cycle_length - 1 - step % self.cycle_length
        if to_end % self.thinning or to_end // self.thinning >= self.samples_per_cycle:
            return False
        return in_sampling_stage(step, self.cycle_length, self.exploration_fraction)

    def collect(self) -> None:
        """Store a detached copy of the network's current state dict."""
        self.states.append({k: v.detach().clone() for k, v in self.network.state_dict().items()})

    def step(self, step: int) -> bool:
        """Collect after optimiser step ``step`` if the schedule says so.

        Parameters
        ----------
        step : int
            Index of the step just taken (0-based).

        Returns
        -------
        bool
            Whether a sample was stored.
        """
        if not self.should_collect(step):
            return False
        self.collect()
        self.steps.append(step)
        return True

    def samples(self) -> PosteriorSamples:
        """The collected samples.

        Returns
        -------
        PosteriorSamples

        Raises
        ------
        ValueError
            If nothing was collected (naming the schedule, e.g. a burn-in longer than the run).
        """
        if not self.states:
            raise ValueError(
                f"no posterior sample was collected (burn_in={self.burn_in}, thinning={self.thinning}, "
                f"cycle_length={self.cycle_length}); the run is shorter than the burn-in or than one cycle."
            )
        return PosteriorSamples(self.states)
