"""The one checkpoint module: paths, atomic writing, one set of messages for every reader, folds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from pfseg_pipeline.checkpoints import (
    CHECKPOINT_KINDS,
    RESUME_KEYS,
    checkpoint_path,
    find_folds,
    fold_checkpoints,
    for_prediction,
    is_resumable,
    load_weights,
    previous_path,
    read_checkpoint,
    save_checkpoint,
)
from pfseg_pipeline.errors import UserError


def _save(path, **extra):
    save_checkpoint(path, {"network": "unet3d", "model": torch.nn.Linear(2, 1).state_dict(), **extra})


def test_paths_and_kinds(tmp_path):
    assert CHECKPOINT_KINDS == ("final", "best", "latest")
    assert checkpoint_path(tmp_path, "best") == tmp_path / "checkpoint_best.pt"
    with pytest.raises(UserError, match="unknown checkpoint 'last' \\(choose from final, best, latest\\)"):
        checkpoint_path(tmp_path, "last")


def test_read_names_the_file_and_the_problem(tmp_path):
    path = tmp_path / "checkpoint_final.pt"
    with pytest.raises(UserError, match=f"{path}: checkpoint not found"):
        read_checkpoint(path)
    _save(path, epoch=3)
    assert read_checkpoint(path)["epoch"] == 3
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(UserError, match=f"{path}: corrupt or unreadable checkpoint"):
        read_checkpoint(path)
    torch.save({"weights": [1, 2]}, path)
    with pytest.raises(UserError, match="not a pfseg checkpoint"):
        read_checkpoint(path)


def test_folds_of_a_network_folder(tmp_path):
    for fold in ("1", "0", "all", "10"):
        _save(tmp_path / f"fold_{fold}" / "checkpoint_final.pt")
    _save(tmp_path / "fold_2" / "checkpoint_latest.pt")
    assert find_folds(tmp_path) == ["0", "1", "10", "all"]
    names, paths = fold_checkpoints(tmp_path, None, "final")
    assert names == ["0", "1", "10", "all"] and paths[0] == tmp_path / "fold_0" / "checkpoint_final.pt"
    with pytest.raises(UserError, match="no fold_\\* folder holds checkpoint_best.pt; found fold_0/"):
        fold_checkpoints(tmp_path, [], "best")
    with pytest.raises(UserError, match="checkpoint_final.pt: checkpoint not found"):
        fold_checkpoints(tmp_path, ["2"], "final")
    with pytest.raises(UserError, match="not a valid fold name"):
        fold_checkpoints(tmp_path, ["../x"], "final")


def test_weights_that_do_not_fit_are_named(tmp_path):
    model = torch.nn.Linear(2, 1)
    load_weights(model, {"module." + k: v for k, v in torch.nn.Linear(2, 1).state_dict().items()},
                 "ckpt.pt", "plans.json")  # a DDP prefix is taken off
    with pytest.raises(UserError, match="ckpt.pt: weights do not fit the network built from plans.json "
                                        "\\(1 shape mismatch"):
        load_weights(model, torch.nn.Linear(3, 1).state_dict(), "ckpt.pt", "plans.json")


def test_latest_keeps_one_generation_back(tmp_path):
    path = tmp_path / "checkpoint_latest.pt"
    assert previous_path(path) == tmp_path / "checkpoint_latest.prev.pt"
    _save(path, epoch=1)
    save_checkpoint(path, {"network": "unet3d", "model": {}, "epoch": 2}, keep_previous=True)
    assert read_checkpoint(path)["epoch"] == 2 and read_checkpoint(previous_path(path))["epoch"] == 1
    save_checkpoint(path, {"network": "unet3d", "model": {}, "epoch": 3}, keep_previous=True)
    assert read_checkpoint(path)["epoch"] == 3 and read_checkpoint(previous_path(path))["epoch"] == 2
    assert os.stat(path).st_ino != os.stat(previous_path(path)).st_ino   # two files, not two names
    save_checkpoint(path, {"network": "unet3d", "model": {}, "epoch": 4})   # without: prev untouched
    assert read_checkpoint(previous_path(path))["epoch"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_latest.prev.pt", "checkpoint_latest.pt"]


def test_a_failed_save_leaves_both_generations_as_they_were(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint_latest.pt"
    _save(path, epoch=1)
    save_checkpoint(path, {"network": "unet3d", "model": {}, "epoch": 2}, keep_previous=True)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def interrupted(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"network": "unet3d", "model": {}, "epoch": 3}, keep_previous=True)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_final_and_best_hold_what_prediction_needs(tmp_path):
    """A trained-like checkpoint (Adam state after one step): the prediction payload drops the
    optimiser, scheduler, scaler and RNG states and loses two thirds of its bytes, and still
    loads through `read_checkpoint` and `load_weights`."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv3d(4, 32, 3), torch.nn.Conv3d(32, 32, 3))
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.zeros(1, 4, 8, 8, 8)).sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1)
    full = {"network": "unet3d", "network_options": {}, "model": model.state_dict(), "plans": {}, "epoch": 3,
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": {},
            "rng": {"torch": torch.get_rng_state()}, "history": [{"epoch": 0, "loss": 1.0}], "best": {}}
    slim = for_prediction(full)
    assert set(full) - set(slim) == set(RESUME_KEYS) == {"optimizer", "scheduler", "scaler", "rng"}
    assert is_resumable(full) and not is_resumable(slim)
    save_checkpoint(tmp_path / "checkpoint_latest.pt", full)
    save_checkpoint(tmp_path / "checkpoint_final.pt", slim)
    latest, final = (os.path.getsize(tmp_path / f"checkpoint_{k}.pt") for k in ("latest", "final"))
    weights = sum(v.numel() * v.element_size() for v in model.state_dict().values())
    assert weights < final < 1.1 * weights   # the weights and a little metadata
    assert 2.9 * weights < latest < 3.2 * weights   # + Adam's two moments per weight
    ckpt = read_checkpoint(tmp_path / "checkpoint_final.pt")
    fresh = torch.nn.Sequential(torch.nn.Conv3d(4, 32, 3), torch.nn.Conv3d(32, 32, 3))
    load_weights(fresh, ckpt["model"], "checkpoint_final.pt", "plans.json")
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))
