"""One registry of training methods: what each trains, selects, evaluates and which bundle configs it runs.

Both orchestrators read it: the in-memory recipe :func:`~monai_bayes.workflows.train_sparse_bayes` and the
bundle runner (:func:`~monai_bayes.bundle.pipeline_steps`, :class:`~monai_bayes.bundle.RunLayout`,
:func:`~monai_bayes.bundle.num_mc_samples`, :func:`~monai_bayes.bundle.build_network`). A new method (BMR,
SG-MCMC, full Bayes from scratch) is one :class:`MethodSpec` in :data:`METHOD_REGISTRY` plus the library
code of any new step; the configs it names must exist in the bundle.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Literal

__all__ = ["METHODS", "METHOD_REGISTRY", "MethodSpec", "check_method", "method_spec"]

#: what the first (deterministic) training step writes: the shared deterministic model, the method's own
#: model (MC dropout), or one file per ensemble member
DeterministicOutput = Literal["shared", "own", "members"]
#: how the Bayesian weights are chosen after step 1: Top-k saliency, every candidate weight, or none
Selection = Literal["saliency", "all"] | None
#: Monte-Carlo samples drawn at evaluation / inference
McSamples = Literal["one", "members", "num_samples"]


@dataclass(frozen=True)
class MethodSpec:
    """What a method trains, selects and evaluates.

    Parameters
    ----------
    name : str
        The ``method`` setting (``--method`` of the bundles, ``method=`` of ``train_sparse_bayes``).
    deterministic_output : {"shared", "own", "members"}
        Where step 1 (NLL training) writes: the shared deterministic model, the method's own model, or one
        model per ensemble member.
    mc_dropout : bool
        Step 1 trains the network with MC dropout added.
    selection : {"saliency", "all"} or None
        Step 2: Top ``r_bayes`` by saliency (partial Bayes), every candidate weight (full Bayes), or no step 2.
    bayes_training : bool
        Step 3: ELBO training of the converted network.
    mc_samples : {"one", "members", "num_samples"}
        Samples at evaluation: 1 (deterministic network), one per ensemble member, or the configured count.
    uses_r_bayes : bool
        The run name and the reports carry ``r_bayes``.
    description : str
        One line for docs and error messages.
    train_config : str
        The bundle config of step 3 (ELBO / method-specific training), e.g. ``"train"``; a method with its own
        training loop names its own config here and adds its steps to the bundle.
    """

    name: str
    deterministic_output: DeterministicOutput = "shared"
    mc_dropout: bool = False
    selection: Selection = None
    bayes_training: bool = False
    mc_samples: McSamples = "num_samples"
    uses_r_bayes: bool = False
    description: str = ""
    train_config: str = "train"

    @property
    def configs(self) -> tuple[str, ...]:
        """The bundle step configs this method runs, in order (each merged after ``common``)."""
        steps = ["train_deterministic"]
        if self.selection is not None:
            steps.append("select")
        if self.bayes_training:
            steps.append(self.train_config)
        return (*steps, "evaluate")

    @property
    def stochastic(self) -> bool:
        """Whether the final network draws different samples per pass."""
        return self.mc_samples != "one"


METHOD_REGISTRY: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        MethodSpec(
            "sparse_bayes",
            selection="saliency",
            bayes_training=True,
            uses_r_bayes=True,
            description="SBN (seed 000): deterministic training, Top r_bayes by saliency made Bayesian, ELBO",
        ),
        MethodSpec("deterministic", mc_samples="one", description="the deterministic network (one sample)"),
        MethodSpec(
            "mc_dropout",
            deterministic_output="own",
            mc_dropout=True,
            description="MC dropout (Gal & Ghahramani 2016) trained with the NLL",
        ),
        MethodSpec(
            "full_bayes",
            selection="all",
            bayes_training=True,
            description="mean-field Bayes over every candidate weight (r_bayes = 1), from the deterministic means",
        ),
        MethodSpec(
            "ensemble",
            deterministic_output="members",
            mc_samples="members",
            description="deep ensemble of independently initialised deterministic members",
        ),
        MethodSpec(
            "sgmcmc",
            bayes_training=True,
            train_config="train_sgmcmc",
            description="cyclical SGHMC (Zhang et al. 2020) from the deterministic model; an ensemble of its samples",
        ),
    )
}

#: the method names, in registry order
METHODS: tuple[str, ...] = tuple(METHOD_REGISTRY)


def method_spec(method: str) -> MethodSpec:
    """The registry entry of ``method``.

    Parameters
    ----------
    method : str
        A key of :data:`METHOD_REGISTRY`.

    Returns
    -------
    MethodSpec

    Raises
    ------
    ValueError
        For an unknown name, listing the known ones and the nearest match.
    """
    if isinstance(method, str) and method in METHOD_REGISTRY:
        return METHOD_REGISTRY[method]
    near = difflib.get_close_matches(str(method), METHODS, n=1)
    hint = f" Did you mean {near[0]!r}?" if near else ""
    raise ValueError(f"method must be one of {METHODS}, got {method!r}.{hint}")


def check_method(method: str) -> str:
    """Validate a method name (the bundles' ``--method`` override) and return it.

    Parameters
    ----------
    method : str
        Name to check.

    Returns
    -------
    str
        ``method`` unchanged.

    Raises
    ------
    ValueError
        If ``method`` is not in :data:`METHOD_REGISTRY`.
    """
    return method_spec(method).name
