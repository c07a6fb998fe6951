"""The training recipe: plans + overrides -> network, loss, optimiser, schedule, loader, Trainer.

`train_fold` is the whole of what `pfseg_train` runs, as a library function a notebook can call:

    from pfseg_pipeline.paths import Workspace
    from pfseg_pipeline.training.recipe import Overrides, train_fold
    train_fold(Workspace.resolve("pfseg_data"), "Demo", "resunet3d", "0", overrides=Overrides(epochs=2))

It reads the fold's cases from splits.json, builds every part from plans.json through the
network's spec (`networks.registry`) and the small factories (`networks.step.OPTIMIZERS`,
`training.schedules.SCHEDULERS`), trains (`Trainer.fit`), and scores the held-out cases on
their native grid (`training.validation.evaluate_held_out`). `build_trainer` is the recipe
alone, for callers that bring their own cases and folder. Every value comes from plans.json;
an override is logged.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pfseg_pipeline.checkpoints import checkpoint_path, previous_path
from pfseg_pipeline.devices import compute_identity, resolve_device
from pfseg_pipeline.errors import UserError
from pfseg_pipeline.fileio import write_bytes
from pfseg_pipeline.networks.losses import ABLATIONS
from pfseg_pipeline.networks.registry import build_network, network_spec, planned_ablation, training_options
from pfseg_pipeline.networks.step import make_optimizer
from pfseg_pipeline.paths import Workspace
from pfseg_pipeline.plans import Plans, load_plans, save_plans
from pfseg_pipeline.plans_settings import apply_settings
from pfseg_pipeline.splits import held_out_cases, monitor_split, read_splits, select_split
from pfseg_pipeline.training import distributed as ddp
from pfseg_pipeline.training.cpu_threads import available_cores, cpu_split
from pfseg_pipeline.training.out_of_memory import out_of_memory_as_plan_error
from pfseg_pipeline.training.resume import check_plans_unchanged, resumable_checkpoint
from pfseg_pipeline.training.rng import seed_everything
from pfseg_pipeline.training.schedules import make_scheduler
from pfseg_pipeline.training.trainer import Trainer, TrainOptions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Overrides:
    """What one run changes of plans.json (None: as planned), and how it runs."""

    epochs: int | None = None
    iterations_per_epoch: int | None = None
    batch_size: int | None = None        # per process
    lr: float | None = None
    seed: int | None = None
    grad_clip: float | None = None       # 0: no clipping
    num_workers: int | None = None       # loader processes (0: in the training process)
    amp: bool = True                     # mixed precision (used on CUDA only)
    use_best: bool = False               # report the best checkpoint (monitor cases, else validation)
    progress_bar: bool = True
    # plans.json fields changed for this run, (dotted field, value) in order (`plans_settings`)
    settings: tuple[tuple[str, Any], ...] = ()
    variant: str | None = None           # results in NETWORK__VARIANT (NETWORK__ABLATION_VARIANT)


def _setting(name: str, given, planned):
    if given is None:
        return planned
    if given != planned:
        log.info("override: %s %s -> %s", name, planned, given)
    return given




def run_plans(plans: Plans, overrides: Overrides, log_changes: bool = True) -> Plans:
    """The plans a run trains with: plans.json with the run's `--set` settings applied (each
    change logged once a run: by build_trainer)."""
    label = f"variant {overrides.variant}" if overrides.variant else ""
    return apply_settings(plans, overrides.settings, label, log_changes)


def build_trainer(plans: Plans, cases_dir: Path, train_ids: list[str], val_ids: list[str], network: str,
                  output_dir: Path, device: torch.device, ablation: str | None = None,
                  overrides: Overrides = Overrides(), dist: ddp.DistContext | None = None,
                  run_info: dict | None = None) -> Trainer:
    """The Trainer of `network` (an ablation row for pfseg; None: the plans' own,
    `registry.planned_ablation`) on these cases, as the plans say.

    `val_ids` are the cases the run reports: their Dice (every `validation_interval` epochs) is
    only logged. With `plans.training.monitor_fraction` > 0, monitor cases are carved from
    `train_ids` (and not trained on): only their Dice steers the plateau schedule, early stopping
    and the best checkpoint. Seeds every generator with the plans' seed (or the override) before
    the weights are drawn, so every rank starts from the same weights; the seg head starts at the
    planned region prior.
    """
    from pfseg_pipeline.training.data_loader import build_training_batches
    from pfseg_pipeline.training.region_prior import run_region_prior
    from pfseg_pipeline.training.transforms import TrainingInputs
    from pfseg_pipeline.training.validation import ValidationCases

    dist = dist or ddp.DistContext()
    spec = network_spec(network)
    plans = run_plans(plans, overrides)
    ablation = planned_ablation(network, plans, ablation)
    options = training_options(network, plans, ablation)
    t = plans.training
    training = dataclasses.replace(
        t, epochs=_setting("epochs", overrides.epochs, t.epochs),
        iterations_per_epoch=_setting("iterations per epoch", overrides.iterations_per_epoch,
                                      t.iterations_per_epoch),
        lr=_setting("learning rate", overrides.lr, t.lr), seed=_setting("seed", overrides.seed, t.seed),
        grad_clip=_setting("gradient clipping", overrides.grad_clip, t.grad_clip))
    batch_size = _setting("batch size", overrides.batch_size, spec.batch_size(plans))
    # on a CPU, torch's threads and the workers share this process's cores (training/cpu_threads.py)
    workers = _setting("worker processes", overrides.num_workers,
                       cpu_split(device.type, dist.world_size).workers)
    for name, value in (("--epochs", training.epochs), ("--batch-size", batch_size),
                        ("--iterations-per-epoch", training.iterations_per_epoch)):
        if value < 1:
            raise UserError(f"{name} must be at least 1, got {value}")
    if workers < 0 or not training.lr > 0 or training.grad_clip < 0:
        raise UserError("--num-workers must be >= 0, --lr positive and --grad-clip >= 0")
    iterations = training.iterations_per_epoch
    if dist.enabled:
        iterations = math.ceil(iterations / dist.world_size)
        log.info("DDP over %d processes: %d iterations per epoch per process, batch %d per process",
                 dist.world_size, iterations, batch_size)

    train_ids, monitor_ids = monitor_split(train_ids, training.monitor_fraction, training.split_seed)
    if monitor_ids:
        log.info("monitor cases (steer the schedule, early stopping and the best checkpoint; not trained "
                 "on): %s", ", ".join(monitor_ids))
    elif training.early_stopping_patience:
        log.warning("training.early_stopping_patience is set but there are no monitor cases: no early stop")
    inputs = TrainingInputs.for_network(network, options)
    shift = training.augmentation.max_shift_zyx if inputs.whole_volume else (0, 0, 0)
    prior = run_region_prior(plans, cases_dir, train_ids, inputs.whole_volume,
                             [round(f * s) for f, s in zip(shift, plans.hr_shape_zyx)])
    seed_everything(training.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    model = build_network(network, plans, **options)
    if prior["values"]:
        model.init_output_prior(prior["values"])   # a resumed run loads its own weights over it
    loss = spec.make_loss(plans, ablation)
    optimizer = make_optimizer(model.parameters(), training)
    scheduler = make_scheduler(optimizer, training, iterations, bool(monitor_ids))
    batches = build_training_batches(plans, cases_dir, train_ids, inputs, batch_size, workers, training.seed,
                                     dist.rank)
    validation = ValidationCases(cases_dir, val_ids, plans) if val_ids else None
    monitor = ValidationCases(cases_dir, monitor_ids, plans) if monitor_ids else None
    info = {"network": network, "network_options": options, "ablation": ablation, **(run_info or {}),
            "train_cases": len(train_ids), "val_cases": len(val_ids), "monitor_cases": monitor_ids,
            "batch_size": batch_size,
            "num_workers": workers, "torch_threads": torch.get_num_threads(), "lr": training.lr,
            "seed": training.seed, "world_size": dist.world_size,
            "variant": overrides.variant, "settings": {k: v for k, v in overrides.settings},
            "region_prior": prior, "compute": compute_identity(device)}
    trainer_options = TrainOptions(epochs=training.epochs, iterations_per_epoch=iterations,
                                   grad_clip=training.grad_clip or None, amp=overrides.amp,
                                   use_best=overrides.use_best, progress_bar=overrides.progress_bar,
                                   early_stopping_patience=training.early_stopping_patience,
                                   validation_interval=training.validation_interval)
    return Trainer(model, loss, batches, validation, optimizer, scheduler, device, output_dir, plans,
                   trainer_options, info, dist, monitor=monitor)


def train_fold(workspace: Workspace, name: str, network: str, fold: str, split: str = "folds",
               ablation: str | None = None, overrides: Overrides = Overrides(),
               device: torch.device | None = None,
               dist: ddp.DistContext | None = None, resume: bool = False, force: bool = False) -> int | None:
    """Train `network` on one fold of the preprocessed dataset `name`, then score its held-out cases.

    Parameters
    ----------
    workspace, name : where `preprocessed/NAME` is; results go to
        `results/NAME/NETWORK[__ABLATION]/fold_FOLD` (`fold_directory`).
    fold : "0".."4" or "all" for the `folds` split; the split's name for `paper` / `paper622`.
    split : "folds", "paper" or "paper622".
    ablation : a row of `networks.losses.ABLATIONS` or "full" (pfseg only); None: the plans'
        own (`training.pfseg_branches`: the whole method, or the segmentation network alone where
        the planner dropped the branches).
    overrides : what this run changes of plans.json.
    device : default: CUDA when there is one (`devices.resolve_device`).
    dist : the process group of a torchrun launch (`training.distributed.init_distributed`).
    resume : continue from checkpoint_latest.pt when there is one (from the generation before it
        when it is damaged: `training.resume`).
    force : resume even though plans.json changed since the checkpoint was written.

    Returns None when training finished, or the number of the signal that stopped it.
    """
    dist = dist or ddp.DistContext()
    device = device or resolve_device("auto", dist.local_rank)
    check_preprocessed(workspace, name)
    plans_file, dataset_file = workspace.plans_file(name), workspace.dataset_file(name)
    plans = load_plans(plans_file)
    fold_dir = fold_directory(workspace, name, network, fold, ablation, overrides.variant,
                              run_plans(plans, overrides, log_changes=False))
    preprocessed, cases_dir = workspace.preprocessed(name), workspace.cases_dir(name)
    splits = read_splits(preprocessed / "splits.json", cases_dir, plans.training.split_seed,
                         write=dist.is_main)
    train_ids, val_ids = select_split(splits, split, fold, str(preprocessed / "splits.json"))
    test_ids = held_out_cases(splits, split)
    missing = [c for c in {*train_ids, *val_ids, *test_ids} if not (cases_dir / f"{c}.npz").is_file()]
    if missing:
        raise UserError(f"{cases_dir}: {len(missing)} case(s) of the split are not cached, e.g. "
                        f"{sorted(missing)[0]}.npz (re-run pfseg_plan_and_preprocess)")
    if not train_ids:
        raise UserError(f"{preprocessed / 'splits.json'}: split {split} fold {fold} has no training cases")
    found = resumable_checkpoint(fold_dir, device) if resume else None
    if found:  # before anything is written: a refused resume leaves the network folder as it was
        check_plans_unchanged(*found, run_plans(plans, overrides, log_changes=False), plans_file, force)
    share = cpu_split(device.type, dist.world_size, overrides.num_workers)
    if share.threads is not None:   # a CPU: torch's threads and the loader's workers share the cores
        torch.set_num_threads(share.threads)
        log.info("CPU: %d torch thread(s) + %d loader worker(s) on %d core(s)", share.threads, share.workers,
                 available_cores())
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    trainer = build_trainer(plans, cases_dir, train_ids, val_ids, network, fold_dir, device, ablation,
                            overrides, dist, {"dataset": name, "split": split, "fold": fold})
    if dist.is_main:  # plans.json and dataset.json beside the folds: a copied results folder predicts alone
        # (fingerprint.json too: prediction holds new cases against the training cases)
        fingerprint_file = workspace.preprocessed(name) / "fingerprint.json"
        for source in (dataset_file, fingerprint_file):
            if source.is_file():
                write_bytes(fold_dir.parent / source.name, source.read_bytes())
        if overrides.settings:   # the plans this run trained with, its settings recorded in `reasons`
            save_plans(trainer.plans, fold_dir.parent / plans_file.name)
        else:
            write_bytes(fold_dir.parent / plans_file.name, plans_file.read_bytes())
    log.info("training %s on %s %s (%d train, %d validation cases) on %s -> %s", network, split, fold,
             len(train_ids), len(val_ids), device, fold_dir)
    latest = checkpoint_path(fold_dir, "latest")
    if found:
        trainer.resume(found[1], found[0])
    elif resume:
        log.warning("--continue: no %s yet; starting from scratch", latest)
    elif latest.is_file():
        log.warning("starting over: the checkpoints in %s will be replaced (--continue resumes)", fold_dir)
        if dist.is_main:  # never fall back to a generation of the run being replaced
            previous_path(latest).unlink(missing_ok=True)
    with out_of_memory_as_plan_error(trainer, dataset_file):
        stopped = trainer.fit()
    if stopped:
        return int(stopped)
    if dist.is_main:
        from pfseg_pipeline.training.validation import evaluate_held_out

        held_out, cases_from = (val_ids, "validation") if split == "folds" else (test_ids, "test")
        evaluate_held_out(trainer, held_out, cases_from, split, dataset_file, overrides.use_best)
    ddp.barrier(dist)
    return None


def check_preprocessed(workspace: Workspace, name: str) -> None:
    """A UserError naming the file unless `name` is preprocessed (plans.json and dataset.json)."""
    if not workspace.plans_file(name).is_file():
        raise UserError(f"{workspace.plans_file(name)}: preprocessed dataset not found "
                        f"(run pfseg_plan_and_preprocess -d {name} first)")
    if not workspace.dataset_file(name).is_file():
        raise UserError(f"{workspace.dataset_file(name)}: not found (re-run pfseg_plan_and_preprocess)")


VARIANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]*")


def fold_directory(workspace: Workspace, name: str, network: str, fold: str, ablation: str | None = None,
                   variant: str | None = None, plans: Plans | None = None) -> Path:
    """results/NAME/NETWORK[__ABLATION][_VARIANT]/fold_FOLD: `pfseg__us`, `pfseg__sgd`,
    `pfseg__us_sgd`. NETWORK alone holds the row the plans train by default (`ablation` None or
    that row: `registry.planned_ablation`), so another row gets its suffix: `pfseg__us` beside a
    full default, `pfseg__full` beside a segmentation-only one (a plan set so). `plans`: the run's
    (default: the workspace's plans.json, read only when a row is named). A row the network does
    not take (e.g. `us` for a baseline) is a UserError, before anything is read."""
    if variant is not None and (not VARIANT_NAME.fullmatch(variant) or variant in ABLATIONS):
        raise UserError(f"--variant {variant!r}: use letters, digits, '.' and '-' (not an ablation row's "
                        f"name: {', '.join(ABLATIONS)})")
    suffix = None
    if ablation is not None:
        network_spec(network).options(ablation)  # a row the network does not take is a UserError
        plans = plans or load_plans(workspace.plans_file(name))
        suffix = None if ablation == planned_ablation(network, plans) else ablation
    parts = [p for p in (suffix, variant) if p]
    return workspace.fold_dir(name, network, fold, "_".join(parts) or None)
