"""Diagnostic: does refreshing only the batch-norm statistics break an EnD² student initialised from its teacher?

Builds the teacher-width EnD² student from the LIDC sparse-Bayes (1 %) run's posterior mean
(:func:`monai_bayes.distill.init_student_from_teacher`), prints the Spearman of its total-uncertainty map with the
teacher's (S = 8) over the union foreground of the validation patches, then runs 3 epochs of training patches
through it in train mode without any gradient step (only the running statistics change) and prints it again.
Needs the bundle run of docs/distillation.md.  ``OMP_NUM_THREADS=1 python scripts/distill_batchnorm_diagnostic.py``
"""

from __future__ import annotations

from pathlib import Path

import torch

from monai_bayes.bundle.distill import _loader, _parser
from monai_bayes.distill import build_student, init_student_from_teacher
from monai_bayes.distill.evaluate import foreground_union, spearman
from monai_bayes.distill.teacher import teacher_samples
from monai_bayes.inferers import MonteCarloInferer
from monai_bayes.uncertainty import uncertainty_maps
from monai_bayes.utils.tensors import as_plain_tensor

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "lidc_sparse_bayes"


def main() -> None:
    """Print the two correlations."""
    torch.manual_seed(0)
    parser = _parser(BUNDLE, {"patch_size": 64})
    teacher = parser.get_parsed_content("network").eval()
    student = init_student_from_teacher(build_student("end2", 2, channels=(16, 32, 64, 128, 256)), teacher)
    batches = list(_loader(parser, "eval_items", 10))
    inferer = MonteCarloInferer(num_samples=8, activation="softmax", output="samples", seed=0)
    with torch.no_grad():
        samples = [teacher_samples(teacher, inferer, as_plain_tensor(b["image"])) for b in batches]
    maps = [uncertainty_maps(probs, "softmax") for probs in samples]

    def score() -> float:
        student.eval()
        pairs = []
        with torch.no_grad():
            for batch, maps_t in zip(batches, maps, strict=True):
                maps_s = student.uncertainty(as_plain_tensor(batch["image"]))
                mask = foreground_union(maps_t["mean"], maps_s["mean"])
                pairs.append((maps_t["total"][mask], maps_s["total"][mask]))
        return spearman(torch.cat([a for a, _ in pairs]), torch.cat([b for _, b in pairs]))

    print(f"initialised from the teacher's posterior mean: Spearman {score():.3f}")
    student.train()
    with torch.no_grad():
        for _ in range(3):
            for batch in _loader(parser, "train_items", 10, shuffle=True):
                student(as_plain_tensor(batch["image"]))
    print(f"after refreshing only the batch-norm statistics (3 epochs, no gradient): Spearman {score():.3f}")


if __name__ == "__main__":
    main()
