"""--continue: the generation before a damaged checkpoint_latest.pt, and a plans.json changed since."""

from __future__ import annotations

import csv
import json
import os
import signal

import pytest
import torch

from pfseg_pipeline.checkpoints import read_checkpoint
from pfseg_pipeline.cli.common import run
from pfseg_pipeline.cli.train import main
from pfseg_pipeline.training import trainer as trainer_module
from pfseg_pipeline.training.resume import plans_differences

NAME = "Tiny"


def _train(ws, *extra) -> int:
    return run(main, [NAME, "all", "--workspace", str(ws.root), "--no-progress",
                      "--iterations-per-epoch", "1", "--num-workers", "0", *extra])


def _fold(ws):
    return ws.root / "results" / NAME / "pfseg" / "fold_all"


def _rows(path):
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if not k.endswith("_seconds")} for row in csv.DictReader(f)]


def _files(folder, but=("training_log.txt",)):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name not in but}


@pytest.fixture
def stopped_after(monkeypatch):
    """`stopped_after(k)`: the next training sends itself SIGTERM once epoch k-1 is written, so it
    stops at that epoch boundary (exit 143) with checkpoint_latest.pt at epoch k and the
    generation before it at epoch k-1."""
    def arm(epochs: int) -> None:
        real = trainer_module.write_metrics_csv

        def write(path, history):
            real(path, history)
            if len(history) == epochs:
                os.kill(os.getpid(), signal.SIGTERM)

        monkeypatch.setattr(trainer_module, "write_metrics_csv", write)
    return arm


@pytest.fixture
def two_generations(tmp_path, make_workspace, make_plans, stopped_after, monkeypatch):
    """A workspace whose fold stopped after epoch 2 of 3: latest at epoch 2, prev at epoch 1."""
    ws = make_workspace(tmp_path / "ws", make_plans(hr=(8, 16, 16)), n_cases=3)
    stopped_after(2)
    assert _train(ws, "--epochs", "3") == 128 + signal.SIGTERM
    monkeypatch.undo()
    fold = _fold(ws)
    assert read_checkpoint(fold / "checkpoint_latest.pt")["epoch"] == 2
    assert read_checkpoint(fold / "checkpoint_latest.prev.pt")["epoch"] == 1
    assert "optimizer" in read_checkpoint(fold / "checkpoint_latest.prev.pt")
    return ws


def test_a_damaged_latest_resumes_from_the_generation_before_it(two_generations, tmp_path, make_workspace,
                                                                make_plans, capsys):
    reference = make_workspace(tmp_path / "reference", make_plans(hr=(8, 16, 16)), n_cases=3)
    assert _train(reference, "--epochs", "3") == 0
    fold = _fold(two_generations)
    latest = fold / "checkpoint_latest.pt"
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])   # a copy cut short
    capsys.readouterr()

    assert _train(two_generations, "--epochs", "3", "--continue") == 0
    err = capsys.readouterr().err
    assert (f"{latest}: corrupt or unreadable checkpoint" in err
            and "resuming from the generation before it, checkpoint_latest.prev.pt (epoch 1)" in err), err
    # epochs 1 and 2 ran again from the epoch-1 state: the run ends as an uninterrupted one
    assert _rows(fold / "metrics.csv") == _rows(_fold(reference) / "metrics.csv")
    final = read_checkpoint(fold / "checkpoint_final.pt")
    ref_final = read_checkpoint(_fold(reference) / "checkpoint_final.pt")
    assert all(torch.equal(final["model"][k], v) for k, v in ref_final["model"].items())
    # finished: final holds no optimiser state, the kept generation is gone, latest is whole again
    assert "optimizer" not in final and "optimizer" in read_checkpoint(latest)
    assert not (fold / "checkpoint_latest.prev.pt").exists()
    assert not [p for p in fold.rglob("*") if ".tmp" in p.name]


def test_both_generations_damaged_is_one_line_and_changes_nothing(two_generations, capsys):
    fold = _fold(two_generations)
    latest, previous = fold / "checkpoint_latest.pt", fold / "checkpoint_latest.prev.pt"
    latest.write_bytes(b"not a checkpoint")
    previous.write_bytes(previous.read_bytes()[:1000])
    before = _files(two_generations.root / "results")
    capsys.readouterr()
    assert _train(two_generations, "--epochs", "3", "--continue") == 2
    err = capsys.readouterr().err
    line = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(line) == 1 and str(latest) in line[0] and str(previous) in line[0], err
    assert "the generation before it cannot be used either" in line[0] and "Traceback" not in err
    assert _files(two_generations.root / "results") == before


def test_changed_plans_refuse_to_resume_unless_forced(two_generations, capsys):
    plans_file = two_generations.plans_file(NAME)
    plans = json.loads(plans_file.read_text())
    plans["training"]["lr"] = 1e-5
    plans["training"]["augmentation"]["p_gamma"] = 0.9
    plans["reasons"]["training.lr"] = "edited by hand"   # a note: not a change of plan
    plans_file.write_text(json.dumps(plans))
    before = _files(two_generations.root / "results")
    capsys.readouterr()

    assert _train(two_generations, "--epochs", "3", "--continue") == 2
    err = capsys.readouterr().err
    assert (f"error: {plans_file}: changed since checkpoint_latest.pt was written "
            "(training.augmentation.p_gamma, training.lr); resuming would mix two plans: pass --force") in err
    assert "Traceback" not in err
    assert _files(two_generations.root / "results") == before   # the network folder's plans.json too

    assert _train(two_generations, "--epochs", "3", "--continue", "--force") == 0
    err = capsys.readouterr().err
    assert "training.augmentation.p_gamma, training.lr); resuming anyway (--force)" in err
    assert "resuming from" in err and "at epoch 2" in err
    assert read_checkpoint(_fold(two_generations) / "checkpoint_final.pt")["epoch"] == 3


def test_plans_differences_names_leaves_and_fills_old_fields(make_plans):
    plans = make_plans()
    trained = plans.to_json()
    assert plans_differences(trained, plans) == []
    older = json.loads(json.dumps(trained))
    del older["training"]["ssl_pool"]          # written before the field existed: filled on load
    older["memory"] = {"budget_gb": 3}         # the planner's prediction: not a change of plan
    assert plans_differences(older, plans) == []
    older["network"]["widths"] = [4, 8, 32]
    older["hr_shape_zyx"] = [32, 32, 32]
    assert plans_differences(older, plans) == ["hr_shape_zyx", "network.widths"]
