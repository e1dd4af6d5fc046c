"""Distillation of a stochastic teacher into a deterministic student (seed 004 §4; docs/distillation.md).

* Bayesian Dark Knowledge / posterior-expectation distillation (``"bdk"``): the teacher's predictive mean plus
  regression heads for its total-entropy and mutual-information maps;
* Ensemble Distribution Distillation (``"end2"``, Malinin et al. 2020): per-voxel Dirichlet concentrations
  trained by the Dirichlet NLL of the teacher's samples, uncertainty in closed form.
"""

from monai_bayes.distill.dirichlet import (
    concentrations,
    dirichlet_nll,
    dirichlet_uncertainty,
    heat_probabilities,
    sample_dirichlet_probabilities,
    smooth_probabilities,
)
from monai_bayes.distill.evaluate import (
    compare_with_teacher,
    foreground_union,
    inference_speedup,
    median_seconds,
    segmentation_scores,
    spearman,
)
from monai_bayes.distill.losses import BDKLoss, EnD2Loss, annealed_temperature
from monai_bayes.distill.student import (
    DistilledStudent,
    DistillKind,
    PrecisionHeadNetwork,
    build_student,
    init_student_from_teacher,
    load_student,
    save_student,
    student_out_channels,
)
from monai_bayes.distill.teacher import (
    TEACHER_KEY,
    TeacherBatch,
    cache_teacher_samples,
    teacher_inferer,
    teacher_samples,
)
from monai_bayes.distill.trainer import distillation_loss, distillation_trainer, train_student

__all__ = [
    "TEACHER_KEY",
    "BDKLoss",
    "DistillKind",
    "DistilledStudent",
    "EnD2Loss",
    "PrecisionHeadNetwork",
    "TeacherBatch",
    "annealed_temperature",
    "build_student",
    "cache_teacher_samples",
    "compare_with_teacher",
    "concentrations",
    "dirichlet_nll",
    "dirichlet_uncertainty",
    "distillation_loss",
    "distillation_trainer",
    "foreground_union",
    "heat_probabilities",
    "inference_speedup",
    "init_student_from_teacher",
    "load_student",
    "median_seconds",
    "sample_dirichlet_probabilities",
    "save_student",
    "segmentation_scores",
    "smooth_probabilities",
    "spearman",
    "student_out_channels",
    "teacher_inferer",
    "teacher_samples",
    "train_student",
]
