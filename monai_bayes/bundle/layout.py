"""Where a bundle run keeps its files, per method (one place, so configs and runner agree).

::

    <runs_dir>/deterministic/model.pt            step 1 (shared by sparse/full Bayes and ensemble member 0)
    <runs_dir>/ensemble_members/member_<m>.pt    ensemble members m = 1 … M-1
    <runs_dir>/<run_name>/selected.pt            step 2: converted network before ELBO training
    <runs_dir>/<run_name>/selection.json         step 2: per-layer report of the Bayesian weights
    <runs_dir>/<run_name>/selection_summary.json step 2: selection_region, its modules, predicted MC cost
    <runs_dir>/<run_name>/model.pt               step 3 (or the MC-dropout model)
    <runs_dir>/<run_name>/network.json           settings of a method's own architecture (Prob. U-Net, SSN)
    <runs_dir>/<run_name>/costs_<step>.json      parameters, FLOPs per step, epoch times
    <runs_dir>/<run_name>/eval/                  per-case CSV, summary JSON, figures
    <runs_dir>/<run_name>/inference/             NIfTI masks and uncertainty maps

``run_name`` is ``deterministic``, ``mc_dropout``, ``full_bayes``, ``ensemble<M>`` or
``sparse_bayes_r<r_bayes>``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from monai_bayes.selection.topk import check_r_bayes
from monai_bayes.workflows.methods import METHODS, MethodSpec, check_method, method_spec

__all__ = ["METHODS", "RunLayout", "check_method"]


@dataclass(frozen=True)
class RunLayout:
    """File layout of one method's run inside a bundle (see module docstring).

    Parameters
    ----------
    runs_dir
        root of all runs (e.g. ``<bundle_root>/runs``).
    method
        one of :data:`METHODS`.
    r_bayes
        fraction of Bayesian weights (``sparse_bayes`` only).
    ensemble_size
        ``M`` (``ensemble`` only).
    member_index
        which ensemble member a training step writes (0 = the deterministic model).
    """

    runs_dir: str | os.PathLike
    method: str = "sparse_bayes"
    r_bayes: float = 0.01
    ensemble_size: int = 5
    member_index: int = 0

    def __post_init__(self) -> None:
        check_method(self.method)
        if self.spec.uses_r_bayes:
            check_r_bayes(self.r_bayes)
        if self.spec.deterministic_output == "members" and self.ensemble_size < 2:
            raise ValueError(f"ensemble_size must be >= 2, got {self.ensemble_size}.")
        if not 0 <= self.member_index < max(self.ensemble_size, 1):
            raise ValueError(f"member_index must be in [0, {self.ensemble_size}), got {self.member_index}.")

    @property
    def spec(self) -> MethodSpec:
        """The method's registry entry."""
        return method_spec(self.method)

    @property
    def reported_r_bayes(self) -> float | None:
        """The fraction of Bayesian weights reported for this run: ``r_bayes``, 1.0 when every candidate
        weight is Bayesian (full Bayes), ``None`` for methods without Bayesian weights.
        """
        if self.spec.uses_r_bayes:
            return self.r_bayes
        return 1.0 if self.spec.selection == "all" else None

    @property
    def root(self) -> Path:
        return Path(self.runs_dir)

    @property
    def run_name(self) -> str:
        if self.spec.uses_r_bayes:
            return f"{self.method}_r{self.r_bayes:g}"
        if self.spec.deterministic_output == "members":
            return f"{self.method}{self.ensemble_size}"
        return self.method

    @property
    def run_dir(self) -> Path:
        return self.root / self.run_name

    @property
    def deterministic_checkpoint(self) -> Path:
        return self.root / "deterministic" / "model.pt"

    @property
    def member_checkpoints(self) -> list[Path]:
        """Checkpoints of the ensemble members; member 0 is the deterministic model."""
        members = self.root / "ensemble_members"
        return [self.deterministic_checkpoint] + [members / f"member_{m}.pt" for m in range(1, self.ensemble_size)]

    @property
    def train_deterministic_checkpoint(self) -> Path:
        """What the deterministic training step writes for this method (and member)."""
        output = self.spec.deterministic_output
        if output == "own":
            return self.model_checkpoint
        if output == "members":
            return self.member_checkpoints[self.member_index]
        return self.deterministic_checkpoint

    @property
    def network_settings(self) -> Path:
        """The settings a method with its own architecture was built with (``network.json`` next to its model)."""
        return self.run_dir / "network.json"

    @property
    def selected_checkpoint(self) -> Path:
        return self.run_dir / "selected.pt"

    @property
    def selection_report(self) -> Path:
        return self.run_dir / "selection.json"

    @property
    def model_checkpoint(self) -> Path:
        """The final model of this method (for ``ensemble``, the first member's checkpoint)."""
        spec = self.spec
        if spec.deterministic_output == "members":
            return self.member_checkpoints[0]
        if spec.deterministic_output == "shared" and not spec.bayes_training:
            return self.deterministic_checkpoint
        return self.run_dir / "model.pt"

    def costs_file(self, step: str) -> Path:
        """Cost summary JSON of a training step (``train_deterministic`` or ``train``) of this run/member."""
        if step == "train_deterministic":
            if self.spec.deterministic_output == "own":
                return self.run_dir / "costs_train_deterministic.json"
            if self.spec.deterministic_output == "members" and self.member_index > 0:
                return self.root / "ensemble_members" / f"costs_member_{self.member_index}.json"
            return self.root / "deterministic" / "costs_train_deterministic.json"
        return self.run_dir / f"costs_{step}.json"

    @property
    def cost_files(self) -> dict[str, Path]:
        """Every training step's cost file that makes up this method's training cost."""
        if self.spec.deterministic_output == "members":
            return {
                f"member_{m}": replace(self, member_index=m).costs_file("train_deterministic")
                for m in range(self.ensemble_size)
            }
        files = {"train_deterministic": self.costs_file("train_deterministic")} if self.spec.pretrain else {}
        if self.spec.bayes_training:
            files["train"] = self.costs_file("train")
        return files

    @property
    def eval_dir(self) -> Path:
        return self.run_dir / "eval"

    @property
    def inference_dir(self) -> Path:
        return self.run_dir / "inference"
