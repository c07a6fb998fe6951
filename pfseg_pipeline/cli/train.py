"""pfseg_train: train one network on one fold of a preprocessed dataset.

Defaults come from plans.json (epochs, iterations per epoch, batch size, learning rate, seed);
every override is logged. Multi-GPU (or multi-process on CPU, gloo) through torchrun:
`torchrun --nproc_per_node K -m pfseg_pipeline.cli.train NAME FOLD ...`.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

from pfseg_pipeline.cli.common import ArgumentParser, add_workspace_arg, entry_point, setup_logging
from pfseg_pipeline.errors import UserError
from pfseg_pipeline.fileio import read_json, write_bytes, write_json
from pfseg_pipeline.paths import Workspace
from pfseg_pipeline.plans import load_plans

log = logging.getLogger("pfseg")

NETWORK_CHOICES = ("pfseg", "unet3d", "resunet3d", "vnet", "resunet3d_up", "hdc")
ABLATION_CHOICES = ("us", "sr", "tel", "ssl", "full")
FOLD_CHOICES = ("0", "1", "2", "3", "4", "all", "paper", "paper622")

EXAMPLES = """\
examples:
  pfseg_train Brats 0                                 # PFSeg, fold 0, settings from plans.json
  pfseg_train Brats all --network resunet3d           # a patch-based baseline on every case
  pfseg_train Brats paper --epochs 100                # the paper's 8/2 split (final checkpoint)
  pfseg_train Brats 0 --ablation us                   # the US row of the ablation (results: pfseg__us)
  pfseg_train Brats 0 --continue                      # resume from checkpoint_latest.pt
  pfseg_train Demo 0 --device cpu --epochs 2 --iterations-per-epoch 5 --num-workers 0
  torchrun --nproc_per_node 2 -m pfseg_pipeline.cli.train Brats 0    # DDP, one process per GPU

FOLD: 0-4 (5 folds seeded by case id), all (every case trains, no validation), or paper /
paper622 (same as --split paper / paper622). Results go to
WORKSPACE/results/NAME/NETWORK[__ABLATION]/fold_FOLD. --batch-size is per process; under DDP
an epoch has ceil(iterations / processes) steps per process. Ctrl-C or SIGTERM saves
checkpoint_latest.pt at the next iteration (exit 130 / 143); --continue restarts that epoch.
"""


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="pfseg_train", description=__doc__, epilog=EXAMPLES)
    p.add_argument("name", metavar="NAME", help="dataset name (WORKSPACE/preprocessed/NAME)")
    p.add_argument("fold", metavar="FOLD", choices=FOLD_CHOICES, help="0-4, all, paper or paper622")
    p.add_argument("--network", choices=NETWORK_CHOICES, default="pfseg", help="default: pfseg")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto", help="default: auto")
    p.add_argument("--epochs", type=int, default=None, metavar="E", help="default: plans.json")
    p.add_argument("--iterations-per-epoch", type=int, default=None, metavar="N", help="default: plans.json")
    p.add_argument("--batch-size", type=int, default=None, metavar="B",
                   help="per process; default: plans.json")
    p.add_argument("--lr", type=float, default=None, metavar="LR",
                   help="Adam learning rate; default: plans.json")
    p.add_argument("--ablation", choices=ABLATION_CHOICES, default="full",
                   help="pfseg ablation row: us, sr (+SR), tel (+TEL), ssl (+SSL), full (+SGM, default)")
    p.add_argument("--split", choices=("folds", "paper", "paper622"), default=None,
                   help="folds (default), paper (8/2 by sorted id) or paper622 (6/2/2)")
    p.add_argument("--continue", dest="resume", action="store_true",
                   help="resume from checkpoint_latest.pt (start fresh when there is none)")
    p.add_argument("--num-workers", type=int, default=None, metavar="N",
                   help="background augmentation processes (0: in the training process)")
    p.add_argument("--seed", type=int, default=None, metavar="S", help="default: plans.json")
    p.add_argument("--use-best", action="store_true",
                   help="report the best-validation checkpoint instead of the final one")
    p.add_argument("--grad-clip", type=float, default=None, metavar="NORM",
                   help="max gradient norm, 0 for none (default: plans.json)")
    p.add_argument("--no-amp", action="store_true", help="train in fp32 on CUDA too")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_workspace_arg(p)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def _split_and_fold(args) -> tuple[str, str]:
    named = args.fold in ("paper", "paper622")
    split = args.split or (args.fold if named else "folds")
    if split == "folds" and named:
        raise UserError(f"pfseg_train: FOLD {args.fold} needs --split {args.fold} (or no --split)")
    if split != "folds" and named and args.fold != split:
        raise UserError(f"pfseg_train: FOLD {args.fold} contradicts --split {split}")
    return split, args.fold if split == "folds" else split


def _device(choice: str, local_rank: int):
    import torch

    if choice == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available")
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def _load_splits(preprocessed: Path, cases_dir: Path, is_main: bool) -> dict:
    from pfseg_pipeline.training.splits import make_splits

    path = preprocessed / "splits.json"
    if path.is_file():
        return read_json(path)
    # hidden names are temporary files of interrupted writes (fileio.atomic_path), not cases
    ids = sorted(p.stem for p in cases_dir.glob("*.npz") if not p.name.startswith("."))
    splits = make_splits(ids)
    if is_main:
        write_json(path, splits)
    log.warning("%s was missing: made it from the %d cached cases", path, len(ids))
    return splits


def _setting(name: str, given, planned):
    if given is None:
        return planned
    if given != planned:
        log.info("override: %s %s -> %s", name, planned, given)
    return given


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # torchrun's environment, read here only (the library never reads os.environ)
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    ws = Workspace.resolve(args.workspace)
    preprocessed = ws.preprocessed(args.name)
    if not ws.plans_file(args.name).is_file():
        raise UserError(f"{ws.plans_file(args.name)}: preprocessed dataset not found "
                        f"(run pfseg_plan_and_preprocess -d {args.name} first)")
    if not ws.dataset_file(args.name).is_file():
        raise UserError(f"{ws.dataset_file(args.name)}: not found (re-run pfseg_plan_and_preprocess)")
    if args.network != "pfseg" and args.ablation != "full":
        raise UserError(f"--ablation {args.ablation} applies to --network pfseg only")
    split, fold = _split_and_fold(args)
    variant = args.ablation if args.ablation != "full" else None
    fold_dir = ws.fold_dir(args.name, args.network, fold, variant)
    setup_logging(fold_dir / "training_log.txt" if rank == 0 else None, args.verbose)
    if rank != 0:
        logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("numexpr").setLevel(logging.WARNING)  # batchgenerators -> pandas -> numexpr chatter
    if split != "folds" and args.fold != split:
        log.warning("FOLD %s is ignored with --split %s", args.fold, split)
    plans = load_plans(ws.plans_file(args.name))
    return _train(args, plans, ws, preprocessed, split, fold, fold_dir, rank, world, local_rank)


def _train(args, plans, ws, preprocessed, split, fold, fold_dir, rank, world, local_rank) -> int:
    import torch

    from pfseg_pipeline.networks.registry import PATCH_FREE, build_network
    from pfseg_pipeline.training import distributed as ddp
    from pfseg_pipeline.training.checkpoints import checkpoint_path, seed_everything
    from pfseg_pipeline.training.data_loader import build_training_batches
    from pfseg_pipeline.training.losses import ABLATIONS, PFSegLoss, SegmentationLoss
    from pfseg_pipeline.training.splits import held_out_cases, select_split
    from pfseg_pipeline.training.trainer import Trainer, TrainOptions, make_scheduler
    from pfseg_pipeline.training.validation import ValidationCases

    cases_dir = ws.cases_dir(args.name)
    splits = _load_splits(preprocessed, cases_dir, rank == 0)
    train_ids, val_ids = select_split(splits, split, fold, str(preprocessed / "splits.json"))
    test_ids = held_out_cases(splits, split)
    missing = [c for c in {*train_ids, *val_ids, *test_ids} if not (cases_dir / f"{c}.npz").is_file()]
    if missing:
        raise UserError(f"{cases_dir}: {len(missing)} case(s) of the split are not cached, e.g. "
                        f"{sorted(missing)[0]}.npz (re-run pfseg_plan_and_preprocess)")
    if not train_ids:
        raise UserError(f"{preprocessed / 'splits.json'}: split {split} fold {fold} has no training cases")

    patch_free = args.network in PATCH_FREE
    t = plans.training
    epochs = _setting("epochs", args.epochs, t.epochs)
    iterations = _setting("iterations per epoch", args.iterations_per_epoch, t.iterations_per_epoch)
    batch_size = _setting("batch size", args.batch_size,
                          plans.batch_size if patch_free else plans.patch_based.batch_size)
    lr = _setting("learning rate", args.lr, t.lr)
    seed = _setting("seed", args.seed, t.seed)
    grad_clip = _setting("gradient clipping", args.grad_clip, t.grad_clip)
    default_workers = max(1, min(8, (os.cpu_count() or 2) // world - 1))  # leave a core to the trainer
    workers = _setting("worker processes", args.num_workers, default_workers)
    for name, value in (("--epochs", epochs), ("--iterations-per-epoch", iterations),
                        ("--batch-size", batch_size)):
        if value < 1:
            raise UserError(f"{name} must be at least 1, got {value}")
    if workers < 0 or not lr > 0:
        raise UserError("--num-workers must be >= 0 and --lr positive")
    if world > 1:
        iterations = math.ceil(iterations / world)
        log.info("DDP over %d processes: %d iterations per epoch per process, batch %d per process",
                 world, iterations, batch_size)

    device = _device(args.device, local_rank)
    ctx = ddp.init_distributed(rank, world, local_rank, device.type)
    if device.type == "cpu" and world > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    try:
        ablation = ABLATIONS[args.ablation]
        network_options = ablation.network_options() if args.network == "pfseg" else {}
        seed_everything(seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
        network = build_network(args.network, plans, **network_options)
        if t.region_prior:
            network.init_output_prior(t.region_prior)   # a resumed run loads its own weights over it
        if args.network == "pfseg":
            loss = PFSegLoss(t.loss_weights, args.ablation, t.ssl_pool)
        else:
            loss = SegmentationLoss()
        optimizer = torch.optim.Adam(network.parameters(), lr=lr, weight_decay=t.weight_decay)
        scheduler = make_scheduler(optimizer, bool(val_ids), epochs, t.scheduler)
        batches = build_training_batches(
            plans, cases_dir, train_ids, patch_free, args.network == "pfseg" and network_options["use_sgm"],
            batch_size, workers, seed, rank)
        val_cases = ValidationCases(cases_dir, val_ids, plans) if val_ids else None
        run_info = {"network": args.network, "network_options": network_options, "ablation": args.ablation,
                    "dataset": args.name, "split": split, "fold": fold, "train_cases": len(train_ids),
                    "val_cases": len(val_ids), "batch_size": batch_size, "num_workers": workers,
                    "lr": lr, "seed": seed, "world_size": world}
        options = TrainOptions(epochs=epochs, iterations_per_epoch=iterations, amp=not args.no_amp,
                               grad_clip=grad_clip or None, use_best=args.use_best,
                               progress_bar=not args.no_progress)
        trainer = Trainer(network, loss, batches, val_cases, optimizer, scheduler, device, fold_dir, plans,
                          options, run_info, ctx)
        if ctx.is_main:
            _copy_dataset_files(ws, args.name, fold_dir.parent)
        log.info("training %s on %s %s (%d train, %d validation cases) on %s -> %s", args.network, split,
                 fold, len(train_ids), len(val_ids), device, fold_dir)
        latest = checkpoint_path(fold_dir, "latest")
        if args.resume and latest.is_file():
            trainer.resume(latest)
        elif args.resume:
            log.warning("--continue: no %s yet; starting from scratch", latest)
        elif latest.is_file():
            log.warning("starting over: the checkpoints in %s will be replaced (--continue resumes)",
                        fold_dir)
        stopped = trainer.fit()
        if stopped:
            return 128 + int(stopped)
        if ctx.is_main:
            _final_evaluation(args, trainer, split, val_ids, test_ids, ws.dataset_file(args.name), plans,
                              device, fold_dir)
        ddp.barrier(ctx)
        return 0
    finally:
        ddp.shutdown(ctx)


def _copy_dataset_files(ws: Workspace, name: str, network_dir: Path) -> None:
    """plans.json and dataset.json beside the folds, so a copied results folder predicts on its own."""
    for source in (ws.plans_file(name), ws.dataset_file(name)):
        write_bytes(network_dir / source.name, source.read_bytes())


def _final_evaluation(args, trainer, split, val_ids, test_ids, dataset_file, plans, device, fold_dir) -> None:
    """Score the held-out cases (the fold's validation cases; the test set of a named split) on
    their native grid, from their source files, with the final checkpoint unless --use-best."""
    from pfseg_pipeline.data.layouts import Case
    from pfseg_pipeline.training.checkpoints import checkpoint_path, load_checkpoint
    from pfseg_pipeline.training.validation import evaluate_cases

    ids, cases_from = (test_ids, "test") if split != "folds" else (val_ids, "validation")
    if not ids:
        log.info("no held-out cases in this split: no validation/summary.json")
        return
    which = "final"
    if args.use_best:
        if trainer.best["epoch"] is None:
            log.warning("--use-best: no validation cases chose a best checkpoint; reporting the final one")
        else:
            which = "best"
    trainer.network.load_state_dict(load_checkpoint(checkpoint_path(fold_dir, which), device)["model"])
    sources = {c["case"]: Case.from_json(c) for c in read_json(dataset_file).get("cases", [])}
    unknown = sorted(set(ids) - set(sources))
    if unknown:
        raise UserError(f"{dataset_file}: held-out case {unknown[0]} is not listed (re-run "
                        "pfseg_plan_and_preprocess)")
    summary = evaluate_cases(trainer.network, plans, [sources[c] for c in ids], device,
                             fold_dir / "validation", trainer.amp,
                             extra={"checkpoint": which, "cases_from": cases_from, "split": split})
    for region, metrics in summary["summary"].items():
        log.info("%s (%s cases, %s checkpoint): Dice %.4f", region, cases_from, which,
                 metrics["dice"]["mean"])


console = entry_point(main)

if __name__ == "__main__":
    console()
