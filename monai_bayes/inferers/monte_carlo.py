"""Monte-Carlo inference as a MONAI :class:`~monai.inferers.Inferer`.

:class:`MonteCarloInferer` draws ``S`` posterior samples of any network whose stochastic layers
follow :mod:`monai_bayes.layers.base` (partial / full Bayes, MC dropout, nested dropout; a plain
network gives ``S`` identical samples). Samples are drawn *batched*: a chunk of ``c`` samples is
one forward pass over ``c·B`` items (see :func:`~monai_bayes.layers.mc_samples`), and chunks
bound the memory. Around each pass runs an inner inferer -- :class:`~monai.inferers.SimpleInferer`
(default) or :class:`~monai.inferers.SlidingWindowInferer` for volumes. The inner inferer sees a
network whose output has ``c·C`` channels (the chunk's samples side by side), so its windows and
blending work unchanged, and since the noise of each chunk is frozen for the whole call, sample
``s`` uses the same weights in every window: samples stay spatially coherent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal

import torch
from monai.data import MetaTensor
from monai.inferers import Inferer, SimpleInferer
from monai.utils import StrEnum
from torch import nn

from monai_bayes.inferers.planning import AUTO, MCPlan, choose_plan, plan_candidates
from monai_bayes.layers.base import (
    ModelNoise,
    draw_noise,
    fixed_noise,
    mc_samples,
    sampling_mode,
    select_noise,
    stochastic_layers,
)
from monai_bayes.layers.shared_prefix import shared_prefix_forward
from monai_bayes.uncertainty import Activation, uncertainty_maps
from monai_bayes.utils.options import look_up
from monai_bayes.utils.random import seeded_global_rng
from monai_bayes.utils.tensors import as_plain_tensor

__all__ = ["MonteCarloInferer", "MonteCarloNetwork", "summarize_samples"]

logger = logging.getLogger(__name__)


class OutputKind(StrEnum):
    """What :class:`MonteCarloInferer` returns: all samples, their mean, or the uncertainty maps."""

    SAMPLES = "samples"
    MEAN = "mean"
    UNCERTAINTY = "uncertainty"


_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "softmax": lambda t: torch.softmax(t, dim=2),
    "sigmoid": torch.sigmoid,
}


def summarize_samples(probs: torch.Tensor, activation: str) -> torch.Tensor:
    """Stack the predictive mean and the three uncertainty maps along the channel dim.

    ``probs``: ``(B, S, C, *sp)`` → ``(B, C + 3·U, *sp)`` with channels
    ``[mean_0 … mean_{C-1}, total, aleatoric, epistemic]`` (``U = 1`` for softmax; for sigmoid
    ``U = C`` and each map has one channel per class, in class order).
    """
    maps = uncertainty_maps(probs, activation)
    return torch.cat([maps["mean"], maps["total"], maps["aleatoric"], maps["epistemic"]], dim=1)


class _SampleStackingNetwork:
    """Callable running ``S`` samples of ``network`` on an input batch, samples side by side in channels.

    ``(n, C_in, *sp)`` → ``(n, S·C_out, *sp')``. The samples run in chunks of ``chunk_size`` (one
    batched pass each, with that chunk's slice of the frozen noise), each chunk either as one stacked
    batch of ``c·n`` items or by :func:`shared_prefix_forward`. The plan is fixed or, with
    ``chunk_size="auto"`` / ``shared_prefix="auto"``, chosen by a timed probe on the first call for
    each input shape (:func:`choose_plan`).
    """

    def __init__(
        self,
        inferer: MonteCarloInferer,
        network: Callable[..., torch.Tensor],
        module: nn.Module | None,
        noise: ModelNoise,
    ) -> None:
        self.inferer = inferer
        self.network = network
        self.module = module
        self.noise = noise
        self.num_samples = inferer.num_samples

    def __call__(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        x = as_plain_tensor(x)  # per-sample slicing of a batched MetaTensor would try to split its metadata
        plan = self.inferer._plan_for(x, self.module, lambda p: self.run(p, x, *args, **kwargs))
        return self.run(plan, x, *args, **kwargs)

    def run(self, plan: MCPlan, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """All ``S`` samples for ``x`` with ``plan``: ``(n, S·C_out, *sp')``."""
        S, n = self.num_samples, x.shape[0]
        outs = []
        for start in range(0, S, plan.chunk_size):
            c = min(plan.chunk_size, S - start)
            out = self._chunk(x, slice(start, start + c), plan, *args, **kwargs)
            if not isinstance(out, torch.Tensor):
                raise TypeError(
                    f"MonteCarloInferer needs a network returning one tensor, got {type(out).__name__} "
                    "(e.g. disable deep supervision for inference)."
                )
            outs.append(out.reshape(c, n, *out.shape[1:]))
        out = torch.cat(outs) if len(outs) > 1 else outs[0]
        return out.transpose(0, 1).reshape(n, S * out.shape[2], *out.shape[3:])

    def _chunk(self, x: torch.Tensor, samples: slice, plan: MCPlan, *args: Any, **kwargs: Any) -> torch.Tensor:
        c = samples.stop - samples.start
        if self.module is None:
            return self.network(torch.cat([x] * c), *args, **kwargs)
        module = self.module
        with (
            sampling_mode(module, "sample"),
            mc_samples(module, c),
            fixed_noise(module, select_noise(self.noise, samples)),
        ):
            if plan.shared_prefix:
                return shared_prefix_forward(
                    module, x, c, *args, sparse_shared_input=plan.sparse_input, split_conv=plan.split_conv, **kwargs
                )
            return self.network(torch.cat([x] * c), *args, **kwargs)


def _takes_shared_input(module: nn.Module, num_samples: int) -> bool:
    """Whether any stochastic layer of ``module`` can take a shared input at ``S = num_samples``."""
    with mc_samples(module, num_samples), sampling_mode(module, "sample"):
        return any(layer.takes_shared_input() for _, layer in stochastic_layers(module))


class MonteCarloInferer(Inferer):
    """Draw ``num_samples`` posterior samples of a stochastic network and return them or their summary.

    Parameters
    ----------
    num_samples
        ``S``, the number of Monte-Carlo samples (seed 000 uses 5).
    inferer
        the inner inferer run for each chunk; default :class:`~monai.inferers.SimpleInferer`.
        Use :class:`~monai.inferers.SlidingWindowInferer` for 3D volumes.
    chunk_size
        samples per batched pass: an int (a pass holds ``chunk_size × batch`` items; lower it to
        bound memory), ``None`` (all ``S`` in one pass) or ``"auto"`` (default): on the first call for
        each input shape (per inner-inferer batch, e.g. per sliding-window batch) a short timed probe
        compares 1, 2, 4, … ``S`` samples per pass, with and without ``shared_prefix``, and keeps the
        fastest plan for that shape (logged once at INFO; see :attr:`plans`). The probe costs about
        ``2 × candidates`` extra calls on the first input of each shape. Only inference is probed: a call
        with autograd on or the network in training mode (an ELBO step) runs all ``S`` samples in one
        stacked pass, so training never depends on timings (:meth:`_training_plan`).
    shared_prefix
        run the layers before the first stochastic layer once per pass instead of once per
        sample (:func:`~monai_bayes.layers.shared_prefix.shared_prefix_forward`); ``True``, ``False``
        or ``"auto"`` (default: decided by the probe when ``chunk_size="auto"``, else ``True`` for a
        chunk of more than one sample). Same outputs either way, up to float rounding.
    sparse_input
        with the shared prefix, let a partial-Bayes conv whose input is still shared (e.g. the very first
        layer under global saliency selection) compute its ``S`` samples as one dense conv plus one small conv
        for all ``S`` sparse perturbations
        (:func:`~monai_bayes.layers.functional.forward_with_sparse_samples_shared`) instead of ``S`` dense
        convs; ``True``, ``False`` or ``"auto"`` (default: compared by the probe when ``chunk_size="auto"``,
        else used where the layer's cost model predicts a gain). Same outputs, up to float rounding.
    split_conv
        with the shared prefix, keep a skip concatenation of shared and per-sample activations lazy and run
        the convolution that reads it in two halves: the shared channels once on the batch, the per-sample ones
        on every sample, summed (:class:`~monai_bayes.layers.shared_prefix.SharedPrefixMode`); default
        ``True``. Same outputs, up to float rounding; ``False`` materialises the ``S``-fold concatenation.
    activation
        ``"softmax"``, ``"sigmoid"`` or ``None`` (return raw network outputs; only with
        ``output="samples"``).
    output
        * ``"samples"`` -- ``(B, S, C, *sp)`` per-sample probabilities (the layout the metrics use);
        * ``"mean"`` -- ``(B, C, *sp)`` predictive mean;
        * ``"uncertainty"`` -- ``(B, C + 3U, *sp)``: mean, total entropy, aleatoric (expected
          entropy) and epistemic (mutual information) maps, see :func:`summarize_samples`.
    seed
        if given, every call draws the same samples for the same input: the weight noise comes from a
        generator seeded with it, and randomness drawn inside layers from the global RNG (MC-dropout masks,
        BN3's local-reparameterisation noise) runs under the global RNG seeded with it, restored
        afterwards (:func:`~monai_bayes.utils.seeded_global_rng`). The weight draws do not depend on
        ``chunk_size``; global-RNG draws do (they follow the order of the passes).
    """

    def __init__(
        self,
        num_samples: int = 8,
        inferer: Inferer | None = None,
        chunk_size: int | Literal["auto"] | None = AUTO,
        activation: Activation | str | None = Activation.SOFTMAX,
        output: OutputKind | str = OutputKind.SAMPLES,
        seed: int | None = None,
        shared_prefix: bool | Literal["auto"] = AUTO,
        sparse_input: bool | Literal["auto"] = AUTO,
        split_conv: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive int, got {num_samples!r}.")
        if chunk_size != AUTO and chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
            raise ValueError(f"chunk_size must be a positive int, None or 'auto', got {chunk_size!r}.")
        if shared_prefix != AUTO and not isinstance(shared_prefix, bool):
            raise ValueError(f"shared_prefix must be True, False or 'auto', got {shared_prefix!r}.")
        if sparse_input != AUTO and not isinstance(sparse_input, bool):
            raise ValueError(f"sparse_input must be True, False or 'auto', got {sparse_input!r}.")
        if activation is not None:
            activation = look_up("activation", activation, Activation).value
        output = look_up("output", output, OutputKind).value
        if output != "samples" and activation is None:
            raise ValueError(f"output={output!r} needs probabilities: set activation to 'softmax' or 'sigmoid'.")
        self.num_samples = num_samples
        self.inferer = inferer if inferer is not None else SimpleInferer()
        self.chunk_size: int | Literal["auto"] = num_samples if chunk_size is None else chunk_size
        if shared_prefix == AUTO and self.chunk_size != AUTO:
            shared_prefix = self.chunk_size > 1
        self.shared_prefix: bool | Literal["auto"] = shared_prefix
        self.sparse_input: bool | Literal["auto"] = sparse_input
        if not isinstance(split_conv, bool):
            raise ValueError(f"split_conv must be True or False, got {split_conv!r}.")
        self.split_conv = split_conv
        self.activation = activation
        self.output = output
        self.seed = seed
        self._warned_deterministic = False  # the no-stochastic-layer warning is given once per inferer
        #: plan chosen per (network, S, input shape, dtype, device), see ``chunk_size="auto"``
        self.plans: dict[tuple[Any, ...], MCPlan] = {}

    def _candidates(self, module: nn.Module | None) -> list[MCPlan]:
        """The plans the probe compares (one plan when nothing is left to choose)."""
        probe_sparse = self.sparse_input == AUTO and self.chunk_size == AUTO
        can_sparse = probe_sparse and module is not None and _takes_shared_input(module, self.num_samples)
        plans = plan_candidates(
            self.num_samples, self.chunk_size, self.shared_prefix, module is not None, can_sparse, self.split_conv
        )
        if probe_sparse:
            return plans
        fixed = self.sparse_input is True or self.sparse_input == AUTO  # auto with a fixed plan: the layers decide
        return [MCPlan(p.chunk_size, p.shared_prefix, fixed and p.shared_prefix, p.split_conv) for p in plans]

    def _training_plan(self) -> MCPlan:
        """The fixed plan of a training call (autograd on or the network in training mode): never probed.

        A timed choice would make training depend on the machine's load: with batch norm in training mode the
        chunk size sets which items share batch statistics, and float rounding differs between plans, which
        training amplifies; the probe's extra forwards would also update the running statistics. So ``"auto"``
        means all ``S`` samples in one stacked pass (``chunk_size=None``), without the shared prefix unless it
        was asked for (``shared_prefix=True``). A fixed ``chunk_size`` is never timed and keeps its plan.
        """
        shared = self.shared_prefix is True
        return MCPlan(self.num_samples, shared, shared and self.sparse_input is True, shared and self.split_conv)

    def _plan_for(self, x: torch.Tensor, module: nn.Module | None, run: Callable[[MCPlan], torch.Tensor]) -> MCPlan:
        """The plan for input ``x`` (cached per shape); probes the candidates on the first call."""
        training = torch.is_grad_enabled() or (module is not None and module.training)
        key = (id(module), self.num_samples, tuple(x.shape), x.dtype, str(x.device), training)
        plan = self.plans.get(key)
        if plan is not None:
            return plan
        has_stochastic = module is not None and bool(stochastic_layers(module))
        times: dict[MCPlan, float]
        if module is not None and not has_stochastic and self.shared_prefix is not False:
            plan, times = MCPlan(self.num_samples, True), {}  # nothing varies: one pass, S copies
        elif training and self.chunk_size == AUTO:
            plan, times = self._training_plan(), {}
        else:
            candidates = self._candidates(module)
            plan, times = choose_plan(candidates, run, x.device)
        probe = "; ".join(f"{p.label()}: {t * 1e3:.1f} ms" for p, t in times.items())
        logger.info(
            "MonteCarloInferer: S=%d, input %s on %s -> %s%s",
            self.num_samples,
            tuple(x.shape),
            x.device,
            plan.label(),
            f" (probe: {probe})" if probe else " (training call: fixed plan, not timed)" if training else "",
        )
        self.plans[key] = plan
        return plan

    def _generator(self, device: torch.device) -> torch.Generator | None:
        if self.seed is None:
            return None
        gen = torch.Generator(device=device)
        gen.manual_seed(self.seed)
        return gen

    def sample(
        self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        """Raw network outputs of ``S`` samples, ``(B, S, C, *sp)`` (no activation applied)."""
        module = network if isinstance(network, nn.Module) else None
        warn = module is not None and self.num_samples > 1 and not self._warned_deterministic
        if warn and module is not None and not stochastic_layers(module):
            self._warned_deterministic = True
            logger.warning(
                "MonteCarloInferer: the network has no stochastic layer; all %d samples will be identical "
                "(warned once per inferer).",
                self.num_samples,
            )
        # the noise of all S samples is drawn once and sliced per chunk, so the samples do not depend
        # on the chunk size or the windows (and an ensemble visits each member once)
        noise = draw_noise(module, self.num_samples, self._generator(inputs.device)) if module is not None else {}
        stacked = _SampleStackingNetwork(self, network, module, noise)
        with seeded_global_rng(self.seed, inputs.device):
            out = self.inferer(inputs, stacked, *args, **kwargs)
        return out.reshape(out.shape[0], self.num_samples, out.shape[1] // self.num_samples, *out.shape[2:])

    def __call__(
        self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        """Run Monte-Carlo inference; the returned layout depends on ``output`` (see class doc).

        A :class:`~monai.data.MetaTensor` input gives a MetaTensor output carrying the input's
        metadata (affine, file names), so savers and metrics can use it.
        """
        out = self._compute(as_plain_tensor(inputs), network, *args, **kwargs)
        if isinstance(inputs, MetaTensor):
            out = MetaTensor(out)
            out.copy_meta_from(inputs)
        return out

    def _compute(
        self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        raw = self.sample(inputs, network, *args, **kwargs)
        if self.activation is None:
            return raw
        probs = _ACTIVATIONS[self.activation](raw)
        if self.output == "samples":
            return probs
        if self.output == "mean":
            return probs.mean(dim=1)
        return summarize_samples(probs, self.activation)


class MonteCarloNetwork(nn.Module):
    """A stochastic network and its :class:`MonteCarloInferer` as one module: ``forward(x) = inferer(x, network)``.

    Lets tools that expect a plain ``nn.Module`` with the final output layout -- e.g. MONAI's
    ``verify_net_in_out`` against a bundle's ``network_data_format`` -- see the Monte-Carlo output
    (for ``output="uncertainty"``: mean probabilities plus the three uncertainty maps).
    """

    def __init__(self, network: nn.Module, inferer: MonteCarloInferer) -> None:
        super().__init__()
        self.network = network
        self.inferer = inferer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inferer(x, self.network)
