"""More stochastic-BMR rounds from a saved BMR-S&S network: {optimise ``interval`` epochs, BMR pass} × ``rounds``.

Loads ``<nets>/bmr.pt`` (written by ``bmr_experiment.py --save-nets``; the masks come back with it), trains it
with the experiment's ELBO (β = 1, KL per training voxel, fresh Adam at the experiment's rates) and the LIDC
bundle's data, prunes with :func:`~monai_bayes.reduction.bmr_prune` after every ``interval`` epochs and evaluates
with the bundle's evaluator. Writes ``<out>/rounds_continued.csv`` (one row per pass: pruned fraction, Dice, GED,
ECE).

Usage (the experiment's size arguments, then)::

    python scripts/bmr_continue.py --nets /tmp/bmrq/nets --out results/bmr_quality --more-rounds 10 [size args]
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch
from monai.utils import set_determinism

from monai_bayes.networks.checkpoint import load_stochastic_state_dict
from monai_bayes.reduction import bmr_prune, prune_report

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bmr_experiment", REPO / "scripts" / "bmr_experiment.py")
assert _spec is not None and _spec.loader is not None
exp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(exp)
_post = importlib.util.spec_from_file_location("bmr_posthoc", REPO / "scripts" / "bmr_posthoc.py")
assert _post is not None and _post.loader is not None
posthoc = importlib.util.module_from_spec(_post)
_post.loader.exec_module(posthoc)


def main() -> None:
    argv = sys.argv[1:]
    own = {"--nets": None, "--more-rounds": "10", "--interval": "2", "--first-round": "6"}
    for key in own:
        if key in argv:
            own[key] = argv[argv.index(key) + 1]
    rest = [a for k, a in enumerate(argv) if a not in own and (k == 0 or argv[k - 1] not in own)]
    args = posthoc._parse(rest)
    torch.set_num_threads(1)
    set_determinism(args.seed)
    parser = exp.bundle_parser(args)
    loader = parser.get_parsed_content("train_data#dataloader")
    nll = parser.get_parsed_content("nll")
    evaluator = parser.get_parsed_content("evaluate#evaluator")
    kl_scale = float(len(parser.get_parsed_content("train_items")) * args.patch**2)
    net = load_stochastic_state_dict(
        parser.get_parsed_content("network_def"), torch.load(Path(str(own["--nets"])) / "bmr.pt", weights_only=True)
    )
    print("loaded: pruned", prune_report(net).fraction, flush=True)
    opt = exp.optimizer(net, 1e-3)
    rows = []
    first, interval = int(str(own["--first-round"])), int(str(own["--interval"]))
    for k in range(int(str(own["--more-rounds"]))):
        for _ in range(interval):
            exp.train_epoch(net, loader, nll, opt, kl_scale)
        result = bmr_prune(net, optimizer=opt)
        scores = exp.evaluate(evaluator, net)
        row = {
            "round": first + k,
            "epochs after the saved network": (k + 1) * interval,
            "pruned fraction": exp.fmt(result.report.fraction),
            "Dice": exp.fmt(scores["Dice"]),
            "GED": exp.fmt(scores["GED"]),
            "ECE": exp.fmt(scores["ECE"], 4),
        }
        print(row, flush=True)
        rows.append(row)
        exp.write_csv(Path(args.out) / "rounds_continued.csv", rows)


if __name__ == "__main__":
    main()
