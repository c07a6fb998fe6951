"""PFSeg vs nnU-Net v2 `3d_fullres` at an equal training budget, same data, same CPU, one run.

    python -m bench.nnunet_compare [--quick] [--epochs E] [--iterations N] [--cases N] [--test N]

One synthetic BraTS-like dataset (data/synthetic.py), split by sorted case id into training
cases and held-out test cases; both methods see exactly those training cases and predict
exactly those test cases:

- preprocessing (timed, each as its own process, `-np` equal): `pfseg_plan_and_preprocess
  --preset demo` on the training cases; nnU-Net: the same cases converted to its raw format
  (bench/preprocess_speed.py's converter, not timed) and `nnUNetv2_plan_and_preprocess -c
  3d_fullres --verify_dataset_integrity`;
- training (each as its own process): nnU-Net's default trainer with a small budget
  (bench/nnunet_trainer.py: E epochs x N iterations, fold `all`) and `pfseg_train NAME all`
  with the same E x N iterations at nnU-Net's batch size, so both see as many samples; the same
  number of data-loading worker processes;
- prediction (in this process, models loaded before the clock starts, the folder's wall time
  divided by the number of cases): `inference.pipeline.predict_folder` for PFSeg (whole volume,
  one pass) and nnU-Net's `nnUNetPredictor.predict_from_files` (sliding window, step 0.5,
  Gaussian), with and without its default mirroring (8 passes per window);
- evaluation: both with `evaluation.evaluate.evaluate_folder` against the same reference label
  files (nnU-Net's output labels mapped back 3 -> 4): Dice and HD95 (MedPy's pooled definition,
  mm) per region, mean (std) over the test cases.

Peak memory is the peak RSS of each training process (the data-loading worker processes are not
included), as each reports it. Equal budget is stated twice: as equal iterations (the table),
and as equal wall-clock (PFSeg trained again for nnU-Net's training time, when `--equal-time`,
the default of the full run, and it fits). A short training run's score moves with the seed:
both methods are trained `--repeats` times (PFSeg with seeds 12345, 12346, ...; nnU-Net draws
its own), and the WT verdict compares the means over those runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
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
PFSEG_SEED = 12345


def _timed(cmd: list[str], env: dict, logfile: Path) -> float:
    t0 = time.perf_counter()
    with open(logfile, "w") as f:
        proc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}); log {logfile}:\n"
                           + logfile.read_text()[-3000:])
    return time.perf_counter() - t0


def _split_raw(raw_all: Path, out: Path, n_test: int) -> tuple[list[str], list[str]]:
    """Copy the BraTS case folders into out/train and out/test by sorted case id (last n_test: test)."""
    ids = sorted(p.name for p in raw_all.iterdir() if p.is_dir())
    train, test = ids[:-n_test], ids[-n_test:]
    for sub, chosen in (("train", train), ("test", test)):
        for case in chosen:
            shutil.copytree(raw_all / case, out / sub / case)
    return train, test


def _pfseg_train(ws_root: Path, epochs: int, iterations: int, batch: int, workers: int, seed: int,
                 logfile: Path) -> dict:
    from bench.demo_data import console
    from pfseg_pipeline.fileio import read_json
    from pfseg_pipeline.paths import Workspace

    cmd = [console("pfseg_train"), NAME, "all", "--device", "cpu", "--epochs", str(epochs),
           "--iterations-per-epoch", str(iterations), "--batch-size", str(batch),
           "--num-workers", str(workers),
           "--seed", str(seed), "--no-progress", "--workspace", str(ws_root)]
    wall = _timed(cmd, dict(os.environ), logfile)
    fold_dir = Workspace.resolve(ws_root).fold_dir(NAME, "pfseg", "all")
    summary = read_json(fold_dir / "train_summary.json")
    return {"wall_seconds": wall, "seconds_per_iteration": summary["seconds_per_iteration"],
            "train_seconds": summary["seconds_per_iteration"] * epochs * iterations,
            "peak_rss_bytes": (summary.get("peak_memory") or {}).get("peak_rss", {}).get("bytes"),
            "parameters": summary.get("parameters"),
            "parameters_inference": summary.get("parameters_inference"),
            "batch_size": summary.get("batch_size"), "iterations": epochs * iterations,
            "lr": summary.get("lr"),
            "model_dir": str(fold_dir.parent)}


def _nnunet_train(env: dict, epochs: int, iterations: int, stem: Path) -> dict:
    """bench/nnunet_trainer.py in a process of its own; its JSON (stem.json; log: stem.log)."""
    out = stem.with_suffix(".json")
    _timed([sys.executable, "-m", "bench.nnunet_trainer", str(DATASET_ID), "--epochs", str(epochs),
            "--iterations", str(iterations), "--json", str(out)], env, stem.with_suffix(".log"))
    return json.loads(out.read_text())


def _pfseg_again(ws_root: Path, root: Path, tag: str, epochs: int, iterations: int, batch: int,
                 workers: int, seed: int) -> tuple[dict, dict]:
    """PFSeg trained from scratch in place of the previous model (logs pfseg_train_TAG.log), its
    test cases predicted into pred_pfseg_TAG and scored: (training figures, scores)."""
    from pfseg_pipeline.paths import Workspace

    shutil.rmtree(Workspace.resolve(ws_root).fold_dir(NAME, "pfseg", "all").parent, ignore_errors=True)
    train = _pfseg_train(ws_root, epochs, iterations, batch, workers, seed, root / f"pfseg_train_{tag}.log")
    _predict_pfseg(Path(train["model_dir"]), root / "test", root / f"pred_pfseg_{tag}")
    return train, _scores(root / "test", root / f"pred_pfseg_{tag}")


def _predict_pfseg(model_dir: Path, test_dir: Path, out: Path) -> dict:
    import torch

    from pfseg_pipeline.inference.pipeline import predict_folder
    from pfseg_pipeline.inference.predictor import Predictor

    predictor = Predictor.from_model_dir(model_dir, folds=["all"], device="cpu")
    # warm-up (not timed): the CPU kernels' first-call set-up, as nnU-Net gets below
    predict_folder(test_dir, out.with_name(out.name + "_warmup"), predictor=predictor, progress=False,
                   overwrite=True, cases=_cases(test_dir)[:1])
    reports = [predict_folder(test_dir, out, predictor=predictor, progress=False, overwrite=True)
               for _ in range(2)]
    for report in reports:
        if not report.ok:
            raise RuntimeError(f"pfseg prediction: {report.summary()}")
    report = min(reports, key=lambda r: r.wall_seconds)
    n = len(report.timings)
    return {"seconds_per_case": report.wall_seconds / n, "rounds_seconds": [r.wall_seconds for r in reports],
            "cases": n, "torch_threads": torch.get_num_threads(),
            "network_seconds_per_case": float(np.mean([t["network"] for t in report.timings])),
            "forward_passes_per_case": 1}


def _cases(test_dir: Path):
    from pfseg_pipeline.data.layouts import discover

    return discover(test_dir, require_label=False).cases


def _predict_nnunet(model_dir: Path, test_dir: Path, test_ids: list[str], out: Path, mirroring: bool) -> dict:
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from bench.preprocess_speed import MODALITY_CHANNELS

    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=mirroring,
                                perform_everything_on_device=False, device=torch.device("cpu"),
                                verbose=False, verbose_preprocessing=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(model_dir), ("all",), "checkpoint_final.pth")
    inputs = [[str(test_dir / c / f"{c}_{m}.nii.gz") for m in MODALITY_CHANNELS] for c in test_ids]
    out.mkdir(parents=True, exist_ok=True)
    warmup = out.with_name(out.name + "_warmup")
    warmup.mkdir(parents=True, exist_ok=True)
    predictor.predict_from_files(inputs[:1], [str(warmup / test_ids[0])], save_probabilities=False,
                                 overwrite=True, num_processes_preprocessing=1,
                                 num_processes_segmentation_export=1)   # warm-up, not timed
    rounds = []
    for _ in range(2):
        t0 = time.perf_counter()
        predictor.predict_from_files(inputs, [str(out / c) for c in test_ids], save_probabilities=False,
                                     overwrite=True, num_processes_preprocessing=1,
                                     num_processes_segmentation_export=1)
        rounds.append(time.perf_counter() - t0)
    return {"seconds_per_case": min(rounds) / len(test_ids), "rounds_seconds": rounds,
            "cases": len(test_ids), "mirroring": mirroring,
            "torch_threads": torch.get_num_threads()}


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
        data = lut[np.asarray(img.dataobj).astype(np.uint8)]
        out = nib.Nifti1Image(data, img.affine, img.header)
        out.set_data_dtype(np.uint8)
        nib.save(out, str(dst / path.name))


def _scores(test_dir: Path, pred_dir: Path) -> dict:
    from pfseg_pipeline.evaluation.evaluate import evaluate_folder

    result = evaluate_folder(test_dir, pred_dir, target="regions", progress=False, write=False)
    if result.get("missing") or result.get("failed"):
        raise RuntimeError(f"evaluation of {pred_dir}: missing {result.get('missing')}, "
                           f"failed {result.get('failed')}")
    return {r: {m: result["summary"][r][m] for m in ("dice", "hd95")} for r in REGIONS}


def run(quick: bool = False, n_cases: int | None = None, n_test: int | None = None, shape_xyz=None,
        epochs: int | None = None, iterations: int | None = None, workers: int = 2, seed: int = 0,
        equal_time: bool | None = None, keep: str | None = None, preset: str = "demo",
        repeats: int | None = None) -> dict:
    import nnunetv2
    import torch

    from bench.demo_data import console
    from bench.preprocess_speed import to_nnunet_raw
    from pfseg_pipeline.data.synthetic import write_dataset

    n_cases = n_cases or (6 if quick else 16)
    n_test = n_test or (2 if quick else 4)
    shape_xyz = tuple(shape_xyz or ((48, 48, 32) if quick else (64, 64, 48)))
    epochs = epochs or (2 if quick else 10)
    iterations = iterations or (2 if quick else 10)
    equal_time = (not quick) if equal_time is None else equal_time
    repeats = repeats or (1 if quick else 3)
    root = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="pfseg-nnunet-"))
    root.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    f: dict = {"title": "PFSeg vs nnU-Net v2 3d_fullres at an equal training budget (CPU)",
               "cases": n_cases, "test_cases": n_test, "shape_xyz": list(shape_xyz), "epochs": epochs,
               "iterations_per_epoch": iterations, "workers": workers, "cpus": os.cpu_count(),
               "repeats": repeats,
               "versions": {"torch": torch.__version__,
                            "nnunetv2": getattr(nnunetv2, "__version__", "2.6.x")}}
    try:
        write_dataset(root / "raw_all", n_cases, shape_xyz, seed=seed, workers=workers, overwrite=True)
        train_ids, test_ids = _split_raw(root / "raw_all", root, n_test)
        f.update(train_ids=train_ids, test_ids=test_ids)
        nn_env = {**os.environ, "nnUNet_raw": str(root / "nnUNet_raw"),
                  "nnUNet_preprocessed": str(root / "nnUNet_preprocessed"),
                  "nnUNet_results": str(root / "nnUNet_results"), "nnUNet_n_proc_DA": str(workers),
                  "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        # ---- preprocessing
        log.info("preprocessing: pfseg_plan_and_preprocess --preset %s", preset)
        ws_root = root / "ws"
        pre_ours = _timed([console("pfseg_plan_and_preprocess"), "-i", str(root / "train"), "-d", NAME,
                           "--preset", preset, "-np", str(workers), "--workspace", str(ws_root)],
                          dict(os.environ), root / "pfseg_preprocess.log")
        to_nnunet_raw(root / "train", root / "nnUNet_raw", DATASET_ID, NNUNET_NAME)
        log.info("preprocessing: nnUNetv2_plan_and_preprocess -c 3d_fullres")
        pre_nn = _timed([console("nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c", "3d_fullres",
                         "-np", str(workers), "-npfp", str(workers), "--verify_dataset_integrity"],
                        nn_env, root / "nnunet_preprocess.log")
        from pfseg_pipeline.paths import Workspace
        from pfseg_pipeline.plans import load_plans

        ours = load_plans(Workspace.resolve(ws_root).plans_file(NAME))
        f["pfseg_plan"] = {"preset": preset, "hr_shape_zyx": ours.hr_shape_zyx, "widths": ours.network.widths,
                           "planned_batch_size": ours.batch_size}
        nn_plans = json.loads((root / "nnUNet_preprocessed" / f"Dataset{DATASET_ID:03d}_{NNUNET_NAME}"
                               / "nnUNetPlans.json").read_text())
        nn_config = nn_plans["configurations"]["3d_fullres"]
        batch = int(nn_config["batch_size"])
        f["preprocess_seconds"] = {"pfseg": pre_ours, "nnunet": pre_nn}
        f["nnunet_plan"] = {"patch_size_zyx": nn_config["patch_size"], "batch_size": batch,
                            "spacing_zyx": nn_config["spacing"]}
        # ---- training
        log.info("training nnU-Net: %d epochs x %d iterations, batch %d", epochs, iterations, batch)
        nn_train = _nnunet_train(nn_env, epochs, iterations, root / "nnunet_train")
        log.info("training PFSeg: %d epochs x %d iterations, batch %d", epochs, iterations, batch)
        pf_train = _pfseg_train(ws_root, epochs, iterations, batch, workers, PFSEG_SEED,
                                root / "pfseg_train.log")
        f["train"] = {"pfseg": pf_train, "nnunet": nn_train}
        # ---- prediction and evaluation
        log.info("predicting %d test case(s)", len(test_ids))
        pred = {"pfseg": _predict_pfseg(Path(pf_train["model_dir"]), root / "test", root / "pred_pfseg")}
        for mirroring in (False, True):
            key = "nnunet_mirroring" if mirroring else "nnunet"
            pred[key] = _predict_nnunet(Path(nn_train["model_dir"]), root / "test", test_ids,
                                        root / f"pred_{key}_raw", mirroring)
            _nnunet_to_brats(root / f"pred_{key}_raw", root / f"pred_{key}")
        f["predict"] = pred
        f["scores"] = {k: _scores(root / "test", root / f"pred_{k}") for k in pred}
        # ---- more training runs of both (PFSeg: other seeds; nnU-Net: it draws its own), scored alike
        f["runs"] = [{"seed": PFSEG_SEED, "pfseg": f["scores"]["pfseg"], "nnunet": f["scores"]["nnunet"]}]
        for r in range(1, repeats):
            seed = PFSEG_SEED + r
            log.info("run %d of %d: training both again (PFSeg seed %d)", r + 1, repeats, seed)
            nn_r = _nnunet_train({**nn_env, "nnUNet_results": str(root / f"nnUNet_results_{r}")}, epochs,
                                 iterations, root / f"nnunet_train_{r}")
            _predict_nnunet(Path(nn_r["model_dir"]), root / "test", test_ids, root / f"pred_nnunet_{r}_raw",
                            mirroring=False)
            _nnunet_to_brats(root / f"pred_nnunet_{r}_raw", root / f"pred_nnunet_{r}")
            _, pf_scores = _pfseg_again(ws_root, root, f"{r}", epochs, iterations, batch, workers, seed)
            f["runs"].append({"seed": seed, "pfseg": pf_scores,
                              "nnunet": _scores(root / "test", root / f"pred_nnunet_{r}")})
        # ---- equal wall-clock: PFSeg again, for as long as nnU-Net trained
        f["equal_time"] = None
        nn_seconds = nn_train["seconds_per_iteration"] * epochs * iterations
        matched = max(1, round(nn_seconds / pf_train["seconds_per_iteration"]))
        f["equal_time_iterations"] = matched
        if equal_time and matched > epochs * iterations:
            e2 = max(epochs, round(matched / iterations))
            log.info("training PFSeg for nnU-Net's training time: %d epochs x %d iterations", e2, iterations)
            pf2, pf2_scores = _pfseg_again(ws_root, root, "equal_time", e2, iterations, batch, workers,
                                           PFSEG_SEED)
            f["equal_time"] = {"train": pf2, "scores": pf2_scores}
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    f["load_average_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    f["markdown"] = _markdown(f)
    return f


def _ms(d: dict) -> str:
    return f"{d['mean']:.3f} ({d['std']:.3f})"


def _gib(n) -> str:
    return "-" if n is None else f"{n / 2**30:.2f}"


def _markdown(f: dict) -> str:
    tr, pr, sc, pre = f["train"], f["predict"], f["scores"], f["preprocess_seconds"]
    nnp, pp = f["nnunet_plan"], f["pfseg_plan"]
    x = "x".join
    iters = f["epochs"] * f["iterations_per_epoch"]
    lines = [
        f"{f['cases']} synthetic cases of {' x '.join(map(str, f['shape_xyz']))} voxels (x y z), 4 "
        "modalities; "
        f"{f['cases'] - f['test_cases']} training cases and {f['test_cases']} held-out test cases (by sorted "
        f"id), the same for both. Training: {f['epochs']} epochs x {f['iterations_per_epoch']} iterations "
        "each "
        f"at batch {nnp['batch_size']} (nnU-Net's), {f['workers']} data-loading processes each, fp32 on "
        f"{f['cpus']} CPU(s). nnU-Net v2 {f['versions']['nnunetv2']} `3d_fullres` with its defaults (patch "
        f"{x(map(str, nnp['patch_size_zyx']))}, SGD 1e-2, deep supervision); PFSeg `--preset {pp['preset']}` "
        f"(HR {x(map(str, pp['hr_shape_zyx']))}, widths {'-'.join(map(str, pp['widths']))}, Adam "
        f"{tr['pfseg']['lr']:g}): "
        "compare the parameter counts. Dice and HD95 (mm, MedPy's pooled definition) per region, mean (std) "
        "over the test cases, both scored by `evaluate_folder` against the same reference files; final "
        "checkpoints. Prediction: the folder's wall time per case, in this process, after one warm-up case, "
        f"the better of two rounds. Load average {f['load_average_1min'][0]} before the run, "
        f"{f['load_average_1min'][1]} after (other work on this machine slows both alike).",
        "",
        "| method | WT Dice | TC Dice | ET Dice | WT HD95 | TC HD95 | ET HD95 | preprocessing s "
        "| training s / iteration | prediction s / case | peak RSS of training GiB | parameters |",
        "|---|---|---|---|---|---|---|---:|---:|---:|---:|---:|",
    ]

    def row(label, train, key, pre_s):
        s = sc[key]
        cells = [_ms(s[r]["dice"]) for r in REGIONS] + [_ms(s[r]["hd95"]) for r in REGIONS]
        cells += [f"{pre_s:.1f}", f"{train['seconds_per_iteration']:.2f}",
                  f"{pr[key]['seconds_per_case']:.2f}",
                  _gib(train.get("peak_rss_bytes")), f"{(train.get('parameters') or 0) / 1e6:.2f} M"]
        return f"| {label} | " + " | ".join(cells) + " |"

    lines.append(row("PFSeg (whole volume, one pass)", tr["pfseg"], "pfseg", pre["pfseg"]))
    lines.append(row("nnU-Net, 1 fold, no mirroring", tr["nnunet"], "nnunet", pre["nnunet"]))
    lines.append(row("nnU-Net, 1 fold, mirroring (default)", tr["nnunet"], "nnunet_mirroring", pre["nnunet"]))
    speed = pr["nnunet"]["seconds_per_case"] / pr["pfseg"]["seconds_per_case"]
    speed_m = pr["nnunet_mirroring"]["seconds_per_case"] / pr["pfseg"]["seconds_per_case"]
    runs = f["runs"]
    mean = {k: {r: float(np.mean([run[k][r]["dice"]["mean"] for run in runs])) for r in REGIONS}
            for k in ("pfseg", "nnunet")}
    per_run = [run["pfseg"]["WT"]["dice"]["mean"] - run["nnunet"]["WT"]["dice"]["mean"] for run in runs]
    dwt = mean["pfseg"]["WT"] - mean["nnunet"]["WT"]
    header = " | ".join(f"{who} {r}" for r in REGIONS for who in ("PFSeg", "nnU-Net"))
    lines += ["", f"Training runs ({len(runs)}): both trained and scored again, PFSeg with another seed each "
              "time, nnU-Net drawing its own; test-set mean Dice per run (the table above is run 1).", "",
              f"| run | PFSeg seed | {header} | WT difference |",
              "|---|---:|" + "---:|" * (2 * len(REGIONS) + 1)]
    for i, (run, diff) in enumerate(zip(runs, per_run), 1):
        cells = [f"{run[who][r]['dice']['mean']:.3f}" for r in REGIONS for who in ("pfseg", "nnunet")]
        lines.append(f"| {i} | {run['seed']} | " + " | ".join(cells) + f" | {diff:+.3f} |")
    cells = [f"**{mean[who][r]:.3f}**" for r in REGIONS for who in ("pfseg", "nnunet")]
    lines.append("| mean | | " + " | ".join(cells) + f" | **{dwt:+.3f}** |")
    lines += ["",
              f"Prediction: PFSeg is {speed:.1f}x faster than nnU-Net without mirroring and {speed_m:.1f}x "
              "faster than with it (target: at least 5x without mirroring: "
              f"{'met' if speed >= 5 else 'NOT met'}"
              f"). WT Dice PFSeg - nnU-Net (no mirroring), mean of {len(runs)} run(s) = {dwt:+.3f} at "
              f"equal iterations (target: within 0.02: {'met' if dwt >= -0.02 else 'NOT met'}). "
              "Preprocessing: PFSeg "
              f"{pre['nnunet'] / pre['pfseg']:.1f}x faster. Training seconds per iteration leave out the "
              "first epoch (warm-up) for both."]
    nn_time = tr["nnunet"]["seconds_per_iteration"] * iters
    pf_time = tr["pfseg"]["seconds_per_iteration"] * iters
    eq = f.get("equal_time")
    text = (f"Equal wall-clock: nnU-Net's {iters} iterations took {nn_time:.0f} s of training, PFSeg's "
            f"{pf_time:.0f} s; in nnU-Net's training time PFSeg runs about {f['equal_time_iterations']} "
            "iterations.")
    if eq:
        s = eq["scores"]
        text += (f" Trained that long ({eq['train']['iterations']} iterations, "
                 f"{eq['train']['train_seconds']:.0f} s), PFSeg scores Dice WT {_ms(s['WT']['dice'])}, "
                 f"TC {_ms(s['TC']['dice'])}, ET {_ms(s['ET']['dice'])}; WT HD95 {_ms(s['WT']['hd95'])} mm.")
    elif f["equal_time_iterations"] <= iters:
        text += (" PFSeg is not the faster trainer here: the equal-iteration rows already give it no more "
                 "time.")
    else:
        text += " (Not trained in this run: --no-equal-time.)"
    lines += ["", text]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.nnunet_compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run (a few minutes)")
    parser.add_argument("--cases", type=int, default=None)
    parser.add_argument("--test", type=int, default=None, help="held-out test cases")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--iterations", type=int, default=None, help="iterations per epoch")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--equal-time", action=argparse.BooleanOptionalAction, default=None,
                        help="also train PFSeg for nnU-Net's training time (default: on, off with --quick)")
    parser.add_argument("--preset", default="demo", choices=("demo", "default"),
                        help="PFSeg's plan (default: demo, narrow widths, so the CPU run fits in minutes)")
    parser.add_argument("--repeats", type=int, default=None, metavar="R",
                        help="train both R times and compare the means (default: 3, 1 with --quick)")
    parser.add_argument("--keep", default=None, metavar="DIR", help="work in DIR and keep it")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    figures = run(quick=args.quick, n_cases=args.cases, n_test=args.test, epochs=args.epochs,
                  iterations=args.iterations, workers=args.workers, equal_time=args.equal_time,
                  keep=args.keep, preset=args.preset, repeats=args.repeats)
    print(json.dumps({k: v for k, v in figures.items() if k != "markdown"}, indent=1, default=str))
    print(figures["markdown"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
