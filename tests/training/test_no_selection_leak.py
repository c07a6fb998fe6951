"""Issue 14's acceptance: in a default fold run no scheduler, early stop or checkpoint choice
receives a metric computed on the fold's reported cases (its validation cases).

The fold's validation Dice is replaced by sentinel values no real Dice takes; every scheduler
step, early-stop decision and checkpoint save is recorded; none may see a sentinel, while the
sentinels do reach metrics.csv (the progress curve). With monitor cases on, the same spies show
the monitor's Dice (and only it) reaching the plateau schedule and the best checkpoint.
"""

from __future__ import annotations

import csv
import math

import pytest
import torch

from pfseg_pipeline.fileio import read_json
from pfseg_pipeline.plans import TrainingPlan
from pfseg_pipeline.splits import read_splits, select_split
from pfseg_pipeline.training import schedules
from pfseg_pipeline.training.recipe import Overrides, train_fold
from pfseg_pipeline.training.trainer import Trainer
from pfseg_pipeline.training.validation import ValidationCases

NAME = "Tiny"
SENTINELS = (0.123457, 0.234568, 0.345679)   # per region; epoch e adds e / 1000


def _close_to_any(value, values) -> bool:
    return any(math.isclose(float(value), v, rel_tol=0, abs_tol=1e-9) for v in values)


@pytest.fixture
def spies(monkeypatch):
    """Record what reaches the schedule, the trainer's early-stop and best-checkpoint state, and
    which checkpoints are written; give the reported cases sentinel Dice values."""
    seen = {"plateau": [], "poly": [], "saves": [], "best": [], "reported_calls": 0, "monitor_calls": 0,
            "sentinels": set()}
    real_call = ValidationCases.__call__

    def dice(self, network, device, amp=False):
        if self.case_ids == seen["reported_ids"]:
            epoch = seen["reported_calls"]
            seen["reported_calls"] += 1
            values = [s + epoch / 1000 for s in SENTINELS]
            seen["sentinels"].update(values)
            seen["sentinels"].add(sum(values) / len(values))   # their mean, as the trainer takes it
            return values
        seen["monitor_calls"] += 1
        return real_call(self, network, device, amp)

    real_plateau_step = torch.optim.lr_scheduler.ReduceLROnPlateau.step

    def plateau_step(self, metrics, *args, **kwargs):
        seen["plateau"].append(float(metrics))
        return real_plateau_step(self, metrics, *args, **kwargs)

    real_set_iteration = schedules.PolyDecay.set_iteration

    def set_iteration(self, iteration):
        seen["poly"].append(iteration)
        return real_set_iteration(self, iteration)

    real_save = Trainer.save

    def save(self, which, epochs_done, interrupted=None):
        seen["saves"].append(which)
        seen["best"].append(self.best.get("dice"))
        return real_save(self, which, epochs_done, interrupted)

    monkeypatch.setattr(ValidationCases, "__call__", dice)
    monkeypatch.setattr(torch.optim.lr_scheduler.ReduceLROnPlateau, "step", plateau_step)
    monkeypatch.setattr(schedules.PolyDecay, "set_iteration", set_iteration)
    monkeypatch.setattr(Trainer, "save", save)
    return seen


def _run(tmp_path, make_workspace, make_plans, spies, **training):
    plans = make_plans(hr=(8, 16, 16), epochs=3)
    for key, value in training.items():
        setattr(plans.training, key, value)
    ws = make_workspace(tmp_path / "ws", plans)
    splits = read_splits(ws.preprocessed(NAME) / "splits.json", ws.cases_dir(NAME), plans.training.split_seed)
    train_ids, spies["reported_ids"] = select_split(splits, "folds", "0")
    overrides = Overrides(num_workers=0, progress_bar=False)
    assert train_fold(ws, NAME, "pfseg", "0", overrides=overrides) is None
    fold = ws.root / "results" / NAME / "pfseg" / "fold_0"
    with open(fold / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return fold, rows, train_ids


def test_a_default_fold_run_feeds_nothing_the_reported_cases_score(tmp_path, make_workspace, make_plans,
                                                                    spies):
    # the default preset's recipe (tiny_plans changes only epochs, iterations, lr and seed), with
    # early stopping asked for: without monitor cases it must not read the reported cases either
    fold, rows, _ = _run(tmp_path, make_workspace, make_plans, spies, early_stopping_patience=1)
    default = TrainingPlan()
    assert (default.scheduler, default.monitor_fraction) == ("plateau", 0.0)
    assert spies["reported_calls"] == 3 and spies["monitor_calls"] == 0
    # logged: the progress curve holds the sentinels, epoch by epoch
    logged = [float(r["val_dice_WT"]) for r in rows]
    assert logged == pytest.approx([SENTINELS[0] + e / 1000 for e in range(3)])
    # steered by nothing: no plateau step at all (poly decay by iteration), no best checkpoint
    assert spies["plateau"] == [] and spies["poly"] and max(spies["poly"]) < 3 * 2
    assert "best" not in spies["saves"] and not (fold / "checkpoint_best.pt").exists()
    assert all(b is None for b in spies["best"])
    summary = read_json(fold / "train_summary.json")
    assert summary["best_epoch"] is None and summary["best_selected_on"] is None
    assert summary["stopped_early_after_epoch"] is None and summary["final_epoch"] == 2   # no early stop
    assert summary["reported_checkpoint"] == "final" and summary["monitor_cases"] == []
    assert read_json(fold / "validation" / "summary.json")["checkpoint"] == "final"


def test_with_monitor_cases_only_their_dice_steers(tmp_path, make_workspace, make_plans, spies):
    fold, rows, train_ids = _run(tmp_path, make_workspace, make_plans, spies, monitor_fraction=0.5)
    summary = read_json(fold / "train_summary.json")
    monitor = summary["monitor_cases"]
    # carved from the fold's training cases, disjoint from the reported ones, not trained on
    assert monitor and set(monitor) < set(train_ids) and not set(monitor) & set(spies["reported_ids"])
    assert summary["train_cases"] == len(train_ids) - len(monitor)
    assert spies["monitor_calls"] == spies["reported_calls"] == 3
    monitor_means = [float(r["monitor_dice_mean"]) for r in rows]
    assert spies["plateau"] == pytest.approx(monitor_means)
    assert not any(_close_to_any(v, spies["sentinels"]) for v in spies["plateau"])
    assert not any(b is not None and _close_to_any(b, spies["sentinels"]) for b in spies["best"])
    assert summary["best_dice_mean"] == pytest.approx(max(monitor_means))
    assert (fold / "checkpoint_best.pt").is_file() and summary["best_selected_on"].startswith("monitor")
