"""Run LIDC bundle steps under torchrun; used by test_distributed.py.

Usage: torchrun --nproc_per_node=2 _dist_driver.py BUNDLE_ROOT STEP OVERRIDES_JSON
(STEP: train_deterministic | train | select)
"""

import json
import sys

from monai_bayes.bundle import finish_distributed, init_distributed, run_config

DISTRIBUTED_CONFIG = {
    "train_deterministic": "multi_gpu_train",
    "train": "multi_gpu_train",
    "select": "multi_gpu_select",
}

if __name__ == "__main__":
    bundle, step, overrides = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    init_distributed()
    run_config(bundle, [step, DISTRIBUTED_CONFIG[step]], overrides)
    finish_distributed()
