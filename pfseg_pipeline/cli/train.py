"""pfseg_train: train one network on one fold of a preprocessed dataset.

Defaults come from plans.json (epochs, iterations per epoch, batch size, learning rate, seed);
every override is logged. Multi-GPU (or multi-process on CPU, gloo) through torchrun:
`torchrun --nproc_per_node K -m pfseg_pipeline.cli.train NAME FOLD ...`. This module parses the
options and torchrun's environment, calls `training.recipe.train_fold` and reports.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from pfseg_pipeline.cli.common import ArgumentParser, add_common_args, entry_point, setup_logging
from pfseg_pipeline.devices import DEVICE_CHOICES, resolve_device
from pfseg_pipeline.errors import UserError
from pfseg_pipeline.networks.losses import ABLATIONS
from pfseg_pipeline.networks.registry import DEFAULT_NETWORK, NETWORKS
from pfseg_pipeline.paths import Workspace
from pfseg_pipeline.plans import load_plans
from pfseg_pipeline.plans_settings import apply_settings, parse_setting
from pfseg_pipeline.splits import SPLIT_NAMES

log = logging.getLogger(__name__)

FOLD_CHOICES = ("0", "1", "2", "3", "4", "all", *SPLIT_NAMES[1:])

EXAMPLES = """\
examples:
  pfseg_train Brats 0                                 # PFSeg, fold 0, settings from plans.json
  pfseg_train Brats all --network resunet3d           # a patch-based baseline on every case
  pfseg_train Brats paper --epochs 100                # the paper's 8/2 split (final checkpoint)
  pfseg_train Brats 0 --ablation us                   # the US row of the ablation (results: pfseg__us,
                                                      # or pfseg where the plan trains US: LR scale 1)
  pfseg_train Brats 0 --continue                      # resume from checkpoint_latest.pt
  pfseg_train Brats 0 --set training.optimizer=sgd --set training.lr=0.01 --variant sgd
                                                      # a recipe change (results: pfseg__sgd)
  pfseg_train Brats 0 --continue --force              # ... even though plans.json changed since
  pfseg_train Demo 0 --device cpu --epochs 2 --iterations-per-epoch 5 --num-workers 0
  torchrun --nproc_per_node 2 -m pfseg_pipeline.cli.train Brats 0    # DDP, one process per GPU

FOLD: 0-4 (5 folds seeded by case id), all (every case trains, no validation), or paper /
paper622 (same as --split paper / paper622). Results go to
WORKSPACE/results/NAME/NETWORK[__ABLATION][_VARIANT]/fold_FOLD. --set FIELD=VALUE changes any
field of plans.json for this run (dotted path; the value as JSON, else as text; validated as the
file is), recorded in the results folder's plans.json. --batch-size is per process; under DDP
an epoch has ceil(iterations / processes) steps per process. Ctrl-C or SIGTERM saves
checkpoint_latest.pt at the next iteration (exit 130 / 143); --continue restarts that epoch.
A second Ctrl-C or SIGTERM stops at once (the last complete checkpoint stays). While it runs,
the fold folder is locked: a second pfseg_train on it, or pfseg_plan_and_preprocess on its
dataset, is refused with one line naming this run.
"""


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="pfseg_train", description=__doc__, epilog=EXAMPLES)
    p.add_argument("name", metavar="NAME", help="dataset name (WORKSPACE/preprocessed/NAME)")
    p.add_argument("fold", metavar="FOLD", choices=FOLD_CHOICES, help="0-4, all, paper or paper622")
    p.add_argument("--network", choices=tuple(NETWORKS), default=DEFAULT_NETWORK,
                   help=f"default: {DEFAULT_NETWORK}")
    p.add_argument("--device", default="auto",
                   help=f"{DEVICE_CHOICES} (default: auto; cuda under torchrun: each process's own GPU)")
    p.add_argument("--epochs", type=int, default=None, metavar="E", help="default: plans.json")
    p.add_argument("--iterations-per-epoch", type=int, default=None, metavar="N", help="default: plans.json")
    p.add_argument("--batch-size", type=int, default=None, metavar="B",
                   help="per process; default: plans.json")
    p.add_argument("--lr", type=float, default=None, metavar="LR",
                   help="Adam learning rate; default: plans.json")
    p.add_argument("--ablation", choices=tuple(ABLATIONS), default=None,
                   help="pfseg ablation row: us, sr (+SR), tel (+TEL), ssl (+SSL), full (+SGM); default: "
                        "plans.json's training.pfseg_branches (full as planned); a row other "
                        "than the plan's trains into NETWORK__ROW")
    p.add_argument("--split", choices=SPLIT_NAMES, default=None,
                   help="folds (default), paper (8/2 by sorted id) or paper622 (6/2/2)")
    p.add_argument("--continue", dest="resume", action="store_true",
                   help="resume from checkpoint_latest.pt (start fresh when there is none; from "
                        "checkpoint_latest.prev.pt when it is damaged)")
    p.add_argument("--force", action="store_true",
                   help="with --continue: resume even though plans.json changed since the checkpoint")
    p.add_argument("--num-workers", type=int, default=None, metavar="N",
                   help="background augmentation processes (0: in the training process; default: on a CPU "
                        "0, every core a torch thread; on a GPU the cores but one)")
    p.add_argument("--seed", type=int, default=None, metavar="S", help="default: plans.json")
    p.add_argument("--use-best", action="store_true",
                   help="report the best-validation checkpoint instead of the final one")
    p.add_argument("--grad-clip", type=float, default=None, metavar="NORM",
                   help="max gradient norm, 0 for none (default: plans.json)")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="FIELD=VALUE",
                   help="change a plans.json field for this run, e.g. training.optimizer=sgd (repeatable)")
    p.add_argument("--variant", default=None, metavar="NAME",
                   help="results in NETWORK__NAME (NETWORK__ABLATION_NAME with --ablation)")
    p.add_argument("--no-amp", action="store_true", help="train in fp32 on CUDA too")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_common_args(p)
    return p


def _split_and_fold(args) -> tuple[str, str]:
    named = args.fold in ("paper", "paper622")
    split = args.split or (args.fold if named else "folds")
    if split == "folds" and named:
        raise UserError(f"pfseg_train: FOLD {args.fold} needs --split {args.fold} (or no --split)")
    if split != "folds" and named and args.fold != split:
        raise UserError(f"pfseg_train: FOLD {args.fold} contradicts --split {split}")
    return split, args.fold if split == "folds" else split


def main(argv: Sequence[str] | None = None) -> int:
    from pfseg_pipeline.training import distributed as ddp
    from pfseg_pipeline.training.recipe import (
        Overrides,
        check_preprocessed,
        fold_directory,
        train_fold,
    )
    from pfseg_pipeline.training.run_locks import check_training_free, training_locks

    args = build_parser().parse_args(argv)
    # torchrun's environment, read here only (the library never reads os.environ)
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    ws = Workspace.resolve(args.workspace)
    check_preprocessed(ws, args.name)  # before the log file: a user error leaves nothing behind
    split, fold = _split_and_fold(args)
    settings = tuple(parse_setting(s) for s in args.settings)
    run = None   # the run's plans (fold_directory reads plans.json itself where it needs them)
    if settings:   # a bad one: one line, no log file yet
        run = apply_settings(load_plans(ws.plans_file(args.name)), settings, log_changes=False)
    fold_dir = fold_directory(ws, args.name, args.network, fold, args.ablation, args.variant, run)
    if rank == 0:
        check_training_free(ws.preprocessed(args.name), fold_dir)  # refused: not a line in its log
    setup_logging(fold_dir / "training_log.txt" if rank == 0 else None, args.verbose)
    if rank != 0:
        logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("numexpr").setLevel(logging.WARNING)  # batchgenerators -> pandas -> numexpr chatter
    if split != "folds" and args.fold != split:
        log.warning("FOLD %s is ignored with --split %s", args.fold, split)
    overrides = Overrides(epochs=args.epochs, iterations_per_epoch=args.iterations_per_epoch,
                          batch_size=args.batch_size, lr=args.lr, seed=args.seed, grad_clip=args.grad_clip,
                          num_workers=args.num_workers, amp=not args.no_amp, use_best=args.use_best,
                          progress_bar=not args.no_progress, settings=settings, variant=args.variant)
    device = resolve_device(args.device, local_rank)
    dist = ddp.init_distributed(rank, world, local_rank, device.type)
    try:
        with training_locks(ws.preprocessed(args.name), fold_dir, dist):
            stopped = train_fold(ws, args.name, args.network, fold, split, args.ablation, overrides, device,
                                 dist, resume=args.resume, force=args.force)
    finally:
        ddp.shutdown(dist)
    return 128 + stopped if stopped else 0


console = entry_point(main)

if __name__ == "__main__":
    console()
