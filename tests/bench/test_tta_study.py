"""bench/tta.py: one pass against mirror TTA with the same models. The table pairs each run's TTA
figures with its own one-pass figures (the same weights) and applies the recipe study's rule per
network."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

CASES = ("c1", "c2", "c3")       # c3 has no ET


def _scored(wt: float, et: float, painted: int, seconds: float) -> dict:
    per_case = {c: {"WT": wt, "TC": wt, "ET": (0.0 if painted else 1.0) if c == "c3" else et} for c in CASES}
    voxels = {c: {"WT": [50, 50], "TC": [20, 20], "ET": [0, painted] if c == "c3" else [9, 9]} for c in CASES}
    return {"dice": {r: sum(d[r] for d in per_case.values()) / len(CASES) for r in ("WT", "TC", "ET")},
            "hd95": {"WT": 4.0, "TC": 2.0, "ET": 1.0}, "per_case_dice": per_case, "per_case_voxels": voxels,
            "predict_seconds_per_case": seconds}


def _run(seed: int, plain: dict, tta: dict) -> dict:
    return {"seed": seed, "wall_seconds": 1800, **plain, "tta": tta}


def _cells(table: str, start: str) -> dict:
    header = next(x for x in table.splitlines() if x.startswith("| network |"))
    line = next(x for x in table.splitlines() if x.startswith(start))
    return dict(zip(*([c.strip() for c in x.strip("|").split("|")] for x in (header, line))))


def test_each_run_is_paired_with_its_own_one_pass_figures():
    from bench.tta import markdown

    pfseg = [_run(1, _scored(0.90, 0.8, 0, 0.30), _scored(0.92, 0.8, 0, 2.40)),
             _run(2, _scored(0.88, 0.8, 2, 0.40), _scored(0.90, 0.8, 0, 2.50)),   # TTA: none painted
             _run(3, _scored(0.91, 0.9, 0, 0.35), _scored(0.90, 0.9, 0, 2.60))]
    resunet = [_run(s, _scored(0.85, 0.7, 0, 0.2), _scored(0.84, 0.7, 1, 1.6)) for s in (1, 2, 3)]
    table = markdown({"iterations": 500, "seeds": [1, 2, 3], "cases": 16, "recipe": "adam lr 0.003",
                      "runs": {"pfseg": pfseg, "resunet3d": resunet}})
    assert "3 test cases (seed 3), 1 of them without enhancing tumour" in table
    one = _cells(table, "| PFSeg (whole method) | one pass |")
    assert one["s / case"] == "0.35" and one["ET-free cases painted"] == "1 of 3"
    assert one["Δ TTA - one pass ± SE"] == "-"
    tta = _cells(table, "| PFSeg (whole method) | mirror TTA")
    assert tta["s / case"] == "2.50" and tta["ET-free cases painted"] == "0 of 3"
    wt = [0.92, 0.90, 0.90]
    assert tta["WT Dice"] == f"{np.mean(wt):.3f} ({np.std(wt, ddof=1):.3f})"
    # per seed: TTA - one pass of (WT + TC + ET) / 3, WT = TC; seed 2's ET goes 0.8 * 2/3 -> (0.8 * 2 + 1) / 3
    diffs = [2 * 0.02 / 3, (2 * 0.02 + 1 / 3) / 3, -2 * 0.01 / 3]
    mean, se = float(np.mean(diffs)), float(np.std(diffs, ddof=1)) / math.sqrt(3)
    assert tta["Δ TTA - one pass ± SE"] == f"{mean:+.4f} ± {se:.4f}"
    assert tta["verdict"] == ("TTA wins" if mean > se else "one pass stays")
    res = _cells(table, "| ResUNet3D | mirror TTA")
    # every seed paints 1 voxel into c3 with TTA: ET 0 there, mean Dice -(0.01 * 2 + 1 / 3) / 3, SE 0
    assert res["Δ TTA - one pass ± SE"] == f"{-(0.02 + 1 / 3) / 3:+.4f} ± 0.0000"
    assert res["verdict"] == "one pass stays" and res["ET-free cases painted"] == "3 of 3"


def test_two_seeds_are_too_few_for_a_verdict():
    from bench.tta import markdown

    runs = [_run(s, _scored(0.8, 0.8, 0, 0.3), _scored(0.9, 0.8, 0, 2.4)) for s in (1, 2)]
    table = markdown({"iterations": 2, "seeds": [1, 2], "cases": 4, "runs": {"pfseg": runs}})
    assert _cells(table, "| PFSeg (whole method) | mirror TTA")["verdict"] == "too few seeds"
    assert "ResUNet3D" not in table


@pytest.mark.slow
def test_the_quick_study_scores_each_model_with_and_without_tta_and_resumes(tmp_path, monkeypatch):
    from bench import tta
    from pfseg_pipeline.inference import pipeline

    calls = []
    real = pipeline.predict_folder

    def recording(*args, **kwargs):
        calls.append(kwargs.get("tta"))
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "predict_folder", recording)
    work = tmp_path / "work"
    figures = tta.run(quick=True, seeds=[1], work=work)
    assert calls == [False, True, False, True]          # per network: one pass, then TTA, same model
    runs = {p.relative_to(work): json.loads(p.read_text()) for p in work.rglob("seed*.json")}
    assert sorted(r["network"] for r in runs.values()) == ["pfseg", "resunet3d"]
    for r in runs.values():
        assert set(r["tta"]["per_case_dice"]) == set(r["per_case_dice"]) == set(r["per_case_voxels"])
        assert all(c.startswith("BraTS20_Training_100") for c in r["per_case_dice"])   # the seed-3 test cases
        assert r["tta"]["predict_seconds_per_case"] > 0
    assert "| PFSeg (whole method) | mirror TTA (8 passes) |" in figures["markdown"]

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr("pfseg_pipeline.training.recipe.train_fold", no_training)
    again = tta.run(quick=True, seeds=[1], work=work)
    assert again["runs"] == figures["runs"] and again["markdown"] == figures["markdown"]
