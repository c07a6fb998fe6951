"""The verdicts that bench/nnunet_compare.py and bench/ablation.py write into docs/BENCHMARKS.md,
computed from hand-made figures (the runs themselves take minutes and need nnU-Net)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `bench` is not an installed package (plain `pytest` does not add the cwd)
    sys.path.insert(0, str(ROOT))

REGIONS = ("WT", "TC", "ET")


def _scores(wt: float, tc: float = 0.5, et: float = 0.4) -> dict:
    return {r: {"dice": {"mean": d, "std": 0.01}, "hd95": {"mean": 5.0, "std": 1.0}}
            for r, d in zip(REGIONS, (wt, tc, et))}


def _compare_figures(runs: list[tuple[float, float]]) -> dict:
    train = {"seconds_per_iteration": 0.5, "peak_rss_bytes": 2**30, "parameters": 10**6, "lr": 3e-3,
             "iterations": 100}
    first = runs[0]
    return {
        "cases": 16, "test_cases": 4, "shape_xyz": [64, 64, 48], "epochs": 10, "iterations_per_epoch": 10,
        "workers": 2, "cpus": 2, "versions": {"nnunetv2": "2.6.0"}, "load_average_1min": [0.1, 0.2],
        "nnunet_plan": {"patch_size_zyx": [40, 56, 48], "batch_size": 2},
        "pfseg_plan": {"preset": "demo", "hr_shape_zyx": [48, 64, 48], "widths": [8, 16, 32, 64]},
        "preprocess_seconds": {"pfseg": 5.0, "nnunet": 20.0},
        "train": {"pfseg": train, "nnunet": {**train, "seconds_per_iteration": 1.0}},
        "predict": {"pfseg": {"seconds_per_case": 0.1}, "nnunet": {"seconds_per_case": 1.0},
                    "nnunet_mirroring": {"seconds_per_case": 3.0}},
        "scores": {"pfseg": _scores(first[0]), "nnunet": _scores(first[1]),
                   "nnunet_mirroring": _scores(first[1])},
        "runs": [{"seed": 12345 + i, "pfseg": _scores(p), "nnunet": _scores(n)}
                 for i, (p, n) in enumerate(runs)],
        "equal_time": None, "equal_time_iterations": 200,
    }


def test_nnunet_compare_verdict_uses_the_mean_over_the_training_runs():
    from bench.nnunet_compare import _markdown

    # run 1 alone would miss the target (-0.10); the mean of the three runs is -0.01
    text = _markdown(_compare_figures([(0.60, 0.70), (0.75, 0.70), (0.72, 0.70)]))
    assert "mean of 3 run(s) = -0.010 at equal iterations (target: within 0.02: met)" in text
    assert "| 1 | 12345 | 0.600 | 0.700 |" in text and "| -0.100 |" in text
    assert "| mean | | **0.690** | **0.700** |" in text
    assert "PFSeg is 10.0x faster than nnU-Net without mirroring and 30.0x faster" in text
    assert "at least 5x without mirroring: met" in text
    text = _markdown(_compare_figures([(0.60, 0.70), (0.66, 0.70)]))
    assert "mean of 2 run(s) = -0.070 at equal iterations (target: within 0.02: NOT met)" in text
    assert "PFSeg runs about 200 iterations. (Not trained in this run: --no-equal-time.)" in text


def test_ablation_mean_table_averages_each_row_over_the_seeds():
    from bench.ablation import ROWS, _markdown

    seeds = (1, 2)
    wt = {"us": (0.80, 0.70), "sr": (0.81, 0.71), "tel": (0.82, 0.72), "ssl": (0.83, 0.73),
          "full": (0.84, 0.78)}

    def run(w):
        return {"dice": {r: {"mean": (w if r == "WT" else 0.5), "std": 0.05} for r in REGIONS},
                "hd95": {r: {"mean": 3.0, "std": 1.0} for r in REGIONS},
                "last_epoch_val_dice_wt": w, "seconds_per_iteration": 0.4}

    rows = {row: {"terms": ["seg"], "network_options": {"use_sr": row != "us", "use_sgm": row == "full"},
                  "parameters": 10**6, "train_cases": 16, "val_cases": 4, "batch_size": 2, "num_workers": 1,
                  "seeds": {s: run(w) for s, w in zip(seeds, wt[row])}} for row in ROWS}
    text = _markdown({"cases": 20, "shape_xyz": [64, 64, 48], "hr_shape_zyx": [48, 64, 48],
                      "widths": [8, 16, 32, 64], "fold": "0", "epochs": 15, "iterations_per_epoch": 10,
                      "seeds": list(seeds), "rows": rows})
    assert "| US | 0.7500 | 0.5000 | 0.5000 | 0.7000 - 0.8000 | 0.8082 |" in text
    assert "| +SGM (full) | 0.8100 | 0.5000 | 0.5000 | 0.7800 - 0.8400 | 0.8329 |" in text
    assert "Full method minus US, WT Dice: +0.0400, +0.0800 (seed 1, 2; mean +0.0600;" in text
    assert "Changing only the seed moves a row's WT Dice by up to 0.1000." in text
