"""The verdicts that bench/nnunet_compare.py and bench/ablation.py write into docs/BENCHMARKS.md,
computed from hand-made figures (the runs themselves take minutes and need nnU-Net)."""

from __future__ import annotations

REGIONS = ("WT", "TC", "ET")


def _scores(wt: float, tc: float = 0.5, et: float = 0.4) -> dict:
    return {r: {"dice": {"mean": d, "std": 0.01}, "hd95": {"mean": 5.0, "std": 1.0}}
            for r, d in zip(REGIONS, (wt, tc, et))}


def _run(pfseg: tuple, resunet3d: tuple, nnunet: tuple, seed: int) -> dict:
    """One run's test-set means: each method's (WT, TC, ET) Dice and WT HD95."""
    def scores(dice, wt_hd95):
        return {r: {"dice": d, "hd95": wt_hd95 if r == "WT" else 10.0} for r, d in zip(REGIONS, dice)}

    train = {"iterations": 100, "train_seconds": 50.0}
    return {"seed": seed,
            "scores": {"pfseg": scores(*pfseg), "resunet3d": scores(*resunet3d),
                       "resunet3d_iterations": scores(*resunet3d), "nnunet": scores(*nnunet),
                       "nnunet_mirroring": scores(*nnunet)},
            "train": {k: train for k in ("pfseg", "resunet3d", "resunet3d_iterations", "nnunet",
                                         "nnunet_mirroring")}}


def _compare_figures(runs: list[dict]) -> dict:
    return {"train_cases": 16, "test_cases": 8, "spacing_mm": 4, "nnunet_iterations": 1000,
            "nnunet_epochs": 40,
            "versions": {"nnunetv2": "2.6.0"}, "load_average_1min": [0.1, 0.2],
            "nnunet_plan": {"patch_size_zyx": [40, 48, 40], "batch_size": 2, "features_per_stage": [32, 64]},
            "pfseg_plan": {"preset": "demo", "hr_shape_zyx": [40, 48, 40], "lr_scale_zyx": [1, 1, 1],
                           "patch_shape_zyx": [16, 24, 16], "widths": [8, 16, 32, 64], "batch_size": 2,
                           "optimizer": "adam", "lr": 3e-3},
            "calibration": {"nnunet": 3.0, "pfseg": 0.5, "resunet3d": 0.25, "load_average_1min": [0.3, 1.7]},
            "budget_seconds": 3000.0,
            "planned_iterations": {"pfseg": 6000, "resunet3d": 12000, "resunet3d_iterations": 1000},
            "preprocess_seconds": {"pfseg": 5.0, "nnunet": 20.0}, "run_results": runs,
            "predict": {"pfseg": {"seconds_per_case": 0.1}, "nnunet": {"seconds_per_case": 1.0},
                        "nnunet_mirroring": {"seconds_per_case": 3.0}}}


def test_nnunet_compare_judges_the_means_over_the_runs():
    from bench.nnunet_compare import _markdown, summarise, verdicts

    # run 1 alone has PFSeg's WT below ResUNet3D's (0.86 < 0.88); the mean over both runs is above it
    runs = [_run(((0.86, 0.80, 0.75), 6.0), ((0.88, 0.83, 0.80), 7.0), ((0.87, 0.86, 0.79), 8.0), 12345),
            _run(((0.92, 0.84, 0.79), 4.0), ((0.86, 0.85, 0.82), 9.0), ((0.87, 0.88, 0.81), 6.0), 12346)]
    summary = summarise(runs)
    assert summary["pfseg"]["WT_dice"] == {"mean": 0.89, "min": 0.86, "max": 0.92, "n": 2}
    held = [ok for _, ok in verdicts(summary)]
    # WT >= ResUNet3D (0.89 >= 0.87), WT >= nnU-Net - 0.01, TC 0.82 within 0.05 of 0.87 (met: 0.82 >= 0.82),
    # ET 0.77 vs 0.81 (met), WT HD95 5.0 <= min(8.0, 7.0)
    assert held == [True, True, True, True, True]
    worse = [_run(((0.86, 0.70, 0.75), 9.5), ((0.88, 0.83, 0.80), 7.0), ((0.87, 0.86, 0.79), 8.0), 12345)]
    assert [ok for _, ok in verdicts(summarise(worse))] == [False, True, False, True, False]
    text = _markdown(_compare_figures(runs))
    assert ("| PFSeg (whole method; whole volume, one pass), equal wall-clock | 100 | 50 | "
            "0.890 (0.860-0.920) |") in text
    assert "| nnU-Net 3d_fullres, no mirroring | 100 | 300 | 0.870 (0.870-0.870) |" in text
    assert "in which PFSeg trains 6000 iterations and ResUNet3D 12000" in text
    assert "Load average 0.3 before the calibration, 1.7 after it." in text
    assert "10.0x faster than nnU-Net without mirroring and 30.0x faster than with it" in text
    assert text.count("**met**") == 5 and "NOT met" not in text
    # each run's figures, and WT PFSeg - ResUNet3D paired by run: -0.02 and +0.06, SE 0.0566 / sqrt(2)
    assert ("| 0 | 12345 | 0.860 / 0.880 / 0.870 | 0.800 / 0.830 / 0.860 | 0.750 / 0.800 / 0.790 "
            "| -0.020 |") in text
    assert "| 1 | 12346 | 0.920 / 0.860 / 0.870 |" in text
    assert "WT Dice, paired by run: +0.020 ± 0.040 (mean ± standard error over 2 runs)" in text
    assert "computed from" not in text
    kept = _markdown({**_compare_figures(runs), "steps_span_utc": ["2026-11-30 17:15", "2026-11-30 19:40"]})
    assert "were computed from 2026-11-30 17:15 to 2026-11-30 19:40 UTC and kept as JSON" in kept
    # which PFSeg trained: the plan's branches (a plan from before the field: the whole method)
    assert "PFSeg trains the whole method" in text
    figures = _compare_figures(runs)
    figures["pfseg_plan"] = {**figures["pfseg_plan"], "pfseg_branches": "us"}
    assert "PFSeg trains its segmentation network alone" in _markdown(figures)
    figures["predict"] = {**figures["predict"], "models": "run 2's"}
    assert "faster than with it (run 2's models). Preprocessing" in _markdown(figures)
    # the cases without ET, found in the data: a test case of them is all or nothing for ET Dice
    assert "without enhancing tumour" not in text                 # figures from before they were counted
    figures["without_et"] = {"train": [], "test": ["BraTS20_Training_902"]}
    assert ("Cases without enhancing tumour (ET): none of the 16 training cases, 1 of the 8 test cases "
            "(BraTS20_Training_902); an ET-free case scores ET Dice 1 when no ET voxel is predicted there "
            "and 0 otherwise, so in each run it moves a method's mean ET Dice by 1/8.") in _markdown(figures)


def test_nnunet_compare_calibrates_the_plans_branches_later_against_nnunet_again():
    """The calibration timed the segmentation network alone; the plan now trains the whole method:
    its rate comes from a later calibration, scaled by nnU-Net's then against now, and the earlier
    branches' runs stay in the table as a row of their own."""
    from bench.nnunet_compare import _markdown, pfseg_rate

    calibration = {"nnunet": 3.0, "pfseg": 0.5, "resunet3d": 0.25, "pfseg_branches": "us",
                   "load_average_1min": [0.3, 1.7]}
    later = {"nnunet": 6.0, "pfseg": 2.0, "pfseg_branches": "full", "load_average_1min": [0.2, 0.9]}
    assert pfseg_rate(calibration, None) == 0.5
    assert pfseg_rate(calibration, later) == 1.0          # 2.0 s on a machine twice as slow that day
    runs = [_run(((0.86, 0.80, 0.75), 6.0), ((0.88, 0.83, 0.80), 7.0), ((0.87, 0.86, 0.79), 8.0), 12345),
            _run(((0.92, 0.84, 0.79), 4.0), ((0.86, 0.85, 0.82), 9.0), ((0.87, 0.88, 0.81), 6.0), 12346)]
    for r, wt in zip(runs, (0.70, 0.72)):
        r["scores"]["pfseg_other"] = {k: {"dice": wt, "hd95": 9.0} for k in REGIONS}
        r["train"]["pfseg_other"] = {"iterations": 600, "train_seconds": 300.0}
    figures = {**_compare_figures(runs), "calibration": calibration, "calibration_pfseg": later,
               "pfseg_rate": 1.0}
    figures["pfseg_plan"] = {**figures["pfseg_plan"], "pfseg_branches": "full"}
    text = _markdown(figures)
    assert ("nnU-Net 3.00, PFSeg 0.50 (segmentation network alone), ResUNet3D 0.25; PFSeg's whole method "
            "was calibrated later the same way, against nnU-Net again (nnU-Net 6.00, PFSeg 2.00; load "
            "average 0.2 before, 0.9 after), so 1.00 in the first calibration's terms;") in text
    # iterations x rate: the plan's PFSeg at 1.00 s, the other branches' at the first calibration's 0.50 s
    assert "| PFSeg (whole method; whole volume, one pass), equal wall-clock | 100 | 100 | 0.890" in text
    assert ("| PFSeg (segmentation network alone, not the plan's; one pass), equal wall-clock | 600 | 300 | "
            "0.710") in text
    # the verdicts and the per-run lines are the plan's PFSeg's
    assert "PFSeg WT Dice 0.890 >= ResUNet3D's 0.870: **met**" in text
    assert "| 0 | 12345 | 0.860 / 0.880 / 0.870 |" in text
    # without the other branches' runs in every run, no row for them
    del runs[1]["scores"]["pfseg_other"]
    assert "not the plan's" not in _markdown(figures)


def test_nnunet_compare_judges_each_method_at_its_default_inference_once_pfseg_mirrors():
    """With the plan's training.tta the verdicts and the per-run lines are the TTA rows' (PFSeg and
    ResUNet3D mirrored, nnU-Net with mirroring); the one-pass verdicts follow them, labelled."""
    from bench.nnunet_compare import _markdown

    runs = [_run(((0.86, 0.80, 0.75), 6.0), ((0.88, 0.83, 0.80), 7.0), ((0.87, 0.86, 0.79), 8.0), 12345),
            _run(((0.92, 0.84, 0.79), 4.0), ((0.86, 0.85, 0.82), 9.0), ((0.87, 0.88, 0.81), 6.0), 12346)]
    # mirrored: PFSeg's WT falls below ResUNet3D's (0.85 < 0.90) and its HD95 above it
    for r, (pf, res) in zip(runs, ((0.84, 0.91), (0.86, 0.89))):
        for key, wt, hd in (("pfseg", pf, 8.0), ("resunet3d", res, 3.0), ("resunet3d_iterations", res, 3.0)):
            r["scores"][f"{key}_tta"] = {x: {"dice": wt, "hd95": hd if x == "WT" else 10.0} for x in REGIONS}
            r["train"][f"{key}_tta"] = r["train"][key]
        r["tta"] = {"one_pass_matches_kept": {"pfseg": True, "resunet3d": r["seed"] == 12346,
                                              "resunet3d_iterations": True},
                    "retrained": ["resunet3d"] if r["seed"] == 12345 else []}
        if r["seed"] == 12345:   # the model trained again gives other one-pass figures than the kept run's
            r["tta"]["one_pass_scores"] = {"resunet3d": {x: {"dice": 0.8751, "hd95": 5.0} for x in REGIONS}}
    figures = _compare_figures(runs)
    figures["predict"] = {**figures["predict"], "pfseg_tta": {"seconds_per_case": 0.6}}
    text = _markdown(figures)
    assert ("| PFSeg (whole method; whole volume, mirror TTA), equal wall-clock | 100 | 50 | "
            "0.850 (0.840-0.860) |") in text
    assert ("| ResUNet3D (sliding window, mirror TTA), equal wall-clock | 100 | 25 | "
            "0.900 (0.890-0.910) |") in text
    default, one_pass = text.split("With one pass for PFSeg and ResUNet3D")
    assert "PFSeg WT Dice 0.850 >= ResUNet3D's 0.900: **NOT met**" in default
    assert "PFSeg WT HD95 8.00 mm no worse than either (3.00, 7.00 mm): **NOT met**" in default
    assert "PFSeg WT Dice 0.890 >= ResUNet3D's 0.870: **met**" in one_pass
    assert "| 0 | 12345 | 0.840 / 0.910 / 0.870 |" in default          # per run: the mirrored rows
    assert "WT Dice, paired by run: -0.050 ± 0.020" in default      # -0.07 and -0.03
    assert ("trained again as their runs were (run 0's resunet3d); each model's one-pass prediction, made "
            "again, reproduces its kept run's scores exactly in 5 of 6 cases (not: run 0's resunet3d, "
            "one-pass WT Dice 0.875 against the kept 0.880).") in text
    assert "; with mirror TTA 0.60 s, 5.0x faster than nnU-Net with mirroring" in text
    # without the TTA rows (a plan that predicts in one pass), the table is as before
    for r in runs:
        for key in ("pfseg_tta", "resunet3d_tta", "resunet3d_iterations_tta"):
            del r["scores"][key]
    assert "mirror TTA" not in _markdown(_compare_figures(runs))


def test_the_tta_step_trains_a_missing_model_again_and_checks_each_models_one_pass(tmp_path, monkeypatch):
    """run_R_tta.json: the kept models predicted in one pass again (matched against the kept run's
    scores) and with TTA; a model no longer on the machine trained again as its run was."""
    from bench import nnunet_compare as nc

    for name in ("pfseg_full_1", "resunet3d_1"):
        (tmp_path / "models" / name).mkdir(parents=True)
    trained, predicted = [], []

    def train_again(root, ws_root, key, network, epochs, seed, r):
        trained.append((key, network, epochs, seed, r))
        (root / "models" / f"{key}_{r}").mkdir()

    def predict(model, test_dir, out, rounds=1, tta=False):
        predicted.append((model.name, tta))

    def scores(test_dir, pred_dir):      # one figure per prediction folder: its name says which
        return {"WT": {"dice": 0.9 if "_tta_" in pred_dir.name else 0.8, "hd95": 3.0},
                "from": pred_dir.name}

    monkeypatch.setattr(nc, "_pfseg_run", train_again)
    monkeypatch.setattr(nc, "_pfseg_predict", predict)
    monkeypatch.setattr(nc, "_scores", scores)
    kept = {"pfseg": scores(None, tmp_path / "pred_pfseg_full_1_again"),
            "resunet3d": {"WT": {"dice": 0.7, "hd95": 3.0}},
            "resunet3d_iterations": scores(None, tmp_path / "pred_resunet3d_iterations_1_again")}
    epochs = {"pfseg": 206, "resunet3d": 1288, "resunet3d_iterations": 100}
    out = nc._tta_run(tmp_path, tmp_path / "ws", 1, kept, epochs, "full")
    assert trained == [("resunet3d_iterations", "resunet3d", 100, nc.SEED + 1, 1)]
    assert out["retrained"] == ["resunet3d_iterations"]
    assert predicted == [(f"{m}_1", tta) for m in ("pfseg_full", "resunet3d", "resunet3d_iterations")
                         for tta in (False, True)]
    assert out["one_pass_matches_kept"] == {"pfseg": True, "resunet3d": False, "resunet3d_iterations": True}
    assert {k: v["from"] for k, v in out["scores"].items()} == {
        "pfseg": "pred_pfseg_full_tta_1", "resunet3d": "pred_resunet3d_tta_1",
        "resunet3d_iterations": "pred_resunet3d_iterations_tta_1"}


def test_cases_without_et_are_read_from_the_label_maps(tmp_path):
    import nibabel as nib
    import numpy as np

    from bench.nnunet_compare import cases_without_et
    from pfseg_pipeline.data.synthetic import write_dataset

    write_dataset(tmp_path, 3, (20, 18, 16), seed=5)
    seg = tmp_path / "BraTS20_Training_002" / "BraTS20_Training_002_seg.nii.gz"
    img = nib.load(seg)
    labels = np.asarray(img.dataobj).copy()
    assert (labels == 4).any() and (labels == 1).any()          # the generator's cases all have ET
    labels[labels == 4] = 1                                     # now necrosis and edema only
    nib.save(nib.Nifti1Image(labels, img.affine, img.header), seg)
    assert cases_without_et(tmp_path) == ["BraTS20_Training_002"]


def test_scores_keep_each_case_beside_the_means(tmp_path):
    """`_scores` on real label maps: the means are the cases' means, and a case whose prediction
    is its reference scores Dice 1 and HD95 0 (so the per-case figures are each case's own)."""
    import shutil

    import nibabel as nib
    import numpy as np

    from bench.nnunet_compare import REGIONS, _means, _scores
    from pfseg_pipeline.data.synthetic import write_dataset

    write_dataset(tmp_path / "test", 3, (20, 18, 16), seed=5)
    pred = tmp_path / "pred"
    pred.mkdir()
    for i, case in enumerate(sorted(p.name for p in (tmp_path / "test").iterdir())):
        seg = tmp_path / "test" / case / f"{case}_seg.nii.gz"
        if i == 0:
            shutil.copy(seg, pred / f"{case}.nii.gz")          # perfect
        else:
            img = nib.load(seg)
            labels = np.roll(np.asarray(img.dataobj), i, axis=0)   # shifted by i voxels
            nib.save(nib.Nifti1Image(labels, img.affine, img.header), pred / f"{case}.nii.gz")
    scores = _scores(tmp_path / "test", pred)
    cases = scores["cases"]
    assert len(cases) == 3
    first = cases[min(cases)]
    assert all(first[r] == {"dice": 1.0, "hd95": 0.0} for r in REGIONS)
    assert all(cases[c]["WT"]["dice"] < 1 for c in sorted(cases)[1:])
    for r in REGIONS:
        for m in ("dice", "hd95"):
            assert abs(scores[r][m] - np.mean([cases[c][r][m] for c in cases])) < 1e-9
    assert set(_means(scores)) == set(REGIONS)


def test_nnunet_compare_steps_are_stamped_kept_and_spanned(tmp_path):
    """A step computes once (a rerun reads its JSON), stamped with when it finished: the span of a
    study across sessions comes from the stamps, not from file times (a git checkout resets them)."""
    import json
    import os

    from bench.nnunet_compare import _speed_models, _step, steps_span

    calls = []
    first = _step(tmp_path / "rec" / "calibration.json", lambda: calls.append(1) or {"pfseg": 0.5})
    again = _step(tmp_path / "rec" / "calibration.json", lambda: calls.append(1) or {"pfseg": 9.9})
    assert calls == [1] and first == again and again["pfseg"] == 0.5
    assert len(first["finished_utc"]) == len("2026-12-01 04:30")
    old = tmp_path / "rec" / "run_0_pfseg.json"
    old.write_text(json.dumps({"scores": {}, "finished_utc": "2026-11-01 10:00"}))
    unstamped = tmp_path / "rec" / "data.json"    # kept before the stamp: its file's time
    unstamped.write_text("{}")
    os.utime(unstamped, (1764000000, 1764000000))   # 2025-11-24 16:00 UTC
    assert steps_span([unstamped, old, tmp_path / "rec" / "calibration.json"]) == \
        ["2025-11-24 16:00", first["finished_utc"]]
    # the speed step times the latest run whose two models are on this machine
    runs = [{"train": {"model_dir": str(tmp_path / f"nn_{r}")}} for r in range(3)]
    for path in ("models/pfseg_0", "nn_0", "models/pfseg_1", "nn_1", "models/pfseg_2"):
        (tmp_path / path).mkdir(parents=True)
    assert _speed_models(tmp_path, tmp_path / "ws", {}, runs, 3) == (
        tmp_path / "models" / "pfseg_1", tmp_path / "nn_1", "run 1's")


def test_nnunet_compare_options_reach_run():
    import inspect

    from bench.nnunet_compare import options, run

    # `python -m bench nnunet_compare --keep DIR ...` hands these to run(): every one must be its keyword
    opts = options(["--keep", "/tmp/x", "--runs", "3", "--train", "5", "--test", "2"])
    assert opts["keep"] == "/tmp/x" and (opts["runs"], opts["n_train"], opts["n_test"]) == (3, 5, 2)
    assert set(opts) <= set(inspect.signature(run).parameters)


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


def test_the_calibration_times_nnunet_then_each_network_with_its_logs_named(tmp_path, monkeypatch):
    """One calibration function for the first calibration and a later one of PFSeg alone: nnU-Net
    first, then each pfseg network, each with its own log; the later one's names carry its suffix."""
    from bench import nnunet_compare

    calls = []

    def nnunet_train(env, epochs, iterations, stem):
        calls.append(("nnunet", env["nnUNet_results"], epochs, iterations, stem.name))
        return {"seconds_per_iteration": 2.0}

    def pfseg_train(ws_root, network, epochs, iterations, seed, logfile):
        calls.append((network, str(ws_root), epochs, iterations, logfile.name))
        return {"seconds_per_iteration": {"pfseg": 0.5, "resunet3d": 0.1}[network]}

    monkeypatch.setattr(nnunet_compare, "_nnunet_train", nnunet_train)
    monkeypatch.setattr(nnunet_compare, "_pfseg_train", pfseg_train)
    first = nnunet_compare.calibrate(tmp_path, tmp_path / "ws", {"X": "1"}, 15, "us", ("pfseg", "resunet3d"))
    assert {k: v for k, v in first.items() if k != "load_average_1min"} == {
        "nnunet": 2.0, "pfseg": 0.5, "resunet3d": 0.1, "pfseg_branches": "us"}
    assert len(first["load_average_1min"]) == 2
    assert calls == [("nnunet", str(tmp_path / "nnUNet_calibration"), 2, 15, "calibration_nnunet"),
                     ("pfseg", str(tmp_path / "ws"), 2, 15, "calibration_pfseg.log"),
                     ("resunet3d", str(tmp_path / "ws"), 2, 15, "calibration_resunet3d.log")]
    calls.clear()
    later = nnunet_compare.calibrate(tmp_path, tmp_path / "ws", {}, 15, "full", ("pfseg",), "_full")
    assert set(later) == {"nnunet", "pfseg", "pfseg_branches", "load_average_1min"}
    assert later["pfseg_branches"] == "full"
    assert [c[-1] for c in calls] == ["calibration_nnunet_full", "calibration_pfseg_full.log"]
    assert calls[0][1] == str(tmp_path / "nnUNet_calibration_full")


def test_the_machine_line_names_the_openmp_wait_torch_loaded_under():
    """OpenMP reads its wait when torch loads: `python -m bench` records the environment as it
    was then, in each section's machine line (the commands run under `cli.OPENMP_ENV`, a bench
    process under whatever its shell set)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]

    def line(env: dict, first: str = "") -> str:
        base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
        code = f"{first}from bench.__main__ import machine; print(machine())"
        proc = subprocess.run([sys.executable, "-c", code], env={**base, **env}, cwd=root,
                              capture_output=True, text=True, check=True)
        return proc.stdout.strip()

    assert "OpenMP's default wait" in line({})
    passive = {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "30000"}
    assert "threads, OMP_WAIT_POLICY=PASSIVE GOMP_SPINCOUNT=30000)" in line(passive)
    assert "OpenMP wait unknown: torch loaded before bench" in line(passive, "import torch; ")


def test_resunet3d_at_pfsegs_iterations_is_a_row_and_a_paired_line_beside_equal_wall_clock():
    """The row that says whether PFSeg trails per training step or only per second: ResUNet3D for
    PFSeg's iterations, set against PFSeg by run, beside the same pairing at equal wall-clock."""
    from bench.nnunet_compare import PFSEG_ITERATIONS, _markdown

    runs = [_run(((0.90, 0.80, 0.75), 4.0), ((0.92, 0.83, 0.80), 3.0), ((0.87, 0.86, 0.79), 8.0), 12345),
            _run(((0.94, 0.84, 0.79), 4.0), ((0.93, 0.85, 0.82), 3.0), ((0.87, 0.88, 0.81), 6.0), 12346)]
    for r, (wt, hd, et) in zip(runs, ((0.88, 6.0, 0.70), (0.89, 8.0, 0.75))):
        r["scores"][PFSEG_ITERATIONS] = {x: {"dice": {"WT": wt, "ET": et}.get(x, 0.8),
                                             "hd95": hd if x == "WT" else 10.0} for x in REGIONS}
        r["train"][PFSEG_ITERATIONS] = {"iterations": 6000}
    figures = _compare_figures(runs)
    figures["planned_iterations"][PFSEG_ITERATIONS] = 6000
    text = _markdown(figures)
    # 6000 iterations at ResUNet3D's calibrated 0.25 s: 1500 s of training
    assert ("| ResUNet3D (sliding window, one pass), PFSeg's iterations | 6000 | 1500 | 0.885 (0.880-0.890) "
            "| 0.800 (0.800-0.800) | 0.725 (0.700-0.750) | 7.0 (6.0-8.0) |") in text
    # WT Dice: +0.02, +0.05 at the same steps; -0.02, +0.01 at equal wall-clock; HD95 -2, -4 and +1, +1
    assert ("at the same training steps (ResUNet3D for PFSeg's 6000 iterations) and at equal wall-clock: "
            "WT Dice +0.035 ± 0.015 and -0.005 ± 0.015; WT HD95 -3.00 ± 1.00 mm and +1.00 ± 0.00 mm; "
            "ET Dice +0.045 ± 0.005 and -0.040 ± 0.010.") in text
    for r in runs:       # a study from before the row: neither the row nor the line
        del r["scores"][PFSEG_ITERATIONS]
    assert "PFSeg's iterations" not in _markdown(_compare_figures(runs))


def test_the_pfseg_iterations_step_trains_resunet3d_for_pfsegs_epochs_and_mirrors_where_the_plan_does(
        tmp_path, monkeypatch):
    from bench import nnunet_compare as nc

    calls = []

    def train(root, ws_root, key, network, epochs, seed, r):
        calls.append(("train", key, network, epochs, seed, r))
        return {"train": {"iterations": epochs * 8}, "scores": {"from": f"pred_{key}_{r}"}}

    monkeypatch.setattr(nc, "_pfseg_run", train)
    def predict(model, test_dir, out, rounds=1, tta=False):
        calls.append(("predict", model.name, tta))

    monkeypatch.setattr(nc, "_pfseg_predict", predict)
    monkeypatch.setattr(nc, "_scores", lambda test_dir, pred_dir: {"from": pred_dir.name})
    done = nc._pfseg_iterations_run(tmp_path, tmp_path / "ws", 324, 12346, 1, tta=True)
    assert calls == [("train", nc.PFSEG_ITERATIONS, "resunet3d", 324, 12346, 1),
                     ("predict", f"{nc.PFSEG_ITERATIONS}_1", True)]
    assert done["scores"] == {"from": f"pred_{nc.PFSEG_ITERATIONS}_1"}
    assert done["tta_scores"] == {"from": f"pred_{nc.PFSEG_ITERATIONS}_tta_1"}
    calls.clear()
    assert "tta_scores" not in nc._pfseg_iterations_run(tmp_path, tmp_path / "ws", 324, 12346, 1, tta=False)
    assert [c[0] for c in calls] == ["train"]
