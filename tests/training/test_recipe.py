"""The recipe as a library function: plans + overrides -> a Trainer, and a whole fold from Python."""

from __future__ import annotations

import logging

import pytest
import torch

from pfseg_pipeline.checkpoints import read_checkpoint
from pfseg_pipeline.errors import UserError
from pfseg_pipeline.networks.losses import PFSegLoss
from pfseg_pipeline.plans import load_plans
from pfseg_pipeline.training.recipe import Overrides, build_trainer, train_fold
from pfseg_pipeline.training.schedules import PolyDecay

NAME = "Tiny"


def test_build_trainer_takes_every_value_from_the_plans_and_logs_overrides(tmp_path, make_workspace,
                                                                          make_plans, caplog):
    plans = make_plans(hr=(8, 16, 16))
    plans.training.grad_clip, plans.training.weight_decay = 3.0, 1e-5
    ws = make_workspace(tmp_path / "ws", plans, n_cases=3)
    plans = load_plans(ws.plans_file(NAME))
    with caplog.at_level(logging.INFO, logger="pfseg_pipeline.training.recipe"):
        trainer = build_trainer(plans, ws.cases_dir(NAME), ["case_00", "case_01"], ["case_02"], "pfseg",
                                tmp_path / "out", torch.device("cpu"), ablation="sr",
                                overrides=Overrides(epochs=4, num_workers=0, lr=5e-3))
    try:
        assert isinstance(trainer.loss, PFSegLoss) and trainer.loss.ablation_name == "sr"
        assert trainer.network.options == {"use_sr": True, "use_sgm": False}
        group = trainer.optimizer.param_groups[0]
        assert type(trainer.optimizer) is torch.optim.Adam
        assert group["lr"] == 5e-3 and group["weight_decay"] == 1e-5           # override, plans
        assert trainer.options.grad_clip == 3.0 and trainer.options.epochs == 4
        assert trainer.options.iterations_per_epoch == plans.training.iterations_per_epoch
        # plateau, but no monitor cases: the validation cases may not steer it, so poly decay stands in
        assert plans.training.scheduler == "plateau" and isinstance(trainer.scheduler, PolyDecay)
        assert trainer.monitor is None and trainer.validation.case_ids == ["case_02"]
        assert list(trainer.validation.regions) == ["WT", "TC", "ET"]
        batch = next(trainer.train_batches)
        assert "lr_image" in batch and "guidance_patch" not in batch  # the sr row has no SGM
    finally:
        trainer.train_batches.close()
    assert "override: epochs 2 -> 4" in caplog.text and "override: learning rate" in caplog.text
    assert "override: seed" not in caplog.text


def test_a_fold_trains_from_python_without_the_command(tmp_path, make_workspace, make_plans):
    plans = make_plans(hr=(8, 16, 16), patch=(8, 16, 16))
    ws = make_workspace(tmp_path / "ws", plans, n_cases=3)
    overrides = Overrides(epochs=1, iterations_per_epoch=1, num_workers=0, progress_bar=False)
    assert train_fold(ws, NAME, "resunet3d", "all", overrides=overrides) is None
    fold = ws.root / "results" / NAME / "resunet3d" / "fold_all"
    assert read_checkpoint(fold / "checkpoint_final.pt")["network"] == "resunet3d"
    assert (fold.parent / "plans.json").is_file()
    with pytest.raises(UserError, match="--ablation us applies to --network pfseg only"):
        train_fold(ws, NAME, "resunet3d", "all", ablation="us", overrides=overrides)


def test_deep_supervision_trains_and_the_held_out_cases_predict_from_its_checkpoint(tmp_path, make_workspace,
                                                                                   make_plans):
    """The plans switch reaches the builder, the checkpoint records it, and the end-of-training
    evaluation (a Predictor rebuilt from the checkpoint's options) runs the network without heads."""
    plans = make_plans(hr=(8, 16, 16), widths=(4, 8, 16))
    ws = make_workspace(tmp_path / "ws", plans, n_cases=5)
    overrides = Overrides(epochs=1, iterations_per_epoch=2, num_workers=0, progress_bar=False,
                          settings=(("training.deep_supervision", True),))
    assert train_fold(ws, NAME, "pfseg", "paper", split="paper", overrides=overrides) is None
    fold = ws.root / "results" / NAME / "pfseg" / "fold_paper"
    ckpt = read_checkpoint(fold / "checkpoint_final.pt")
    assert ckpt["network_options"] == {"use_sr": True, "use_sgm": True, "deep_supervision": True}
    assert any(k.startswith("ds_heads.") for k in ckpt["model"])
    assert (fold / "validation" / "summary.json").is_file()
    assert load_plans(fold.parent / "plans.json").training.deep_supervision is True
