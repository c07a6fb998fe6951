"""bench/branches.py: the whole PFSeg against its segmentation network alone at LR scale 1 (or a
forced 2 or 4), on test cases with ET-free ones. The ET voxels a run paints in each ET-free case
come from the evaluation's counts; the table pairs the lines with the whole method by seed and
applies the recipe study's rule."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest


def test_voxel_counts_are_each_case_reference_and_prediction_per_region(tmp_path):
    from bench.recipe import voxel_counts
    from pfseg_pipeline.data.nifti import make_reference, write_label_map
    from pfseg_pipeline.evaluation.evaluate import evaluate_folder

    def write(seg, path):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_label_map(seg, make_reference(seg.shape, np.eye(4)), path)

    shape = (6, 8, 10)
    with_et = np.zeros(shape, np.uint8)
    with_et[1:5, 2:6, 2:8] = 2
    with_et[2:4, 3:5, 3:7] = 1
    with_et[2:4, 3:5, 4:6] = 4                   # 8 ET voxels
    pred = with_et.copy()
    pred[2:4, 3:5, 4:5] = 1                      # 4 of them called necrosis
    et_free = np.zeros(shape, np.uint8)
    et_free[1:3, 1:3, 1:3] = 2
    et_free[1, 1, 1] = 1
    painted = et_free.copy()
    painted[2, 2, 1:3] = 4                       # 2 ET voxels where there is none
    # "b" sorts after "a" but is written first: the counts follow the case, not the file order
    write(et_free, tmp_path / "ref" / "b.nii.gz")
    write(painted, tmp_path / "pred" / "b.nii.gz")
    write(with_et, tmp_path / "ref" / "a.nii.gz")
    write(pred, tmp_path / "pred" / "a.nii.gz")
    summary = evaluate_folder(tmp_path / "ref", tmp_path / "pred", write=False, progress=False)
    counts = voxel_counts(summary)
    assert counts["a"]["ET"] == [8, 4] and counts["a"]["TC"] == [int(np.isin(with_et, (1, 4)).sum())] * 2
    assert counts["b"]["ET"] == [0, 2] and counts["b"]["WT"] == [8, 8]
    assert [c["case"] for c in summary["per_case"]] == ["a", "b"]


def test_equal_time_iterations_scale_by_the_median_seconds_per_iteration():
    from bench.branches import equal_time_iterations

    full = [{"seconds_per_iteration": s} for s in (1.30, 1.20, 1.50)]     # median 1.30
    us = [{"seconds_per_iteration": s} for s in (0.70, 0.75, None)]        # median 0.725
    assert equal_time_iterations(full, us, 500) == round(500 * 1.30 / 0.725 / 10) * 10 == 900
    assert equal_time_iterations(full, [], 500) is None
    slow_us = [{"seconds_per_iteration": 10.0}]
    assert equal_time_iterations([{"seconds_per_iteration": 1.0}], slow_us, 20) == 10     # at least ten


CASES = ("c1", "c2", "c3", "c4")       # c4 has no ET


def _run(seed: int, dice_et_cases: float, wt: float, painted: int, iterations: int = 500, spi: float = 1.0):
    per_case_dice, voxels = {}, {}
    for c in CASES:
        free = c == "c4"
        et = (0.0 if painted else 1.0) if free else dice_et_cases
        per_case_dice[c] = {"WT": wt, "TC": wt, "ET": et}
        voxels[c] = {"WT": [100, 100], "TC": [30, 30], "ET": [0, painted] if free else [20, 20]}
    return {"seed": seed, "iterations": iterations, "seconds_per_iteration": spi, "wall_seconds": 3600,
            "dice": {r: sum(d[r] for d in per_case_dice.values()) / len(CASES) for r in ("WT", "TC", "ET")},
            "hd95": {"WT": 3.0 + seed, "TC": 2.0, "ET": 1.0},
            "per_case_dice": per_case_dice, "per_case_voxels": voxels}


def _cells(table: str, start: str) -> list[str]:
    line = next(x for x in table.splitlines() if x.startswith(start))
    return [c.strip() for c in line.strip("|").split("|")]


def test_the_table_counts_the_et_free_cases_painted_and_pairs_each_line_with_the_whole_method():
    from bench.branches import markdown

    full = [_run(1, 0.9, 0.90, 0, spi=1.2), _run(2, 0.8, 0.92, 0, spi=1.3), _run(3, 0.9, 0.94, 3, spi=1.4)]
    # US paints 1 and 2 voxels in the ET-free case in two seeds; its seed order differs from full's
    us = [_run(3, 0.9, 0.93, 1, spi=0.7), _run(1, 0.9, 0.90, 2, spi=0.6), _run(2, 0.8, 0.92, 0, spi=0.8)]
    figures = {"iterations": 500, "us_equal_time_iterations": 900, "seeds": [1, 2, 3], "cases": 16,
               "test_cases": 4, "recipe": "adam lr 0.003", "runs": {"full": full, "us": us}}
    table = markdown(figures)
    assert "4 test cases (seed 3), 1 of them without enhancing tumour (c4)" in table
    header = _cells(table, "| PFSeg |")
    cells = dict(zip(header, _cells(table, "| whole method")))
    assert cells["iterations"] == "500" and cells["s / it"] == "1.30"
    assert cells["ET-free cases painted"] == "1 of 3" and cells["voxels painted there"] == "3-3"
    assert cells["ET Dice, cases with ET"] == "0.867 (0.058)"         # c1-c3 only: 0.9, 0.8, 0.9
    et = [(0.9 * 3 + 1) / 4, (0.8 * 3 + 1) / 4, 0.9 * 3 / 4]              # all four cases; seed 3 painted c4
    assert cells["ET Dice"] == f"{np.mean(et):.3f} ({np.std(et, ddof=1):.3f})"
    assert cells["Δ full - this ± SE"] == "-" and cells["WT HD95"] == "5.0 (1.0)"
    cells = dict(zip(header, _cells(table, "| segmentation network alone (US), equal iterations")))
    assert cells["ET-free cases painted"] == "2 of 3" and cells["voxels painted there"] == "1-2"
    # paired by seed: full - US of the mean Dice; seed 1: US paints (ET 0 there), full does not: +0.25/3;
    # seed 2: the same runs: 0; seed 3: full paints, US paints too, WT/TC 0.94 against 0.93: +0.02/3
    diffs = [0.25 / 3, 0.0, 0.02 / 3]
    mean, se = sum(diffs) / 3, float(np.std(diffs, ddof=1)) / math.sqrt(3)
    assert cells["Δ full - this ± SE"] == f"{mean:+.3f} ± {se:.3f}"
    assert cells["verdict"] == ("the whole method wins" if mean > se else "US stays")
    assert not [x for x in table.splitlines() if x.startswith("| segmentation network alone (US), equal t")]


def test_a_forced_lr_scale_has_rows_an_equal_time_count_and_a_section_of_its_own(tmp_path):
    """--lr-scale 2 asks the question on the same data beside the planner's-scale runs: its rows
    differ in key (their run folders) and LR scale only, and its equal-time count is kept apart."""
    from bench.branches import ROWS, _pinned_equal_time, markdown, rows_at

    assert rows_at(None) is ROWS and [r.key for r in ROWS.values()] == ["full", "us"]
    forced = rows_at(2)
    assert {k: (r.key, r.lr_scale, r.ablation) for k, r in forced.items()} == {
        "full": ("full-lr2", 2, "full"), "us": ("us-lr2", 2, "us")}
    assert all(r.lr_scale is None for r in ROWS.values())          # the module's rows stay as they were
    assert _pinned_equal_time(tmp_path, 500, lambda: 860) == 860
    assert _pinned_equal_time(tmp_path, 500, lambda: 1200, 2) == 1200
    assert _pinned_equal_time(tmp_path, 500, lambda: 999) == 860   # kept: computed once per scale
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert kept == ["equal_time_it500.json", "equal_time_lr2_it500.json"]
    figures = {"iterations": 500, "us_equal_time_iterations": None, "seeds": [1], "cases": 16,
               "test_cases": 4, "recipe": "adam lr 0.003", "runs": {"full": [_run(1, 0.9, 0.9, 0)]}}
    assert "plan at LR scale 1," in markdown(figures)
    assert "forced to LR scale 2 on every axis (`--lr-scale 2`: an LR input of 8 mm" in markdown(
        {**figures, "lr_scale": 2})


def test_the_page_keeps_a_variant_section_after_its_benchmark_and_the_plain_one_beside_it(tmp_path):
    from bench.__main__ import _sections, write_page

    page = tmp_path / "BENCHMARKS.md"
    write_page({"tta": "tta v1\n", "branches": "scale 1\n", "lr_scale": "lr\n"}, page)
    write_page({"branches_lr2": "scale 2\n"}, page)
    write_page({"branches_lr2": "scale 2, again\n", "zz_unknown": "z\n"}, page)
    sections = _sections(page.read_text())
    assert list(sections) == ["lr_scale", "branches", "branches_lr2", "tta", "zz_unknown"]
    assert sections["branches"] == "scale 1\n" and sections["branches_lr2"] == "scale 2, again\n"


@pytest.mark.slow
def test_the_quick_study_trains_both_networks_then_us_at_equal_time_and_resumes(tmp_path, monkeypatch):
    """At a forced LR scale (2; the planner's own scale runs the same code with the module's rows)."""
    from bench import branches

    work = tmp_path / "work"
    figures = branches.run(quick=True, seeds=[1], work=work, lr_scale=2)  # one seed: pairing is tested above
    runs = {p.relative_to(work): json.loads(p.read_text()) for p in work.rglob("seed*.json")}
    n_equal = figures["us_equal_time_iterations"]
    assert n_equal is not None and n_equal % 10 == 0 and n_equal != 2
    # full and US at 2 iterations, then US at equal time, each in the scale's own row folder
    found = sorted((p.parent.parent.name, r["ablation"], r["iterations"], r["seed"]) for p, r in runs.items())
    assert found == [("full-lr2", "full", 2, 1), ("us-lr2", "us", 2, 1), ("us-lr2", "us", n_equal, 1)]
    for r in runs.values():
        assert r["lr_scale_zyx"] == [2, 2, 2]
        assert set(r["per_case_voxels"]) == set(r["per_case_dice"])
        assert all(c.startswith("BraTS20_Training_100") for c in r["per_case_dice"])   # the seed-3 test cases
        assert r["settings"]["training.lr"] == figures["runs"]["full"][0]["settings"]["training.lr"]
    assert "| segmentation network alone (US), equal time | " + str(n_equal) in figures["markdown"]
    assert figures["section"] == "branches_lr2" and "LR scale 2:" in figures["title"]
    assert "adam lr" in figures["recipe"]              # the recipe read from the scale's own plan

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr("pfseg_pipeline.training.recipe.train_fold", no_training)
    again = branches.run(quick=True, seeds=[1], work=work, lr_scale=2)
    assert again["runs"] == figures["runs"] and again["markdown"] == figures["markdown"]
    # the equal-time count is kept: a seed added later trains to it, whatever its own speed
    pinned = work / "4mm_4x6" / "equal_time_lr2_it2.json"
    assert json.loads(pinned.read_text()) == {"us_iterations": n_equal}
