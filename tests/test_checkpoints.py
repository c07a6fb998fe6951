"""The one checkpoint module: paths, atomic writing, one set of messages for every reader, folds."""

from __future__ import annotations

import pytest
import torch

from pfseg_pipeline.checkpoints import (
    CHECKPOINT_KINDS,
    checkpoint_path,
    find_folds,
    fold_checkpoints,
    load_weights,
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
