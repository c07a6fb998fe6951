from __future__ import annotations

import csv
import json
import os

import pytest
import torch

from pfseg_pipeline.checkpoints import read_checkpoint as load_checkpoint
from pfseg_pipeline.cli.common import run
from pfseg_pipeline.cli.train import main
from pfseg_pipeline.networks.losses import PFSegLoss, SegmentationLoss
from pfseg_pipeline.networks.registry import NETWORKS, build_network, network_spec
from pfseg_pipeline.plans import load_plans
from pfseg_pipeline.training.data_loader import build_training_batches
from pfseg_pipeline.training.schedules import PolyDecay, make_scheduler
from pfseg_pipeline.training.trainer import Trainer, TrainOptions
from pfseg_pipeline.training.transforms import TrainingInputs

NAME = "Tiny"


class FixedBatches:
    """The same batch every step (overfitting one case)."""

    def __init__(self, batch):
        self.batch = batch

    def set_epoch(self, epoch):
        pass

    def __next__(self):
        return self.batch

    def close(self):
        pass


@pytest.mark.parametrize("network", sorted(NETWORKS))
def test_a_few_iterations_reduce_the_loss(tmp_path, make_plans, make_workspace, network):
    plans = make_plans(hr=(8, 16, 16), patch=(8, 16, 16))
    ws = make_workspace(tmp_path / "ws", plans, n_cases=2)
    inputs = TrainingInputs.for_network(network)
    stream = build_training_batches(plans, ws.cases_dir(NAME), ["case_01"], inputs, 1, 0, seed=0,
                                    augment=False)
    batch = next(stream)
    stream.close()
    torch.manual_seed(0)
    net = build_network(network, plans)
    t = plans.training
    loss = network_spec(network).make_loss(plans, "full")
    assert isinstance(loss, PFSegLoss if network == "pfseg" else SegmentationLoss)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    options = TrainOptions(epochs=2, iterations_per_epoch=4, grad_clip=t.grad_clip, progress_bar=False,
                           plot=False)
    scheduler = PolyDecay(optimizer, 8, 0.9)
    trainer = Trainer(net, loss, FixedBatches(batch), None, optimizer, scheduler, torch.device("cpu"),
                      tmp_path / "out", plans, options, {"network": network})
    assert trainer.fit() is None
    first, second = (row["loss"] for row in trainer.history)
    assert second < first
    assert (tmp_path / "out" / "checkpoint_final.pt").is_file()
    assert not (tmp_path / "out" / "checkpoint_best.pt").exists()  # no validation, no best


def _rows(path):
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if not k.endswith("_seconds")} for row in csv.DictReader(f)]


def _train(ws, *extra):
    argv = [NAME, "0", "--workspace", str(ws.root), "--no-progress", "--iterations-per-epoch", "2", *extra]
    return run(main, argv)


def test_a_run_records_its_kernels_and_a_resume_elsewhere_says_it_will_not_match(tmp_path, make_workspace,
                                                                                make_plans, caplog):
    """Bit-for-bit reproduction needs the same kernels: each run records torch and the CPU's vector
    code (AVX2 / AVX512: they sum in another order), and a resume on other kernels warns."""
    from pfseg_pipeline.checkpoints import checkpoint_path, save_checkpoint
    from pfseg_pipeline.devices import compute_identity

    ws = make_workspace(tmp_path / "ws", make_plans(hr=(8, 16, 16)))
    assert _train(ws, "--epochs", "1", "--num-workers", "0", "--device", "cpu") == 0
    fold = ws.root / "results" / NAME / "pfseg" / "fold_0"
    here = compute_identity("cpu")
    assert here["device"] == "cpu" and here["torch"] == torch.__version__
    assert here["cpu_capability"] == torch.backends.cpu.get_cpu_capability() != ""
    ckpt = load_checkpoint(checkpoint_path(fold, "latest"))
    assert ckpt["run_info"]["compute"] == here
    # the same kernels: no warning
    assert _train(ws, "--epochs", "2", "--num-workers", "0", "--device", "cpu", "--continue") == 0
    assert "will not match" not in caplog.text
    # the checkpoint as another CPU would have written it
    ckpt = load_checkpoint(checkpoint_path(fold, "latest"))
    other = "AVX512" if here["cpu_capability"] != "AVX512" else "AVX2"
    ckpt["run_info"]["compute"] = {**here, "cpu": "Another CPU", "cpu_capability": other}
    save_checkpoint(checkpoint_path(fold, "latest"), ckpt)
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert _train(ws, "--epochs", "3", "--num-workers", "0", "--device", "cpu", "--continue") == 0
    warned = [r.getMessage() for r in caplog.records if "will not match" in r.getMessage()]
    assert len(warned) == 1, caplog.text
    assert f"Another CPU ({other})" in warned[0] and f"({here['cpu_capability']})" in warned[0]
    assert load_checkpoint(checkpoint_path(fold, "final"))["epoch"] == 3   # the run went on


@pytest.mark.parametrize("network", ["pfseg", "resunet3d"])
def test_a_run_repeated_on_the_same_machine_ends_with_the_same_weights(tmp_path, make_workspace, make_plans,
                                                                       network):
    """At the thread count the trainer sizes for this machine (2 torch threads on 2 cores), with
    augmentation on: no operator of either network sums in a varying order."""
    plans = make_plans(hr=(8, 16, 16), patch=(8, 16, 16))
    weights = []
    for name in ("a", "b"):
        ws = make_workspace(tmp_path / name, plans)
        assert _train(ws, "--network", network, "--epochs", "2", "--num-workers", "0", "--device", "cpu",
                      "--set", "training.tta=false") == 0   # held-out cases in one pass: quicker
        ckpt = load_checkpoint(ws.root / "results" / NAME / network / "fold_0" / "checkpoint_final.pt")
        weights.append(ckpt["model"])
        # more than one thread wherever the machine has the cores: the case where order can vary
        assert ckpt["run_info"]["torch_threads"] >= min(2, len(os.sched_getaffinity(0)))
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        torch.testing.assert_close(weights[0][key], weights[1][key], rtol=0, atol=0, msg=key)


def test_resume_from_an_epoch_boundary_reproduces_the_run(tmp_path, make_workspace, make_plans):
    """With monitor cases (plateau on their Dice): a schedule that does not depend on the run's
    length, so a 2-epoch run continued to 3 epochs is the 3-epoch run."""
    plans = make_plans(hr=(8, 16, 16))
    plans.training.monitor_fraction = 0.4
    straight = make_workspace(tmp_path / "a", plans)
    assert _train(straight, "--epochs", "3", "--num-workers", "1") == 0
    resumed = make_workspace(tmp_path / "b", plans)
    assert _train(resumed, "--epochs", "2", "--num-workers", "1") == 0
    assert _train(resumed, "--epochs", "3", "--num-workers", "1", "--continue") == 0
    fold = ("results", NAME, "pfseg", "fold_0")
    expected = _rows(straight.root.joinpath(*fold, "metrics.csv"))
    assert len(expected) == 3 and "val_dice_WT" in expected[0] and "loss_ssl" in expected[0]
    assert "monitor_dice_WT" in expected[0]
    assert _rows(resumed.root.joinpath(*fold, "metrics.csv")) == expected
    a = load_checkpoint(straight.root.joinpath(*fold, "checkpoint_final.pt"))
    b = load_checkpoint(resumed.root.joinpath(*fold, "checkpoint_final.pt"))
    assert a["epoch"] == b["epoch"] == 3
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=0)
    # the fold summary: raw figures, and beside them the postprocessing chosen on these cases
    from pfseg_pipeline.fileio import read_json

    summary = read_json(straight.root.joinpath(*fold, "validation", "summary.json"))
    post = summary["postprocessed"]
    assert summary["cases_from"] == "validation"
    assert post["note"].startswith("postprocessing chosen on these cases")
    assert [c["case"] for c in post["per_case"]] == [c["case"] for c in summary["per_case"]]
    assert post["postprocessing"]["chosen_on"]["n_cases"] == len(summary["per_case"])
    for region in ("WT", "TC", "ET"):  # chosen where it does not lower the mean Dice
        raw = summary["summary"][region]["dice"]["mean"]
        assert post["postprocessing"]["mean_dice"]["raw"][region] == pytest.approx(raw)
        assert post["summary"][region]["dice"]["mean"] >= raw - 1e-12


def test_the_plans_branches_train_by_default_and_another_row_gets_its_suffix(tmp_path, make_workspace,
                                                                             make_plans):
    """A plan whose pfseg trains its segmentation network alone (`training.pfseg_branches` us, set
    by hand: the planner plans the whole method): the default run is
    US in `pfseg`, `--ablation full` the whole method in `pfseg__full`, `--ablation us` the same
    folder as the default; on a plan with the full default, `pfseg` is the whole method."""
    from pfseg_pipeline.fileio import read_json

    plans = make_plans(hr=(8, 16, 16))
    plans.training.pfseg_branches = "us"
    ws = make_workspace(tmp_path / "us", plans)
    results = ws.root / "results" / NAME
    common = ("--epochs", "1", "--num-workers", "0")
    assert _train(ws, *common) == 0
    default = read_json(results / "pfseg" / "fold_0" / "train_summary.json")
    assert default["network_options"] == {"use_sr": False, "use_sgm": False} and default["ablation"] == "us"
    ckpt = load_checkpoint(results / "pfseg" / "fold_0" / "checkpoint_final.pt")
    assert not any(k.startswith(("sr_decoder.", "sgm")) for k in ckpt["model"])
    assert _train(ws, *common, "--ablation", "full") == 0
    full = read_json(results / "pfseg__full" / "fold_0" / "train_summary.json")
    assert full["network_options"] == {"use_sr": True, "use_sgm": True} and full["ablation"] == "full"
    whole_keys = load_checkpoint(results / "pfseg__full" / "fold_0" / "checkpoint_final.pt")["model"]
    assert {k.split(".")[0] for k in whole_keys} >= {"sr_decoder", "sgm"}
    assert _train(ws, *common, "--ablation", "us") == 0
    assert sorted(p.name for p in results.iterdir()) == ["pfseg", "pfseg__full"]
    # the full default (a plan above scale 1): pfseg holds the whole method
    ws_full = make_workspace(tmp_path / "full", make_plans(hr=(8, 16, 16)))
    assert _train(ws_full, *common) == 0
    whole = read_json(ws_full.root / "results" / NAME / "pfseg" / "fold_0" / "train_summary.json")
    assert whole["network_options"] == {"use_sr": True, "use_sgm": True}


def test_named_split_ablation_folder_and_result_files(tmp_path, make_workspace):
    ws = make_workspace(tmp_path / "ws")
    assert _train(ws, "--split", "paper", "--ablation", "us", "--epochs", "1", "--num-workers", "0",
                  "--use-best") == 0
    net_dir = ws.root / "results" / NAME / "pfseg__us"
    fold_dir = net_dir / "fold_paper"
    assert (net_dir / "plans.json").is_file() and (net_dir / "dataset.json").is_file()
    for name in ("checkpoint_latest.pt", "checkpoint_final.pt", "metrics.csv", "progress.png",
                 "training_log.txt", "train_summary.json", "validation/summary.json"):
        assert (fold_dir / name).is_file(), name
    assert not (fold_dir / "checkpoint_best.pt").exists()  # the paper split has no validation
    from pfseg_pipeline.fileio import read_json

    summary = read_json(fold_dir / "validation" / "summary.json")
    assert summary["cases_from"] == "test" and summary["checkpoint"] == "final"
    assert "postprocessed" not in summary   # never chosen on test cases
    assert [c["case"] for c in summary["per_case"]] == ["case_05"]  # the last 20 % by sorted id
    # predicted as pfseg_predict will: the plan's default inference (training.tta, mirror TTA)
    assert read_json(fold_dir / "validation" / "timings.json")["tta"] is True
    assert set(summary["summary"]) == {"WT", "TC", "ET"}
    train = read_json(fold_dir / "train_summary.json")
    assert train["network_options"] == {"use_sr": False, "use_sgm": False}
    assert train["reported_checkpoint"] == "final" and train["parameters"] > 0
    assert train["peak_memory"]["peak_rss"]["bytes"] > 0
    assert "memory model" in train["peak_memory"]["memory_model"]["label"]
    # the tiny plans hold no per-network prediction: the table's figure is the labelled peak RSS
    assert train["peak_memory_kind"] == "peak RSS (CPU)"
    assert train["peak_memory_gb"] == train["peak_memory"]["peak_rss"]["bytes"] / 2 ** 30
    ckpt = load_checkpoint(fold_dir / "checkpoint_final.pt")
    plans = load_plans(ws.plans_file(NAME))
    net = build_network(ckpt["network"], plans, **ckpt["network_options"])
    net.load_state_dict(ckpt["model"])  # what inference does with a checkpoint


def test_the_held_out_cases_are_predicted_in_one_pass_where_the_plan_says(tmp_path, make_workspace):
    ws = make_workspace(tmp_path / "ws")
    assert _train(ws, "--split", "paper", "--epochs", "1", "--num-workers", "0",
                  "--set", "training.tta=false") == 0
    from pfseg_pipeline.fileio import read_json

    fold_dir = ws.root / "results" / NAME / "pfseg" / "fold_paper"
    assert read_json(fold_dir / "validation" / "timings.json")["tta"] is False
    assert read_json(fold_dir.parent / "plans.json")["training"]["tta"] is False


def test_command_line_errors(tmp_path, make_workspace, capsys):
    assert run(main, [NAME, "0", "--workspace", str(tmp_path / "nowhere")]) == 2
    assert str(tmp_path / "nowhere") in capsys.readouterr().err
    ws = make_workspace(tmp_path / "ws", n_cases=3)
    assert _train(ws, "--network", "unet3d", "--ablation", "us") == 2
    assert "pfseg only" in capsys.readouterr().err
    assert not ws.results(NAME).exists()    # refused before any folder or log file
    assert run(main, ["--help"]) == 0
    assert "torchrun" in capsys.readouterr().out


def test_train_fold_refuses_a_row_the_network_does_not_take(tmp_path, make_workspace):
    """The library's entry point refuses as the command does (one check, in fold_directory)."""
    from pfseg_pipeline.errors import UserError
    from pfseg_pipeline.training.recipe import fold_directory, train_fold

    ws = make_workspace(tmp_path / "ws", n_cases=3)
    with pytest.raises(UserError, match="pfseg only"):
        train_fold(ws, NAME, "resunet3d", "0", ablation="us")
    with pytest.raises(UserError, match="not a row of pfseg"):
        fold_directory(ws, NAME, "pfseg", "0", ablation="no-such-row")
    assert not ws.results(NAME).exists()
    assert fold_directory(ws, NAME, "pfseg", "0", ablation="us").parent.name == "pfseg__us"


@pytest.mark.parametrize("network", ["pfseg", "resunet3d"])
def test_training_starts_the_seg_head_at_the_planned_region_prior(tmp_path, make_workspace, make_plans,
                                                                 network):
    """The head's bias after one step at a tiny rate is still logit(prior) of the plans (an
    Adam step moves it by about the rate)."""
    plans = make_plans(hr=(8, 16, 16))
    plans.training.region_prior = [0.3, 0.02, 0.005]
    plans.training.region_prior_source = "dataset"        # the planned prior (default: the run's own)
    ws = make_workspace(tmp_path / "ws", plans, n_cases=2)
    assert run(main, [NAME, "all", "--workspace", str(ws.root), "--no-progress", "--network", network,
                      "--epochs", "1", "--iterations-per-epoch", "1", "--num-workers", "0",
                      "--lr", "1e-6"]) == 0
    ckpt = load_checkpoint(ws.root / "results" / NAME / network / "fold_all" / "checkpoint_final.pt")
    net = build_network(network, plans)
    net.load_state_dict(ckpt["model"])
    prior = torch.tensor([0.3, 0.02, 0.005])
    torch.testing.assert_close(net.output_head().bias.detach(), torch.log(prior / (1 - prior)),
                               rtol=0, atol=1e-5)


class _Dice:
    """A per-epoch Dice callable as the trainer takes it: the given mean Dice, epoch by epoch."""

    regions = ["WT", "TC"]

    def __init__(self, means):
        self.means, self.calls = list(means), 0

    def __call__(self, network, device, amp):
        self.calls += 1
        return [self.means[self.calls - 1]] * 2


def _fixed_step_trainer(tmp_path, make_plans, validation, monitor, epochs, **options):
    from pfseg_pipeline.networks.step import build_step

    plans = make_plans(hr=(16, 16, 16), patch=(8, 8, 8))
    plans.training.plateau_patience, plans.training.plateau_factor = 0, 0.5
    step = build_step("unet3d", plans, 1)
    assert isinstance(step.loss, SegmentationLoss)
    scheduler = make_scheduler(step.optimizer, plans.training, 1, monitored=monitor is not None)
    options = TrainOptions(epochs=epochs, iterations_per_epoch=1, grad_clip=12.0, progress_bar=False,
                           plot=False, **options)
    return Trainer(step.model, step.loss, FixedBatches(step.batch), validation, step.optimizer, scheduler,
                   torch.device("cpu"), tmp_path, plans, options, {"network": "unet3d"}, monitor=monitor)


def test_only_the_monitor_cases_steer_the_schedule_early_stop_and_best_checkpoint(tmp_path, make_plans):
    """The reported cases' Dice rises every epoch, the monitor cases' falls: the rate halves after
    each monitor drop (plateau, patience 0, factor 0.5), the run stops 2 epochs after the monitor's best
    (epoch 0), and checkpoint_best.pt is that epoch; the rising validation Dice is only logged."""
    validation, monitor = _Dice([0.1, 0.2, 0.3, 0.4, 0.5]), _Dice([0.5, 0.4, 0.3, 0.2, 0.1])
    trainer = _fixed_step_trainer(tmp_path, make_plans, validation, monitor, epochs=5,
                                  early_stopping_patience=2)
    lr = trainer.optimizer.param_groups[0]["lr"]
    assert trainer.fit() is None
    assert trainer.stopped_early == 2 and validation.calls == monitor.calls == 3
    assert [row["val_dice_WT"] for row in trainer.history] == [0.1, 0.2, 0.3]
    assert [row["monitor_dice_mean"] for row in trainer.history] == pytest.approx([0.5, 0.4, 0.3])
    # epoch 1's drop halves the rate of epoch 2 (the scheduler steps after each epoch)
    assert [row["lr"] for row in trainer.history] == pytest.approx([lr, lr, lr / 2])
    assert trainer.best == {"dice": pytest.approx(0.5), "epoch": 0, "on": "monitor"}
    assert load_checkpoint(tmp_path / "checkpoint_best.pt")["epoch"] == 1
    assert load_checkpoint(tmp_path / "checkpoint_final.pt")["epoch"] == 3
    summary = json.loads((tmp_path / "train_summary.json").read_text())
    assert summary["stopped_early_after_epoch"] == 2 and summary["final_epoch"] == 2
    assert summary["best_selected_on"].startswith("monitor cases")


@pytest.mark.parametrize("use_best", [False, True])
def test_the_reported_cases_choose_a_best_checkpoint_only_when_asked(tmp_path, make_plans, use_best):
    validation = _Dice([0.3, 0.1])
    trainer = _fixed_step_trainer(tmp_path, make_plans, validation, None, epochs=2, use_best=use_best)
    assert isinstance(trainer.scheduler, PolyDecay)   # plateau without monitor cases
    assert trainer.fit() is None
    assert [row["val_dice_mean"] for row in trainer.history] == pytest.approx([0.3, 0.1])
    summary = json.loads((tmp_path / "train_summary.json").read_text())
    if use_best:   # an explicit, labelled choice
        assert trainer.best["epoch"] == 0 and load_checkpoint(tmp_path / "checkpoint_best.pt")["epoch"] == 1
        assert "reported validation cases (--use-best" in summary["best_selected_on"]
    else:
        assert trainer.best["epoch"] is None and not (tmp_path / "checkpoint_best.pt").exists()
        assert summary["best_selected_on"] is None and summary["reported_checkpoint"] == "final"


def test_the_reported_cases_are_scored_every_interval_and_after_the_last_epoch(tmp_path, make_plans):
    """validation_interval 3 over 7 epochs: the reported cases after epochs 2, 5 and 6 (the last),
    the monitor cases after every epoch; metrics.csv leaves the other epochs' cells blank, the
    progress plot draws the scored epochs, and --use-best picks among the scored ones."""
    from pfseg_pipeline.training.records import plot_progress

    validation, monitor = _Dice([0.2, 0.6, 0.4]), _Dice([0.1] * 7)
    trainer = _fixed_step_trainer(tmp_path, make_plans, validation, monitor, epochs=7,
                                  validation_interval=3, use_best=True)
    assert trainer.fit() is None
    assert validation.calls == 3 and monitor.calls == 7
    assert [row.get("val_dice_mean") for row in trainer.history] == pytest.approx(
        [None, None, 0.2, None, None, 0.6, 0.4])
    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["val_dice_WT"] for r in rows] == ["", "", "0.2", "", "", "0.6", "0.4"]
    assert all(r["monitor_dice_mean"] for r in rows)
    plot_progress(tmp_path / "progress.png", trainer.history)
    assert (tmp_path / "progress.png").stat().st_size > 1000
    # best on the monitor cases when there are some: every epoch ties at 0.1, the first stays
    assert trainer.best == {"dice": pytest.approx(0.1), "epoch": 0, "on": "monitor"}


def test_an_early_stop_scores_the_reported_cases_after_its_last_epoch(tmp_path, make_plans):
    """The monitor's best is epoch 0; patience 2 stops after epoch 2, which interval 5 would not
    score: the run's last row still holds the reported cases' Dice."""
    validation, monitor = _Dice([0.7]), _Dice([0.5, 0.4, 0.3])
    trainer = _fixed_step_trainer(tmp_path, make_plans, validation, monitor, epochs=10,
                                  early_stopping_patience=2, validation_interval=5)
    assert trainer.fit() is None
    assert trainer.stopped_early == 2 and validation.calls == 1 and monitor.calls == 3
    assert [row.get("val_dice_mean") for row in trainer.history] == pytest.approx([None, None, 0.7])
    with open(tmp_path / "metrics.csv") as f:
        assert [r["val_dice_mean"] for r in csv.DictReader(f)] == ["", "", "0.7"]


def test_use_best_on_the_reported_cases_compares_only_the_scored_epochs(tmp_path, make_plans):
    validation = _Dice([0.2, 0.6, 0.4])
    trainer = _fixed_step_trainer(tmp_path, make_plans, validation, None, epochs=5,
                                  validation_interval=2, use_best=True)
    assert trainer.fit() is None
    assert validation.calls == 3    # after epochs 1, 3 and 4 (the last)
    assert trainer.best == {"dice": pytest.approx(0.6), "epoch": 3, "on": "validation"}
    assert load_checkpoint(tmp_path / "checkpoint_best.pt")["epoch"] == 4


@pytest.mark.parametrize("every, drawn", [(3600.0, [1, 4]), (0.0, [1, 2, 3, 4])])
def test_progress_png_is_redrawn_at_most_every_interval_and_at_the_end(tmp_path, make_plans, monkeypatch,
                                                                       every, drawn):
    """Drawing progress.png costs ~0.2 s, a fifth of a short epoch: with an hour's interval, 4 epochs
    draw it after the first and at the end only (showing all 4); with none, after every epoch."""
    from pfseg_pipeline.training import trainer as trainer_module

    rows_drawn = []
    monkeypatch.setattr(trainer_module, "PLOT_EVERY_SECONDS", every)
    monkeypatch.setattr(trainer_module, "plot_progress",
                        lambda path, history: rows_drawn.append(len(history)))
    trainer = _fixed_step_trainer(tmp_path, make_plans, None, None, epochs=4)
    trainer.options.plot = True
    assert trainer.fit() is None
    assert rows_drawn == drawn
