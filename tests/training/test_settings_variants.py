"""`pfseg_train --set FIELD=VALUE --variant NAME`: a recipe change as a named row of results."""

from __future__ import annotations

from pfseg_pipeline.checkpoints import read_checkpoint
from pfseg_pipeline.cli.common import run
from pfseg_pipeline.cli.train import main
from pfseg_pipeline.fileio import read_json
from pfseg_pipeline.plans import load_plans

NAME = "Tiny"


def test_a_variant_trains_with_its_settings_into_its_own_folder(tmp_path, make_workspace, make_plans,
                                                                capsys):
    from pfseg_pipeline.cli import compare

    ws = make_workspace(tmp_path / "ws", make_plans(hr=(8, 16, 16)), n_cases=3)
    argv = [NAME, "all", "--workspace", str(ws.root), "--no-progress", "--epochs", "1",
            "--iterations-per-epoch", "1", "--num-workers", "0", "--ablation", "us", "--variant", "v1",
            "--set", "training.lr=0.005", "--set", "training.loss_weights.seg=2"]
    assert run(main, argv) == 0
    net_dir = ws.root / "results" / NAME / "pfseg__us_v1"
    plans = load_plans(net_dir / "plans.json")                     # the plans this run trained with
    assert plans.training.lr == 0.005 and plans.training.loss_weights["seg"] == 2.0
    assert plans.reasons["training.lr"] == "set for this run (variant v1): --set training.lr=0.005"
    assert load_plans(ws.plans_file(NAME)).training.lr == 3e-3      # the workspace's plans are untouched
    summary = read_json(net_dir / "fold_all" / "train_summary.json")
    assert summary["variant"] == "v1" and summary["ablation"] == "us"
    assert summary["settings"] == {"training.lr": 0.005, "training.loss_weights.seg": 2}
    ckpt = read_checkpoint(net_dir / "fold_all" / "checkpoint_final.pt")
    assert ckpt["plans"]["training"]["lr"] == 0.005
    latest = read_checkpoint(net_dir / "fold_all" / "checkpoint_latest.pt")   # final holds no optimiser
    assert latest["optimizer"]["param_groups"][0]["lr"] == 0.005     # poly at the run's first (only) step
    log = (net_dir / "fold_all" / "training_log.txt").read_text()
    assert log.count("--set training.lr: 0.003 -> 0.005 (variant v1)") == 1
    # resumed with the same settings: each change is logged once more (once per run started), on the
    # console too (checking the settings before the run logs nothing)
    capsys.readouterr()
    assert run(main, [*argv, "--epochs", "2", "--continue"]) == 0
    log = (net_dir / "fold_all" / "training_log.txt").read_text()
    assert log.count("--set training.lr: 0.003 -> 0.005 (variant v1)") == 2
    assert capsys.readouterr().err.count("--set training.lr: 0.003 -> 0.005") == 1
    capsys.readouterr()
    assert run(compare.main, [NAME, "-f", "all", "--workspace", str(ws.root)]) == 0
    table = (ws.root / "results" / NAME / "comparison.md").read_text()
    assert "| pfseg__us_v1 |" in table and 'set: training.lr=0.005, training.loss_weights.seg=2' in table


def test_a_bad_setting_or_variant_is_one_line_and_leaves_nothing(tmp_path, make_workspace, make_plans,
                                                                  capsys):
    ws = make_workspace(tmp_path / "ws", make_plans(hr=(8, 16, 16)), n_cases=2)
    base = [NAME, "all", "--workspace", str(ws.root), "--no-progress"]
    assert run(main, [*base, "--set", "training.lr=fast"]) == 2
    assert "--set: field 'training.lr' must be a number, got 'fast'" in capsys.readouterr().err
    assert run(main, [*base, "--set", "training.nope=1"]) == 2
    assert "training has no field 'nope'" in capsys.readouterr().err
    assert run(main, [*base, "--variant", "us"]) == 2       # would collide with the ablation row's folder
    assert "--variant 'us'" in capsys.readouterr().err
    assert run(main, [*base, "--variant", "a/b"]) == 2
    assert not (ws.root / "results").exists()
