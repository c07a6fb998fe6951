"""The recipe study's runner (bench/recipe.py) on a tiny configuration: every run trains, is
scored on the separate test cases and written as one JSON; a rerun resumes (trains nothing);
the table pairs each row with the baseline by seed and applies the decision rule."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_the_decision_rule_needs_a_gain_above_one_standard_error_over_three_seeds():
    from bench.recipe import verdict

    mean, se, word = verdict([0.02, 0.03, 0.01])
    assert mean == pytest.approx(0.02) and se == pytest.approx(0.01 / math.sqrt(3)) and word == "wins"
    assert verdict([0.03, -0.02, 0.02])[2] == "the simpler option stays"     # gain 0.01 < SE 0.015
    assert verdict([-0.01, -0.02, -0.01])[2] == "the simpler option stays"
    assert verdict([0.05, 0.04])[2] == "too few seeds"


def _run(row: str, seed: int, dice: tuple[float, float, float], hd95: float = 10.0, network: str = "pfseg",
         spi: float = 1.0) -> dict:
    return {"row": row, "network": network, "seed": seed, "dice": dict(zip(("WT", "TC", "ET"), dice)),
            "hd95": {"WT": hd95, "TC": hd95 + 1, "ET": hd95 + 2}, "seconds_per_iteration": spi,
            "predicted_peak_bytes": 2 ** 30 // 2}


def _cells(table: str, start: str) -> list[str]:
    line = next(x for x in table.splitlines() if x.startswith(start))
    return [c.strip() for c in line.strip("|").split("|")]


def test_the_table_gives_mean_and_spread_and_pairs_each_row_with_the_baseline_by_seed():
    from bench.recipe import markdown

    base = {1: (0.80, 0.60, 0.40), 2: (0.70, 0.50, 0.30), 3: (0.90, 0.70, 0.50)}
    # c2's mean Dice minus the baseline's, per seed: +0.03, +0.06, +0.03 (mean 0.04, SE 0.01)
    gain = {1: 0.03, 2: 0.06, 3: 0.03}
    runs = {("base", "pfseg", s): _run("base", s, d, hd95=10.0 * s, spi=1.0 + s) for s, d in base.items()}
    runs.update({("c2", "pfseg", s): _run("c2", s, tuple(v + gain[s] for v in d)) for s, d in base.items()})
    # d1 has seed 3 only: paired with the baseline's seed 3 (not its seed 1), one pair: too few seeds
    runs[("d1", "pfseg", 3)] = _run("d1", 3, (0.10, 0.10, 0.10))
    figures = {"cases": 16, "test_cases": 8, "spacing_mm": 4, "iterations": 500, "seeds": [1, 2, 3],
               "base_preset": "default", "rows": ["base", "c2", "d1", "e1"]}
    table = markdown(figures, runs)

    header = _cells(table, "| row |")
    assert header[3:9] == ["WT Dice", "TC Dice", "ET Dice", "WT HD95", "TC HD95", "ET HD95"]
    cells = dict(zip(header, _cells(table, "| recipe:base | the default recipe when the study began |")))
    assert cells["WT Dice"] == "0.800 (0.100)" and cells["ET Dice"] == "0.400 (0.100)"  # mean (sd), 3 seeds
    assert cells["WT HD95"] == "20.0 (10.0)" and cells["ET HD95"] == "22.0 (10.0)"
    assert cells["verdict"] == "baseline" and cells["s / it"] == "3.00" and cells["GiB (model)"] == "0.50"

    cells = dict(zip(header, _cells(table, "| recipe:c2 | Adam 1e-3 | pfseg |")))
    assert cells["WT Dice"] == "0.840 (0.085)"
    assert cells["Δ mean Dice ± SE"] == "+0.040 ± 0.010" and cells["verdict"] == "wins"

    cells = dict(zip(header, _cells(table, "| recipe:d1 |")))
    diff = 0.10 - sum(base[3]) / 3
    assert cells["Δ mean Dice ± SE"] == f"{diff:+.3f} ± nan" and cells["verdict"] == "too few seeds"
    assert "| recipe:e1 |" not in table and "| recipe:c2 |" in table and "resunet3d" not in table
    assert "PFSeg per LR scale" not in table         # no lr rows ran: no second table


def test_the_lr_table_sets_the_segmentation_only_network_against_the_full_one():
    from bench.recipe import markdown

    runs = {}
    for s in (1, 2, 3):
        runs[("lr2", "pfseg", s)] = _run("lr2", s, (0.6, 0.6, 0.6), spi=2.0)
        runs[("lr2-us", "pfseg", s)] = _run("lr2-us", s, (0.5 + 0.01 * s,) * 3, spi=0.5)
        runs[("c4", "pfseg", s)] = _run("c4", s, (0.9, 0.9, 0.9), spi=2.0)
        runs[("c4-us", "pfseg", s)] = _run("c4-us", s, (0.9 + 0.02 * s,) * 3, spi=1.0)
    runs[("lr4", "pfseg", 1)] = _run("lr4", 1, (0.5, 0.5, 0.5))          # no US run at scale 4: no row
    figures = {"cases": 16, "test_cases": 8, "spacing_mm": 4, "iterations": 500, "seeds": [1, 2, 3],
               "base_preset": "default", "rows": ["base", "c4", "c4-us", "lr2", "lr2-us", "lr4"]}
    table = markdown(figures, runs)
    assert "| recipe:lr2-us | LR scale 2, seg only (US) | pfseg |" in table
    assert _cells(table, "| 2 |") == ["2", "0.600 (0.000)", "0.520 (0.010)", "0.600 (0.000)", "0.520 (0.010)",
                                      f"-0.080 ± {0.01 / math.sqrt(3):.3f}", "2.00, 0.50", "0.50", "3"]
    # the plan's memory figure is the full network's: a segmentation-only row does not claim it
    assert _cells(table, "| recipe:lr2 |")[-1] == "0.50" and _cells(table, "| recipe:lr2-us |")[-1] == "-"
    assert not [x for x in table.splitlines() if x.startswith("| 4 |")]
    # the same question at the adopted learning rate: c4-us against c4, seed by seed (+0.02, +0.04, +0.06)
    adopted = _cells(table, "| 1, Adam 3e-3 |")
    assert adopted[5:8] == [f"+0.040 ± {0.02 / math.sqrt(3):.3f}", "2.00, 1.00", "0.50"]
    # lines in US_PAIRS order, whatever order the runs came in
    labels = [x.split("|")[1].strip() for x in table.splitlines() if x.startswith(("| 1", "| 2 |"))]
    assert labels == ["1, Adam 3e-3", "2"]


@pytest.mark.slow
def test_the_quick_study_runs_resumes_and_tabulates(tmp_path, monkeypatch, capsys):
    from bench import __main__ as bench_main
    from bench import recipe

    work = tmp_path / "work"
    assert bench_main.main(["recipe", "--quick", "--no-write", "--work", str(work)]) == 0
    runs = {p.relative_to(work): json.loads(p.read_text()) for p in work.rglob("seed*.json")}
    # base and c2 for both networks, lr1-us for PFSeg (lr1 is the baseline: no file); seeds 1 and 2 each
    assert len(runs) == (2 + 2 + 1) * 2
    by_key = {(r["row"], r["network"], r["seed"]): r for r in runs.values()}
    for result in by_key.values():
        assert result["iterations"] == 2 and result["epochs"] * result["iterations_per_epoch"] == 2
        assert set(result["dice"]) == {"WT", "TC", "ET"} and all(0 <= d <= 1 for d in result["dice"].values())
        assert len(result["per_case_dice"]) == 2 and all(c.startswith("BraTS20_Training_9")
                                                         for c in result["per_case_dice"])   # the test cases
        # the kernels that computed it: a rerun on another CPU sums in another order
        assert result["compute"]["device"] == "cpu" and result["compute"]["cpu_capability"]
    from pfseg_pipeline.plans import preset_training

    default = preset_training("default")
    assert by_key[("base", "pfseg", 1)]["settings"]["training.lr"] == default.lr   # the default recipe
    # pinned in the study folder: a later preset change does not move this study's baseline
    pinned = json.loads((work / "4mm_4x2" / "baseline_settings.json").read_text())
    assert by_key[("base", "pfseg", 1)]["settings"] == dict(pinned)
    assert dict(pinned)["training.region_prior_source"] == default.region_prior_source
    assert by_key[("c2", "resunet3d", 2)]["settings"]["training.lr"] == 1e-3
    assert by_key[("lr1-us", "pfseg", 1)]["lr_scale_zyx"] == [1, 1, 1]
    assert by_key[("lr1-us", "pfseg", 1)]["ablation"] == "us"
    assert by_key[("base", "pfseg", 1)]["predicted_peak_bytes"] > 0
    table = capsys.readouterr().out
    # lr1 forces the scale the planner chose for the baseline: the baseline's runs, not trained again
    lr1 = recipe.Study(work / "4mm_4x2", 4, 4, 2, "default")
    assert lr1.same_as_base(recipe.ROWS["lr1"]) and not lr1.same_as_base(recipe.ROWS["lr2"])
    assert not lr1.same_as_base(recipe.ROWS["lr1-us"]) and not lr1.same_as_base(recipe.ROWS["c2"])
    assert lr1.result("lr1", "pfseg", 2, 2) == {**by_key[("base", "pfseg", 2)], "row": "lr1",
                                                "same_runs_as": "base"}
    assert _cells(table, "| recipe:lr1 |")[9:11] == ["-", "the baseline's plan and runs"]
    assert "| recipe:base | the default recipe when the study began | pfseg |" in table
    assert (f"training plan when the study was planned ({default.optimizer} lr {default.lr:g}, weight decay "
            f"{default.weight_decay:g}, ") in table
    assert "| recipe:c2 | Adam 1e-3 | resunet3d |" in table and "too few seeds" in table
    assert not list(work.rglob("checkpoint_final.pt"))        # each run keeps its JSON only

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr("pfseg_pipeline.training.recipe.train_fold", no_training)
    again = recipe.run(quick=True, work=work)
    assert len(again["runs"]) == len(runs) + 2 and "| recipe:lr1-us |" in again["markdown"]
    assert again["runs"]["lr1/pfseg/1"]["dice"] == by_key[("base", "pfseg", 1)]["dice"]


def _hold_lock(folder: Path, seconds: float, then_write: Path | None = None):
    """A process of its own holding `folder`'s lock for `seconds` (a study process on another core),
    writing `then_write` just before it lets go."""
    import subprocess

    code = ("import sys, time\nfrom pathlib import Path\nfrom pfseg_pipeline import locks\n"
            "with locks.exclusive(sys.argv[1], 'recipe run'):\n"
            "    print('held', flush=True)\n    time.sleep(float(sys.argv[2]))\n"
            "    if sys.argv[3]:\n        Path(sys.argv[3]).write_text('done')\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder), str(seconds), str(then_write or "")],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_run_that_another_process_holds_is_skipped_and_the_setup_lock_is_waited_for(tmp_path, monkeypatch):
    from bench.recipe import ROWS, Study, _waiting_for

    study = Study(tmp_path / "study", 4, 4, 2, "default")
    out = study._out("c2", "pfseg", 1, 10)
    out.parent.mkdir(parents=True)

    def no_training(*args, **kwargs):
        raise AssertionError("a run held by another process was trained here too")

    monkeypatch.setattr(Study, "_train_and_score", no_training)
    holder = _hold_lock(out.with_name(f".{out.stem}"), 60)
    try:
        assert study.run(ROWS["c2"], "pfseg", 1, 10) is None
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone (its lock is stale) and has written the run: it is read, not trained
    out.write_text(json.dumps({"row": "c2", "seed": 1}))
    assert study.run(ROWS["c2"], "pfseg", 1, 10) == {"row": "c2", "seed": 1}
    assert study.result("c2", "pfseg", 1, 10) == {"row": "c2", "seed": 1}
    assert study.result("c2", "pfseg", 2, 10) is None

    setup, marker = tmp_path / "study" / ".setup", tmp_path / "released"
    holder = _hold_lock(setup, 1.0, then_write=marker)
    with _waiting_for(setup, "the study's data and plans", poll_seconds=0.1):
        assert marker.is_file()             # entered only after the other process let go
    holder.wait()


def test_each_study_process_takes_a_core_of_its_own(tmp_path):
    import contextlib
    import os

    from bench.recipe import pin_to_a_free_core
    from pfseg_pipeline.errors import UserError

    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        pytest.skip("needs two cores")
    holder = _hold_lock(tmp_path / f".core{cores[0]}", 60)      # another study process on the first
    try:
        with contextlib.ExitStack() as stack:
            assert pin_to_a_free_core(tmp_path, stack) == cores[1]
            assert os.sched_getaffinity(0) == {cores[1]}
            assert (tmp_path / f".core{cores[1]}" / ".pfseg.lock").is_file()
        assert not (tmp_path / f".core{cores[1]}" / ".pfseg.lock").exists()      # let go with the stack
        os.sched_setaffinity(0, {cores[0]})
        with contextlib.ExitStack() as stack, pytest.raises(UserError, match="already runs a process"):
            pin_to_a_free_core(tmp_path, stack)                 # its only core is taken
    finally:
        os.sched_setaffinity(0, cores)
        holder.kill()
        holder.wait()


def test_a_table_of_finished_runs_takes_no_core(tmp_path):
    """Both cores run study processes: a rerun for the table of finished rows trains nothing and
    so needs no core of its own (it would be refused one)."""
    import os

    from bench import recipe

    work = tmp_path / "work"
    study = recipe.Study(work / "4mm_16x8", 4, 16, 8, "default")
    for row, gain in (("base", 0.0), ("c2", 0.05)):
        for network in ("pfseg", "resunet3d"):
            for seed in (1, 2, 3):
                out = study._out(row, network, seed, 500)
                out.parent.mkdir(parents=True, exist_ok=True)
                dice = (0.7 + gain + seed / 100, 0.6 + gain, 0.5 + gain + seed / 200)
                out.write_text(json.dumps(_run(row, seed, dice, network=network)))
    holders = [_hold_lock(study.root / f".core{core}", 60) for core in sorted(os.sched_getaffinity(0))]
    try:
        figures = recipe.run(rows=["c2"], work=work)
    finally:
        for holder in holders:
            holder.kill()
            holder.wait()
    assert len(figures["runs"]) == 12 and figures["baseline_recipe"] is None     # no plan made either
    cells = _cells(figures["markdown"], "| recipe:c2 | Adam 1e-3 | pfseg |")
    assert cells[9:11] == ["+0.050 ± 0.000", "wins"]
