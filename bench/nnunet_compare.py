"""PFSeg against nnU-Net v2 `3d_fullres` and ResUNet3D on brain-anatomy cases at an equal
training wall-clock (CPU).

    python -m bench.nnunet_compare [--quick] [--runs R] [--keep DIR] [--records DIR] [--preset demo|default]
    python -m bench nnunet_compare --keep DIR     # the same, and its section in docs/BENCHMARKS.md

Data: anatomy cases (`pfseg_make_synthetic --anatomy mni152`, 4 mm): `--train` training cases
(seed 21) and `--test` held-out test cases (seed 22, ids from 901): both methods train on
exactly the training cases and predict exactly the test cases.

Budget: nnU-Net's time for `--nnunet-iterations` (1,000) iterations with its defaults (its
planner's patch, batch and network; SGD 1e-2 with Nesterov momentum, poly decay, deep
supervision, its augmentation), the poly schedule run over `--nnunet-epochs` (40) epochs of
25 iterations instead of 1,000 epochs of 250. Equal wall-clock, measured so that other work on
the machine cannot tilt it: first each method's seconds per training iteration are measured one
after the other in a calibration phase (a short training of each, the warm-up epoch left out,
all in the same minutes, before any run), then PFSeg and ResUNet3D train for as many iterations
as fit in nnU-Net's time at those rates. The calibration names the PFSeg branches it timed
(`training.pfseg_branches`); where the plan trains others, a later calibration times nnU-Net and
PFSeg again, one after the other, and PFSeg's rate is the later figure scaled by nnU-Net's then
against now (`pfseg_rate`), so that the budget stays nnU-Net's time. PFSeg's runs are kept per
branches, and the other branches' kept runs are a row of their own. The calibrations and the
prediction speed are the only timed parts: they need the machine to themselves (the load average
before and after each calibration is in the section); a training's result depends on its
iteration count, not on what else runs meanwhile. Each training's own wall time is recorded too.
ResUNet3D also trains for nnU-Net's 1,000 iterations (equal iterations), and for PFSeg's
iterations at equal wall-clock (PFSeg's iterations): where PFSeg trails at equal wall-clock,
that row says whether it trails at the same number of training steps too, or only because its
whole-volume step costs several patch steps here.

Runs: every method is trained `--runs` times (3) one after the other (never side by side), PFSeg
and ResUNet3D with seeds 12345, 12346, ..., nnU-Net drawing its own; each run is predicted and
scored on the test cases (Dice and HD95 in mm, MedPy's pooled definition, per region), and the
table gives the mean over the runs with their spread. nnU-Net is scored with its default
inference (mirroring) and without it; PFSeg and ResUNet3D in one pass and, where the plan's
`training.tta` makes mirror TTA pfseg's default inference, with it too (run_R_tta.json: the
kept models predicted again; a model no longer on the machine is trained again as its run was,
and each model's one-pass scores are checked against its kept run's). The verdicts are at each
method's default inference. Prediction speed: the folder's wall time per case after a warm-up
case, median of 3 rounds, for PFSeg (one pass, and with TTA where that is its default) and
nnU-Net (sliding window).

The study takes hours: with `--keep DIR` every finished step is kept there as JSON and a rerun
skips it; a killed training resumes from its latest checkpoint (nnU-Net's and pfseg's alike).
With `--records DIR` the steps' JSON lives in DIR instead (bench/records/nnunet_compare, in the
repository), so the study can span sessions on machines that keep nothing but the repository:
what a later step needs and a new machine lacks (the cases, both preprocessings) is made again,
deterministically, untimed; the prediction speed times the models of the latest run on the
machine, or, where none is, of a short training of each (the speed of one pass or of a sliding
window does not depend on the weights).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)
DATASET_ID = 502
NNUNET_NAME = "PfsegCompare"
NAME = "Compare"
ROOT = Path(__file__).resolve().parent.parent
REGIONS = ("WT", "TC", "ET")
SEED = 12345
TRAIN_SEED, TEST_SEED, TEST_START = 21, 22, 901
# the plan's training.pfseg_branches in the section's words
BRANCHES_WORDS = {"full": "PFSeg trains the whole method (segmentation network, SR decoder, SGM: the plan's "
                          "`training.pfseg_branches` full)",
                  "us": "PFSeg trains its segmentation network alone (the plan's `training.pfseg_branches` "
                        "us: the default at LR scale 1 from recipe:c4-us until bench branches made it the "
                        "whole method again)"}
STEP_FILES = ("data.json", "pfseg_preprocess.json", "calibration.json", "speed.json", "speed_tta.json")
# and run_*.json, and calibration_pfseg_*.json (`pfseg_rate`)
# the methods trained per run: (key, network, budget) with budget "time" (nnU-Net's wall-clock)
# or "iterations" (nnU-Net's iteration count)
PFSEG_ROWS = (("pfseg", "pfseg", "time"), ("resunet3d", "resunet3d", "time"),
              ("resunet3d_iterations", "resunet3d", "iterations"))
# ResUNet3D for PFSeg's iterations at equal wall-clock: a step of its own per run (run_R_KEY.json,
# one pass and, where the plan mirrors, TTA), added after the rows above had their kept steps
PFSEG_ITERATIONS = "resunet3d_pfseg_iterations"
# PFSeg's rows: "pfseg" trains the plan's branches (run_R_pfseg_BRANCHES.json); "pfseg_other" is
# the other branches' runs where the records hold them for every run (read, never trained)
BRANCH_NAMES = {"full": "whole method", "us": "segmentation network alone"}
# the table's rows in order; the PFSeg rows are labelled by the branches they trained (`_markdown`);
# KEY_tta: the same models predicted with mirror TTA (run_R_tta.json), where the plan's
# training.tta makes that pfseg's default inference
ROWS = ("pfseg_tta", "pfseg", "pfseg_other", "resunet3d_tta", "resunet3d", "resunet3d_iterations_tta",
        "resunet3d_iterations", f"{PFSEG_ITERATIONS}_tta", PFSEG_ITERATIONS, "nnunet_mirroring", "nnunet")
LABELS = {"resunet3d_tta": "ResUNet3D (sliding window, mirror TTA), equal wall-clock",
          "resunet3d": "ResUNet3D (sliding window, one pass), equal wall-clock",
          "resunet3d_iterations_tta": "ResUNet3D (sliding window, mirror TTA), equal iterations",
          "resunet3d_iterations": "ResUNet3D (sliding window, one pass), equal iterations",
          f"{PFSEG_ITERATIONS}_tta": "ResUNet3D (sliding window, mirror TTA), PFSeg's iterations",
          PFSEG_ITERATIONS: "ResUNet3D (sliding window, one pass), PFSeg's iterations",
          "nnunet_mirroring": "nnU-Net 3d_fullres, default inference (mirroring)",
          "nnunet": "nnU-Net 3d_fullres, no mirroring"}


def _timed(cmd: list[str], env: dict, logfile: Path, append: bool = False) -> float:
    t0 = time.perf_counter()
    with open(logfile, "a" if append else "w") as f:
        proc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}); log {logfile}:\n"
                           + logfile.read_text()[-3000:])
    return time.perf_counter() - t0


def _step(path: Path, compute, *args):
    """The JSON at `path` when an earlier run left it there; else compute(*args) (a dict), stamped
    with the time it finished (`finished_utc`: file times do not survive a git checkout), kept and
    returned."""
    if path.is_file():
        log.info("kept from an earlier run: %s", path.name)
        return json.loads(path.read_text())
    value = {**compute(*args), "finished_utc": _utc(time.time())}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=1, default=str))
    return value


def steps_span(steps: list[Path]) -> list[str]:
    """The first and last `finished_utc` of the kept steps (a step kept before the stamp: its
    file's time)."""
    stamps = sorted(json.loads(q.read_text()).get("finished_utc") or _utc(q.stat().st_mtime) for q in steps)
    return [stamps[0], stamps[-1]]


def _utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(seconds))


# ---- pfseg --------------------------------------------------------------------------------------
def _pfseg_train(ws_root: Path, network: str, epochs: int, iterations: int | None, seed: int,
                 logfile: Path) -> dict:
    """`pfseg_train NAME all` from scratch (the network's previous folder removed), or resumed
    with `--continue` where this same training (network, epochs, iterations, seed: the marker
    beside `logfile`) was stopped part-way, e.g. by the end of a session: an hour's run need not
    start over. `wall_seconds` is then the resumed part's."""
    from bench.demo_data import console
    from pfseg_pipeline.checkpoints import checkpoint_path
    from pfseg_pipeline.fileio import read_json
    from pfseg_pipeline.paths import Workspace

    fold_dir = Workspace.resolve(ws_root).fold_dir(NAME, network, "all")
    marker = logfile.with_suffix(".started.json")
    this = {"network": network, "epochs": epochs, "iterations": iterations, "seed": seed}
    resume = (marker.is_file() and json.loads(marker.read_text()) == this
              and checkpoint_path(fold_dir, "latest").is_file())
    if not resume:
        shutil.rmtree(fold_dir.parent, ignore_errors=True)
        marker.write_text(json.dumps(this))
    cmd = [console("pfseg_train"), NAME, "all", "--network", network, "--device", "cpu",
           "--epochs", str(epochs), "--seed", str(seed), "--no-progress", "--workspace", str(ws_root)]
    if iterations:
        cmd += ["--iterations-per-epoch", str(iterations)]
    if resume:
        log.info("resuming %s (%d epochs, seed %d) from its latest checkpoint", network, epochs, seed)
        cmd.append("--continue")
    wall = _timed(cmd, dict(os.environ), logfile, append=resume)
    marker.unlink()
    summary = read_json(fold_dir / "train_summary.json")
    per_epoch = summary["options"]["iterations_per_epoch"]
    return {"network": network, "wall_seconds": wall, "seed": seed,
            "seconds_per_iteration": summary["seconds_per_iteration"], "epochs": epochs,
            "iterations": epochs * per_epoch,
            "train_seconds": summary["seconds_per_iteration"] * epochs * per_epoch,
            "parameters": summary.get("parameters"),
            "parameters_inference": summary.get("parameters_inference"),
            "batch_size": summary.get("batch_size"), "num_workers": summary.get("num_workers"),
            "ablation": summary.get("ablation"), "model_dir": str(fold_dir.parent), "resumed": resume,
            "compute": summary.get("compute")}   # the kernels: a rerun elsewhere sums in another order


def _pfseg_predict(model_dir: Path, test_dir: Path, out: Path, rounds: int = 1, tta: bool = False) -> dict:
    """Predict the test cases with one pass (`tta` False: what the kept runs were scored with) or
    the mean over the mirrors; the folder's wall time per case over `rounds` rounds."""
    from pfseg_pipeline.inference.pipeline import predict_folder
    from pfseg_pipeline.inference.predictor import Predictor

    predictor = Predictor.from_model_dir(model_dir, folds=["all"], device="cpu", tta=tta)
    cases = _cases(test_dir)
    # warm-up (not timed): the CPU kernels' first-call set-up, as nnU-Net gets below
    predict_folder(test_dir, out.with_name(out.name + "_warmup"), predictor=predictor, progress=False,
                   overwrite=True, cases=cases[:1])
    walls = []
    for _ in range(rounds):
        report = predict_folder(test_dir, out, predictor=predictor, progress=False, overwrite=True)
        if not report.ok:
            raise RuntimeError(f"pfseg prediction: {report.summary()}")
        walls.append(report.wall_seconds / len(cases))
    return {"seconds_per_case": statistics.median(walls), "rounds": walls, "tta": tta}


def _cases(test_dir: Path):
    from pfseg_pipeline.data.layouts import discover

    return discover(test_dir, require_label=False).cases


# ---- nnU-Net ------------------------------------------------------------------------------------
def _nnunet_train(env: dict, epochs: int, iterations: int, stem: Path) -> dict:
    """bench/nnunet_trainer.py in a process of its own; its JSON (stem.json; log: stem.log)."""
    out = stem.with_suffix(".json")
    wall = _timed([sys.executable, "-m", "bench.nnunet_trainer", str(DATASET_ID), "--epochs", str(epochs),
                   "--iterations", str(iterations), "--json", str(out)], env, stem.with_suffix(".log"))
    return {**json.loads(out.read_text()), "process_wall_seconds": wall}


def _nnunet_predict(model_dir: Path, test_dir: Path, out: Path, mirroring: bool, rounds: int = 1) -> dict:
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from bench.preprocess_speed import MODALITY_CHANNELS

    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=mirroring,
                                perform_everything_on_device=False, device=torch.device("cpu"),
                                verbose=False, verbose_preprocessing=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(model_dir), ("all",), "checkpoint_final.pth")
    ids = [c.case_id for c in _cases(test_dir)]
    inputs = [[str(test_dir / c / f"{c}_{m}.nii.gz") for m in MODALITY_CHANNELS] for c in ids]
    raw = out.with_name(out.name + "_raw")
    warmup = out.with_name(out.name + "_warmup")
    for folder in (raw, warmup):
        folder.mkdir(parents=True, exist_ok=True)
    kwargs = {"save_probabilities": False, "overwrite": True, "num_processes_preprocessing": 1,
              "num_processes_segmentation_export": 1}
    predictor.predict_from_files(inputs[:1], [str(warmup / ids[0])], **kwargs)  # warm-up, not timed
    walls = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        predictor.predict_from_files(inputs, [str(raw / c) for c in ids], **kwargs)
        walls.append((time.perf_counter() - t0) / len(ids))
    _nnunet_to_brats(raw, out)
    return {"seconds_per_case": statistics.median(walls), "rounds": walls, "mirroring": mirroring}


def _nnunet_to_brats(src: Path, dst: Path) -> None:
    """nnU-Net's output labels (1, 2, 3 = ET) -> BraTS 2020 values (1, 2, 4), same header."""
    import nibabel as nib

    from bench.preprocess_speed import BRATS_TO_NNUNET

    lut = np.zeros(256, np.uint8)
    for brats, nn in BRATS_TO_NNUNET.items():
        lut[nn] = brats
    dst.mkdir(parents=True, exist_ok=True)
    for path in sorted(src.glob("*.nii.gz")):
        img = nib.load(str(path))
        out = nib.Nifti1Image(lut[np.asarray(img.dataobj).astype(np.uint8)], img.affine, img.header)
        out.set_data_dtype(np.uint8)
        nib.save(out, str(dst / path.name))


def _scores(test_dir: Path, pred_dir: Path) -> dict:
    """The test cases' mean Dice and HD95 per region, and under "cases" each case's, so that a
    mean can be traced to the cases that make it (steps kept before 2026-12-02 have means only)."""
    from pfseg_pipeline.evaluation.evaluate import evaluate_folder

    result = evaluate_folder(test_dir, pred_dir, target="regions", progress=False, write=False)
    if result.get("missing") or result.get("failed"):
        raise RuntimeError(f"evaluation of {pred_dir}: missing {result.get('missing')}, "
                           f"failed {result.get('failed')}")
    means = {r: {m: result["summary"][r][m]["mean"] for m in ("dice", "hd95")} for r in REGIONS}
    cases = {c["case"]: {r: {m: c[r][m] for m in ("dice", "hd95")} for r in REGIONS}
             for c in result["per_case"]}
    return {**means, "cases": cases}


def _means(scores: dict) -> dict:
    """The per-region means of `_scores`' answer, without its per-case figures."""
    return {r: v for r, v in scores.items() if r in REGIONS}


def cases_without_et(raw: Path) -> list[str]:
    """The ids of the cases under `raw` whose label map has no enhancing tumour (BraTS 2020 labels):
    BraTS scores such a case's ET Dice 1 for an empty ET and 0 for any voxel painted."""
    from pfseg_pipeline.data.image_io import read_label
    from pfseg_pipeline.data.labels import BRATS2020
    from pfseg_pipeline.data.layouts import discover

    et = BRATS2020.regions["ET"]
    return [c.case_id for c in discover(raw, require_label=True).cases
            if not np.isin(read_label(c.label)[0], et).any()]


def _without_et_words(f: dict) -> str:
    """The section's sentence on the cases without ET (none before the figures had them)."""
    free = f.get("without_et")
    if free is None:
        return ""
    counts = [f"{len(free[k]) or 'none'} of the {f[k + '_cases']} {noun} cases"
              for k, noun in (("train", "training"), ("test", "test"))]
    listed = ", ".join(free["train"] + free["test"])
    return (f" Cases without enhancing tumour (ET): {counts[0]}, {counts[1]}"
            + (f" ({listed})" if listed else "") + "; an ET-free case scores ET Dice 1 when no ET voxel is "
            "predicted there and 0 otherwise, so in each run it moves a method's mean ET Dice by "
            f"1/{f['test_cases']}.")


def _pfseg_run(root: Path, ws_root: Path, key: str, network: str, epochs: int, seed: int, r: int) -> dict:
    """One training run of a pfseg network (its model kept in root/models/KEY_R), its test cases
    predicted and scored."""
    train = _pfseg_train(ws_root, network, epochs, None, seed, root / f"train_{key}_{r}.log")
    model = root / "models" / f"{key}_{r}"
    shutil.rmtree(model, ignore_errors=True)
    shutil.copytree(train["model_dir"], model)
    train["model_dir"] = str(model)
    pred_dir = root / f"pred_{key}_{r}"
    _pfseg_predict(model, root / "test", pred_dir)
    return {"train": train, "scores": _scores(root / "test", pred_dir)}


def _tta_run(root: Path, ws_root: Path, r: int, kept: dict, epochs: dict, branches: str) -> dict:
    """Run r's pfseg models (PFSeg, ResUNet3D at equal time and at equal iterations) predicted
    with mirror TTA and scored. A model no longer on this machine is trained again as its run
    was (network, epochs, seed); every model is also predicted in one pass again, and whether
    that matches the kept run's scores is recorded: the TTA figures are those of the kept run's
    weights exactly where it does."""
    out: dict = {"scores": {}, "one_pass_scores": {}, "one_pass_matches_kept": {}, "retrained": []}
    for key, network, _ in PFSEG_ROWS:
        name = f"{key}_{branches}" if key == "pfseg" else key
        model = root / "models" / f"{name}_{r}"
        if not model.is_dir():
            log.info("run %d's %s model is not on this machine: trained again (seed %d)", r, name, SEED + r)
            _pfseg_run(root, ws_root, name, network, epochs[key], SEED + r, r)
            out["retrained"].append(key)
        one_pass = root / f"pred_{name}_{r}_again"
        _pfseg_predict(model, root / "test", one_pass)
        out["one_pass_scores"][key] = _scores(root / "test", one_pass)
        out["one_pass_matches_kept"][key] = _means(out["one_pass_scores"][key]) == _means(kept[key])
        out["scores"][key] = _mirrored_scores(root, name, r)
    return out


def _pfseg_iterations_run(root: Path, ws_root: Path, epochs: int, seed: int, r: int, tta: bool) -> dict:
    """ResUNet3D trained for PFSeg's epochs (`_pfseg_run`), its test cases also predicted with
    mirror TTA where the plan's default inference mirrors (`tta`): "tta_scores"."""
    done = _pfseg_run(root, ws_root, PFSEG_ITERATIONS, "resunet3d", epochs, seed, r)
    if tta:
        done["tta_scores"] = _mirrored_scores(root, PFSEG_ITERATIONS, r)
    return done


def _mirrored_scores(root: Path, name: str, r: int) -> dict:
    """Run r's kept pfseg model `name` (models/NAME_R) predicted with mirror TTA into
    pred_NAME_tta_R and scored."""
    mirrored = root / f"pred_{name}_tta_{r}"
    _pfseg_predict(root / "models" / f"{name}_{r}", root / "test", mirrored, tta=True)
    return _scores(root / "test", mirrored)


def _speed_tta(root: Path, model_name: str) -> dict:
    """PFSeg's prediction seconds per case with mirror TTA (median of 3 rounds), the model the
    speed step timed in one pass."""
    model = root / "models" / model_name
    return {"pfseg_tta": _pfseg_predict(model, root / "test", root / "speed_pfseg_tta", rounds=3, tta=True),
            "pfseg_model": model_name}


def _nnunet_run(root: Path, nn_env: dict, epochs: int, iterations: int, r: int) -> dict:
    """One nnU-Net training run, its test cases predicted with and without mirroring and scored."""
    env = {**nn_env, "nnUNet_results": str(root / f"nnUNet_results_{r}")}
    train = _nnunet_train(env, epochs, iterations // epochs, root / f"train_nnunet_{r}")
    scores = {}
    for key, mirroring in (("nnunet", False), ("nnunet_mirroring", True)):
        pred_dir = root / f"pred_{key}_{r}"
        _nnunet_predict(Path(train["model_dir"]), root / "test", pred_dir, mirroring)
        scores[key] = _scores(root / "test", pred_dir)
    return {"train": train, "scores": scores}


def _speed(root: Path, ws_root: Path, nn_env: dict, nnunet_runs: list[dict], iterations: int,
           pfseg_key: str) -> dict:
    """Prediction seconds per case of PFSeg and nnU-Net (`_speed_models`), median of 3 rounds each."""
    pfseg_model, nnunet_model, which = _speed_models(root, ws_root, nn_env, nnunet_runs, iterations,
                                                     pfseg_key)
    out = {"pfseg": _pfseg_predict(pfseg_model, root / "test", root / "speed_pfseg", rounds=3),
           "models": which, "pfseg_model": pfseg_model.name}   # e.g. pfseg_full_2: its branches and run
    for key, mirroring in (("nnunet", False), ("nnunet_mirroring", True)):
        out[key] = _nnunet_predict(nnunet_model, root / "test", root / f"speed_{key}", mirroring, rounds=3)
    return out


def _speed_models(root: Path, ws_root: Path, nn_env: dict, nnunet_runs: list[dict], iterations: int,
                  pfseg_key: str = "pfseg"):
    """The models the speed step times: the latest run's on this machine (PFSeg's `pfseg_key` row),
    else a short training of each (`iterations` iterations, one epoch), untimed."""
    for r in reversed(range(len(nnunet_runs))):
        nnunet_model = Path(nnunet_runs[r]["train"]["model_dir"])
        if (root / "models" / f"{pfseg_key}_{r}").is_dir() and nnunet_model.is_dir():
            return root / "models" / f"{pfseg_key}_{r}", nnunet_model, f"run {r}'s"
    log.info("no run's models on this machine: a short training of each for the speed step")
    nnunet_model = Path(_nnunet_train({**nn_env, "nnUNet_results": str(root / "nnUNet_speed")}, 1, iterations,
                                      root / "speed_nnunet")["model_dir"])
    train = _pfseg_train(ws_root, "pfseg", 1, iterations, SEED, root / "speed_pfseg_train.log")
    model = root / "models" / "pfseg_speed"
    shutil.rmtree(model, ignore_errors=True)
    shutil.copytree(train["model_dir"], model)
    return model, nnunet_model, f"a {iterations}-iteration training's"


# ---- the study ----------------------------------------------------------------------------------
def _other_branches(branches: str) -> str:
    """The PFSeg branches the plan does not train (their kept runs are the `pfseg_other` row)."""
    return next(b for b in BRANCH_NAMES if b != branches)


def calibrate(root: Path, ws_root: Path, nn_env: dict, iterations: int, branches: str, networks: tuple,
              suffix: str = "") -> dict:
    """Seconds per training iteration of nnU-Net, then of each pfseg network (two epochs of
    `iterations` each, one after the other), with the load average before and after and the PFSeg
    branches the plan trains; logs and results named with `suffix` (a later calibration's)."""
    before = round(os.getloadavg()[0], 2)
    env = {**nn_env, "nnUNet_results": str(root / f"nnUNet_calibration{suffix}")}
    nnunet = _nnunet_train(env, 2, iterations, root / f"calibration_nnunet{suffix}")
    c = {"nnunet": nnunet["seconds_per_iteration"]}
    for network in networks:
        c[network] = _pfseg_train(ws_root, network, 2, iterations, SEED,
                                  root / f"calibration_{network}{suffix}.log")["seconds_per_iteration"]
    return {**c, "pfseg_branches": branches, "load_average_1min": [before, round(os.getloadavg()[0], 2)]}


def pfseg_rate(calibration: dict, later: dict | None) -> float:
    """PFSeg's seconds per iteration in the terms of the calibration: its own figure, or, for
    branches calibrated later (`later`: nnU-Net and PFSeg measured one after the other again), the
    later PFSeg figure scaled by nnU-Net's then against now, so that equal wall-clock stays
    nnU-Net's time for its iterations whatever the machine's speed that day."""
    if later is None:
        return calibration["pfseg"]
    return later["pfseg"] * calibration["nnunet"] / later["nnunet"]


def _epochs_for(iterations: float, per_epoch: int) -> int:
    return max(1, round(iterations / per_epoch))


def run(quick: bool = False, n_train: int | None = None, n_test: int | None = None, spacing: int = 4,
        runs: int | None = None, nnunet_iterations: int | None = None, nnunet_epochs: int | None = None,
        preset: str = "demo", workers: int = 2, keep: str | None = None, records: str | None = None,
        nnunet_only: bool = False) -> dict:
    import nnunetv2
    import torch

    from bench.demo_data import console
    from bench.preprocess_speed import to_nnunet_raw
    from pfseg_pipeline.data.synthetic import write_dataset
    from pfseg_pipeline.paths import Workspace
    from pfseg_pipeline.plans import load_plans

    n_train = n_train or (6 if quick else 16)
    n_test = n_test or (2 if quick else 8)
    runs = runs or (1 if quick else 3)
    nn_iters = nnunet_iterations or (6 if quick else 1000)
    nn_epochs = nnunet_epochs or (2 if quick else 40)
    calib_iters = 3 if quick else 15
    root = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="pfseg-nnunet-"))
    root.mkdir(parents=True, exist_ok=True)
    rec = Path(records) if records else root   # where the steps' JSON is kept
    f: dict = {"title": "PFSeg vs nnU-Net v2 3d_fullres and ResUNet3D on anatomy cases at equal wall-clock "
                        "(CPU)",
               "train_cases": n_train, "test_cases": n_test, "spacing_mm": spacing, "runs": runs,
               "nnunet_iterations": nn_iters, "nnunet_epochs": nn_epochs, "preset": preset,
               "cpus": len(os.sched_getaffinity(0)), "load_average_1min": [round(os.getloadavg()[0], 2)],
               "versions": {"torch": torch.__version__,
                            "nnunetv2": getattr(nnunetv2, "__version__", "2.6.x")}}
    nn_env = {**os.environ, "nnUNet_raw": str(root / "nnUNet_raw"),
              "nnUNet_preprocessed": str(root / "nnUNet_preprocessed"),
              "nnUNet_results": str(root / "nnUNet_results"), "nnUNet_n_proc_DA": str(workers),
              "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    ws_root = root / "ws"
    try:
        def data():
            ids = write_dataset(root / "train", n_train, anatomy="mni152", spacing_mm=spacing,
                                seed=TRAIN_SEED, workers=workers, overwrite=True)
            test = write_dataset(root / "test", n_test, anatomy="mni152", spacing_mm=spacing,
                                 seed=TEST_SEED, start_index=TEST_START, workers=workers, overwrite=True)
            to_nnunet_raw(root / "train", root / "nnUNet_raw", DATASET_ID, NNUNET_NAME)
            seconds = _timed([console("nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID),
                              "-c", "3d_fullres", "-np", str(workers), "-npfp", str(workers),
                              "--verify_dataset_integrity"], nn_env, root / "nnunet_preprocess.log")
            return {"train_ids": ids, "test_ids": test, "nnunet_preprocess_seconds": seconds}

        def pfseg_preprocess():
            shutil.rmtree(ws_root, ignore_errors=True)
            cmd = [console("pfseg_plan_and_preprocess"), "-i", str(root / "train"), "-d", NAME,
                   "--preset", preset, "-np", str(workers), "--workspace", str(ws_root)]
            return {"pfseg_preprocess_seconds": _timed(cmd, dict(os.environ), root / "pfseg_preprocess.log")}

        f.update(_step(rec / "data.json", data))
        nn_plans_file = (root / "nnUNet_preprocessed" / f"Dataset{DATASET_ID:03d}_{NNUNET_NAME}"
                         / "nnUNetPlans.json")
        if not (nn_plans_file.is_file() and (root / "test").is_dir()):   # kept step, new machine
            log.info("the cases and nnU-Net's preprocessing made again (untimed; the kept figures stand)")
            data()
        nn_plans = json.loads(nn_plans_file.read_text())["configurations"]["3d_fullres"]
        arch = nn_plans["architecture"]["arch_kwargs"]
        f["without_et"] = {k: cases_without_et(root / k) for k in ("train", "test")}
        f["nnunet_plan"] = {"patch_size_zyx": nn_plans["patch_size"], "batch_size": nn_plans["batch_size"],
                            "features_per_stage": arch["features_per_stage"]}
        f.update(_step(rec / "pfseg_preprocess.json", pfseg_preprocess))
        if not Workspace.resolve(ws_root).plans_file(NAME).is_file():
            log.info("pfseg's preprocessing made again (untimed; the kept figures stand)")
            pfseg_preprocess()
        f["preprocess_seconds"] = {"pfseg": f["pfseg_preprocess_seconds"],
                                   "nnunet": f["nnunet_preprocess_seconds"]}
        plans = load_plans(Workspace.resolve(ws_root).plans_file(NAME))
        f["pfseg_plan"] = {"preset": preset, "hr_shape_zyx": plans.hr_shape_zyx,
                           "lr_scale_zyx": plans.lr_scale_zyx,
                           "widths": plans.network.widths, "batch_size": plans.batch_size,
                           "patch_shape_zyx": plans.patch_based.patch_shape_zyx,
                           "iterations_per_epoch": plans.training.iterations_per_epoch,
                           "optimizer": plans.training.optimizer, "lr": plans.training.lr,
                           "pfseg_branches": plans.training.pfseg_branches, "tta": plans.training.tta}
        branches = plans.training.pfseg_branches
        other = _other_branches(branches)

        # ---- calibration: seconds per training iteration of each, one after the other
        # the calibration first: it alone is timed, so it alone needs the machine to itself; every
        # training after it runs a fixed number of iterations, which other work can slow, not change
        f["calibration"] = _step(rec / "calibration.json", calibrate, root, ws_root, nn_env, calib_iters,
                                 branches, ("pfseg", "resunet3d"))
        if f["calibration"].get("pfseg_branches", "full") != branches:   # it timed the other branches
            f["calibration_pfseg"] = _step(rec / f"calibration_pfseg_{branches}.json", calibrate, root,
                                           ws_root, nn_env, calib_iters, branches, ("pfseg",), f"_{branches}")
        f["pfseg_rate"] = pfseg_rate(f["calibration"], f.get("calibration_pfseg"))
        # nnU-Net's runs do not depend on pfseg's recipe: --nnunet-only trains them ahead
        nnunet_runs = [_step(rec / f"run_{r}_nnunet.json", _nnunet_run, root, nn_env, nn_epochs, nn_iters, r)
                       for r in range(runs)]
        if nnunet_only:
            return f
        budget = nn_iters * f["calibration"]["nnunet"]
        f["budget_seconds"] = budget
        per_epoch = plans.training.iterations_per_epoch
        rate = {"pfseg": f["pfseg_rate"], "resunet3d": f["calibration"]["resunet3d"]}
        wanted = {key: budget / rate[net] if how == "time" else nn_iters for key, net, how in PFSEG_ROWS}
        f["planned_iterations"] = {key: per_epoch * _epochs_for(n, per_epoch) for key, n in wanted.items()}
        f["planned_iterations"][PFSEG_ITERATIONS] = f["planned_iterations"]["pfseg"]

        # ---- the runs, one training at a time
        f["run_results"] = []
        for r in range(runs):
            result = {"seed": SEED + r, "train": {}, "scores": {}}
            for key, network, _ in PFSEG_ROWS:
                epochs = f["planned_iterations"][key] // per_epoch
                name = f"{key}_{branches}" if key == "pfseg" else key
                done = _step(rec / f"run_{r}_{name}.json", _pfseg_run, root, ws_root, name, network, epochs,
                             SEED + r, r)
                result["train"][key], result["scores"][key] = done["train"], done["scores"]
            kept = rec / f"run_{r}_pfseg_{other}.json"
            if kept.is_file():
                done = json.loads(kept.read_text())
                result["train"]["pfseg_other"] = done["train"]
                result["scores"]["pfseg_other"] = done["scores"]
            result["train"]["nnunet"] = result["train"]["nnunet_mirroring"] = nnunet_runs[r]["train"]
            result["scores"].update(nnunet_runs[r]["scores"])
            if plans.training.tta:    # pfseg's default inference: the same models, mirrored
                epochs = {key: f["planned_iterations"][key] // per_epoch for key, _, _ in PFSEG_ROWS}
                done = _step(rec / f"run_{r}_tta.json", _tta_run, root, ws_root, r, result["scores"], epochs,
                             branches)
                result["tta"] = {k: v for k, v in done.items() if k != "scores"}
                for key, scores in done["scores"].items():
                    result["train"][f"{key}_tta"] = result["train"][key]
                    result["scores"][f"{key}_tta"] = scores
            done = _step(rec / f"run_{r}_{PFSEG_ITERATIONS}.json", _pfseg_iterations_run, root, ws_root,
                         f["planned_iterations"][PFSEG_ITERATIONS] // per_epoch, SEED + r, r,
                         plans.training.tta)
            result["train"][PFSEG_ITERATIONS] = done["train"]
            result["scores"][PFSEG_ITERATIONS] = done["scores"]
            if "tta_scores" in done:
                result["train"][f"{PFSEG_ITERATIONS}_tta"] = done["train"]
                result["scores"][f"{PFSEG_ITERATIONS}_tta"] = done["tta_scores"]
            f["run_results"].append(result)
        f["predict"] = _step(rec / "speed.json", _speed, root, ws_root, nn_env, nnunet_runs, calib_iters,
                             f"pfseg_{branches}")
        if plans.training.tta:
            f["predict"].update(_step(rec / "speed_tta.json", _speed_tta, root, f["predict"]["pfseg_model"]))
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    f["load_average_1min"].append(round(os.getloadavg()[0], 2))
    if keep or records:  # the steps may have been computed across sessions
        f["steps_span_utc"] = steps_span([rec / n for n in STEP_FILES if (rec / n).is_file()]
                                         + sorted(rec.glob("calibration_pfseg_*.json"))
                                         + sorted(rec.glob("run_*.json")))
    if not nnunet_only:
        f["markdown"] = _markdown(f)
    return f


# ---- the report ---------------------------------------------------------------------------------
def summarise(run_results: list[dict]) -> dict:
    """Per method and region: the mean over the runs of the test-set mean Dice / HD95, with the
    runs' lowest and highest."""
    out: dict = {}
    for key in ROWS:
        if not all(key in r["scores"] for r in run_results):
            continue
        out[key] = {}
        for region in REGIONS:
            for metric in ("dice", "hd95"):
                values = [r["scores"][key][region][metric] for r in run_results]
                out[key][f"{region}_{metric}"] = {"mean": float(np.mean(values)), "min": float(min(values)),
                                                  "max": float(max(values)), "n": len(values)}
    return out


def verdicts(summary: dict, nnunet_key: str = "nnunet_mirroring",
             tta: bool = False) -> list[tuple[str, bool]]:
    """The acceptance lines of the comparison (issue 14), each with whether it holds; PFSeg and
    ResUNet3D with mirror TTA (`tta`) or one pass."""
    suffix = "_tta" if tta else ""
    pf, res, nn = summary["pfseg" + suffix], summary["resunet3d" + suffix], summary[nnunet_key]

    def m(d, k):
        return d[k]["mean"]

    lines = [
        (f"PFSeg WT Dice {m(pf, 'WT_dice'):.3f} >= ResUNet3D's {m(res, 'WT_dice'):.3f}",
         m(pf, "WT_dice") >= m(res, "WT_dice")),
        (f"PFSeg WT Dice {m(pf, 'WT_dice'):.3f} >= nnU-Net's {m(nn, 'WT_dice'):.3f} - 0.01",
         m(pf, "WT_dice") >= m(nn, "WT_dice") - 0.01),
    ]
    for region in ("TC", "ET"):
        best = max(m(res, f"{region}_dice"), m(nn, f"{region}_dice"))
        lines.append((f"PFSeg {region} Dice {m(pf, f'{region}_dice'):.3f} within 0.05 of the better of "
                      f"the two ({best:.3f})", m(pf, f"{region}_dice") >= best - 0.05))
    worst = min(m(res, "WT_hd95"), m(nn, "WT_hd95"))
    lines.append((f"PFSeg WT HD95 {m(pf, 'WT_hd95'):.2f} mm no worse than either ({m(res, 'WT_hd95'):.2f}, "
                  f"{m(nn, 'WT_hd95'):.2f} mm)", m(pf, "WT_hd95") <= worst))
    return lines


def per_run_lines(run_results: list[dict], tta: bool = False) -> list[str]:
    """Each run's test Dice per region for PFSeg / ResUNet3D / nnU-Net (equal wall-clock, each at
    its default inference: PFSeg and ResUNet3D with mirror TTA where `tta`), and PFSeg - ResUNet3D
    of the WT Dice paired by run (same seed)."""
    pf, res = ("pfseg_tta", "resunet3d_tta") if tta else ("pfseg", "resunet3d")
    keys = (pf, res, "nnunet_mirroring")
    inference = "PFSeg and ResUNet3D with mirror TTA, " if tta else ""
    lines = ["", f"Per run (equal wall-clock; {inference}nnU-Net with mirroring): test Dice PFSeg / "
             "ResUNet3D / nnU-Net.", "", "| run | seed | WT | TC | ET | WT: PFSeg - ResUNet3D |",
             "|---:|---:|---|---|---|---:|"]
    differences = []
    for i, r in enumerate(run_results):
        cells = [" / ".join(f"{r['scores'][k][region]['dice']:.3f}" for k in keys) for region in REGIONS]
        differences.append(r["scores"][pf]["WT"]["dice"] - r["scores"][res]["WT"]["dice"])
        lines.append(f"| {i} | {r['seed']} | " + " | ".join(cells) + f" | {differences[-1]:+.3f} |")
    if len(differences) > 1:
        lines += ["", f"PFSeg - ResUNet3D, WT Dice, paired by run: {_mean_se(differences, 3)} "
                      f"(mean ± standard error over {len(differences)} runs)."]
    return lines


def equal_iterations_lines(run_results: list[dict], tta: bool = False) -> list[str]:
    """PFSeg - ResUNet3D at PFSeg's iterations (the same training steps), WT Dice and WT HD95
    paired by run, beside the same at equal wall-clock: whether PFSeg trails per step or only per
    second. Nothing where the runs lack the row (studies before it)."""
    suffix = "_tta" if tta else ""
    pf, same_steps, same_time = (f"pfseg{suffix}", f"{PFSEG_ITERATIONS}{suffix}", f"resunet3d{suffix}")
    if not all(same_steps in r["scores"] for r in run_results) or len(run_results) < 2:
        return []

    def paired(other: str, region: str, metric: str) -> str:
        d = [r["scores"][pf][region][metric] - r["scores"][other][region][metric] for r in run_results]
        return _mean_se(d, 3 if metric == "dice" else 2)

    return ["", f"PFSeg - ResUNet3D paired by run ({'mirror TTA' if tta else 'one pass'}; mean ± standard "
            f"error over {len(run_results)} runs), at the same training steps (ResUNet3D for PFSeg's "
            f"{run_results[0]['train'][same_steps]['iterations']} iterations) and at equal wall-clock: WT "
            f"Dice {paired(same_steps, 'WT', 'dice')} and {paired(same_time, 'WT', 'dice')}; WT HD95 "
            f"{paired(same_steps, 'WT', 'hd95')} mm and {paired(same_time, 'WT', 'hd95')} mm; ET Dice "
            f"{paired(same_steps, 'ET', 'dice')} and {paired(same_time, 'ET', 'dice')}."]


def _mean_se(values: list[float], digits: int) -> str:
    """"mean ± standard error" of paired differences, signed."""
    se = float(np.std(values, ddof=1)) / np.sqrt(len(values))
    return f"{np.mean(values):+.{digits}f} ± {se:.{digits}f}"


def _cell(d: dict, digits: int) -> str:
    if d["n"] == 1:
        return f"{d['mean']:.{digits}f}"
    return f"{d['mean']:.{digits}f} ({d['min']:.{digits}f}-{d['max']:.{digits}f})"


def _markdown(f: dict) -> str:
    summary = summarise(f["run_results"])
    first = f["run_results"][0]
    pp, nnp, cal = f["pfseg_plan"], f["nnunet_plan"], f["calibration"]
    branches = pp.get("pfseg_branches", "full")
    other = _other_branches(branches)
    later = f.get("calibration_pfseg")
    x = "x".join
    lines = [
        f"Anatomy cases (MNI152 template, {f['spacing_mm']} mm, 4 modalities): {f['train_cases']} training "
        f"cases (seed {TRAIN_SEED}) and {f['test_cases']} held-out test cases (seed {TEST_SEED}), the same "
        f"for every method. nnU-Net v2 {f['versions']['nnunetv2']} `3d_fullres` with its defaults (patch "
        f"{x(map(str, nnp['patch_size_zyx']))}, batch {nnp['batch_size']}, features "
        f"{'-'.join(map(str, nnp['features_per_stage']))}, SGD 1e-2, deep supervision) for "
        f"{f['nnunet_iterations']} iterations ({f['nnunet_epochs']} epochs of poly decay). PFSeg and "
        f"ResUNet3D: `--preset {pp['preset']}` (HR {x(map(str, pp['hr_shape_zyx']))}, LR scale "
        f"{x(map(str, pp['lr_scale_zyx']))}, baseline patch {x(map(str, pp['patch_shape_zyx']))}, widths "
        f"{'-'.join(map(str, pp['widths']))}, batch {pp['batch_size']}, {pp['optimizer']} {pp['lr']:g}); "
        + BRANCHES_WORDS[branches] + "." + _without_et_words(f),
        "",
        f"Equal wall-clock: seconds per training iteration measured one after the other (calibration): "
        f"nnU-Net {cal['nnunet']:.2f}, PFSeg {cal['pfseg']:.2f}"
        + (f" ({BRANCH_NAMES[cal.get('pfseg_branches', 'full')]})" if later else "")
        + f", ResUNet3D {cal['resunet3d']:.2f}"
        + (f"; PFSeg's {BRANCH_NAMES[branches]} was calibrated later the same way, against nnU-Net again "
           f"(nnU-Net {later['nnunet']:.2f}, PFSeg {later['pfseg']:.2f}; load average "
           f"{later['load_average_1min'][0]} before, {later['load_average_1min'][-1]} after), so "
           f"{f['pfseg_rate']:.2f} in the first calibration's terms" if later else "")
        + f"; nnU-Net's {f['nnunet_iterations']} iterations = {f['budget_seconds']:.0f} s, in which PFSeg "
        "trains "
        f"{f['planned_iterations']['pfseg']} iterations and ResUNet3D "
        f"{f['planned_iterations']['resunet3d']}. {len(f['run_results'])} training run(s) of each, one after "
        "the other; test-set Dice and HD95 (mm, MedPy's pooled definition), mean over the runs "
        "(lowest-highest run in brackets); final checkpoints, no postprocessing. Load average "
        f"{cal['load_average_1min'][0]} before the calibration, {cal['load_average_1min'][-1]} after it."
        + (f" The steps (data, calibration, each training run, prediction speed) were computed from "
           f"{f['steps_span_utc'][0]} to {f['steps_span_utc'][1]} UTC and kept as JSON (`--keep`); this "
           "section was written from them." if "steps_span_utc" in f else ""),
        "",
        "| method | iterations | training s, calibrated | WT Dice | TC Dice | ET Dice | WT HD95 | TC HD95 "
        "| ET HD95 | prediction s / case |",
        "|---|---:|---:|---|---|---|---|---|---|---:|",
    ]
    by_branches = {cal.get("pfseg_branches", "full"): cal["pfseg"],
                   branches: f.get("pfseg_rate", cal["pfseg"])}
    rates = {"pfseg": by_branches[branches], "pfseg_other": by_branches.get(other, float("nan")),
             "resunet3d": cal["resunet3d"], "resunet3d_iterations": cal["resunet3d"],
             PFSEG_ITERATIONS: cal["resunet3d"], "nnunet": cal["nnunet"], "nnunet_mirroring": cal["nnunet"]}
    rates.update({f"{key}_tta": rates[key] for key in (*(k for k, _, _ in PFSEG_ROWS), PFSEG_ITERATIONS)})
    labels = {**LABELS,
              "pfseg_tta": f"PFSeg ({BRANCH_NAMES[branches]}; whole volume, mirror TTA), equal wall-clock",
              "pfseg": f"PFSeg ({BRANCH_NAMES[branches]}; whole volume, one pass), equal wall-clock",
              "pfseg_other": f"PFSeg ({BRANCH_NAMES[other]}, not the plan's; one pass), equal wall-clock"}
    for key in ROWS:
        if key not in summary:
            continue
        train = first["train"][key]
        iters = train.get("iterations") or (train["epochs"] * train["iterations_per_epoch"])
        cells = [_cell(summary[key][f"{r}_dice"], 3) for r in REGIONS]
        cells += [_cell(summary[key][f"{r}_hd95"], 1) for r in REGIONS]
        speed = f["predict"].get(key, {}).get("seconds_per_case")
        lines.append(f"| {labels[key]} | {iters} | {iters * rates[key]:.0f} | " + " | ".join(cells)
                     + f" | {'-' if speed is None else f'{speed:.2f}'} |")
    tta = "pfseg_tta" in summary and "resunet3d_tta" in summary   # pfseg's default inference mirrors
    if tta:
        lines += ["", _tta_words(f["run_results"])]
    lines += per_run_lines(f["run_results"], tta)
    lines += equal_iterations_lines(f["run_results"], tta)
    if tta:
        lines += ["", "Verdicts (issue 14's acceptance, means over the runs), each method at its default "
                  "inference (PFSeg and ResUNet3D: mirror TTA, the plan's `training.tta` since bench tta; "
                  "nnU-Net: mirroring):", ""]
        lines += [f"- {text}: **{'met' if ok else 'NOT met'}**" for text, ok in verdicts(summary, tta=True)]
        lines += ["", "With one pass for PFSeg and ResUNet3D (pfseg's default inference before bench tta):",
                  ""]
    else:
        lines += ["", "Verdicts (issue 14's acceptance, means over the runs; nnU-Net with its default "
                  "inference):", ""]
    lines += [f"- {text}: **{'met' if ok else 'NOT met'}**" for text, ok in verdicts(summary)]
    lines += ["", _prediction_words(f)]
    return "\n".join(lines) + "\n"


def _tta_words(run_results: list[dict]) -> str:
    """How the TTA rows were made, and whether their models were the kept runs' own."""
    pairs = [(i, key, same) for i, r in enumerate(run_results)
             for key, same in r.get("tta", {}).get("one_pass_matches_kept", {}).items()]

    def differs(i: int, key: str) -> str:
        again = run_results[i]["tta"].get("one_pass_scores", {}).get(key)
        if again is None:
            return f"run {i}'s {key}"
        return (f"run {i}'s {key}, one-pass WT Dice {again['WT']['dice']:.3f} against the kept "
                f"{run_results[i]['scores'][key]['WT']['dice']:.3f}")
    retrained = [f"run {i}'s {key}" for i, r in enumerate(run_results)
                 for key in r.get("tta", {}).get("retrained", [])]
    differ = [differs(i, key) for i, key, same in pairs if not same]
    return ("Mirror TTA rows: each run's PFSeg and ResUNet3D models predicted again, as the mean over the 8 "
            "mirror combinations (pfseg's default inference since bench tta: the plan's `training.tta`); "
            + (f"models no longer on the machine were trained again as their runs were "
               f"({', '.join(retrained)}); " if retrained else "")
            + f"each model's one-pass prediction, made again, reproduces its kept run's scores exactly in "
            f"{len(pairs) - len(differ)} of {len(pairs)} cases"
            + (f" (not: {', '.join(differ)})." if differ else "."))


def _prediction_words(f: dict) -> str:
    predict, pre = f["predict"], f["preprocess_seconds"]
    pf_speed = predict["pfseg"]["seconds_per_case"]
    plain, mirrored = (predict[k]["seconds_per_case"] / pf_speed for k in ("nnunet", "nnunet_mirroring"))
    words = (f"Prediction: PFSeg {pf_speed:.2f} s per case in one pass (median of 3 rounds), {plain:.1f}x "
             f"faster than nnU-Net without mirroring and {mirrored:.1f}x faster than with it")
    if "pfseg_tta" in predict:   # each method's default inference: PFSeg mirrored against nnU-Net mirrored
        tta = predict["pfseg_tta"]["seconds_per_case"]
        ratio = predict["nnunet_mirroring"]["seconds_per_case"] / tta
        words += (f"; with mirror TTA {tta:.2f} s, "
                  + (f"{ratio:.1f}x faster" if ratio >= 1 else f"{1 / ratio:.1f}x slower")
                  + " than nnU-Net with mirroring (each method's default inference)")
    return (words + (f" ({predict['models']} models)" if "models" in predict else "")
            + f". Preprocessing: PFSeg {pre['nnunet'] / pre['pfseg']:.1f}x faster.")


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run (minutes)")
    parser.add_argument("--train", type=int, default=None, dest="n_train",
                        help="training cases (default 16)")
    parser.add_argument("--test", type=int, default=None, dest="n_test",
                        help="held-out test cases (default 8)")
    parser.add_argument("--spacing", type=int, default=4, choices=(1, 2, 4))
    parser.add_argument("--runs", type=int, default=None, help="training runs of each method (default 3)")
    parser.add_argument("--nnunet-iterations", type=int, default=None, help="default 1000")
    parser.add_argument("--nnunet-epochs", type=int, default=None, help="default 40")
    parser.add_argument("--preset", default="demo", choices=("demo", "default"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep", default=None, metavar="DIR", help="work in DIR, keep it, resume from it")
    parser.add_argument("--records", default=None, metavar="DIR",
                        help="keep the steps' JSON in DIR (e.g. bench/records/nnunet_compare) instead of the "
                             "work folder: a study across machines that keep only the repository")
    return parser


def options(argv: list[str]) -> dict:
    """`python -m bench nnunet_compare`'s own options (bench/__main__.py passes the rest of the
    line): with `--keep DIR` the page is written from the steps kept there."""
    return vars(_parser("python -m bench nnunet_compare").parse_args(argv))


def main(argv=None) -> int:
    parser = _parser("python -m bench.nnunet_compare")
    parser.add_argument("--nnunet-only", action="store_true",
                        help="only the data, the calibration and nnU-Net's training runs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    figures = run(**vars(args))
    print(figures.get("markdown", "nnU-Net's runs done"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
