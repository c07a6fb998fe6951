"""Preprocessing speed: pfseg_plan_and_preprocess vs nnU-Net v2's plan_and_preprocess, side by side.

Both run on the same synthetic BraTS-like cases, in fresh output folders, as separate
processes (so each pays its own interpreter start and imports), with the same process count:

- ours: `pfseg_plan_and_preprocess -i RAW -d NAME -np N` (default preset: verify every file,
  fingerprint, plan with the memory model, preprocess);
- nnU-Net: the dataset converted to its raw format first (Dataset5xx_Name/imagesTr/<case>_000K,
  labelsTr with labels 0..3, dataset.json with regions; the conversion is not timed), then
  `nnUNetv2_plan_and_preprocess -d ID -c 3d_fullres -np N -npfp N --verify_dataset_integrity`
  with nnUNet_raw / nnUNet_preprocessed / nnUNet_results set to temporary folders.

Needs the [bench] extra (nnunetv2 2.6.x). `run(quick=False) -> dict` returns the figures and a
'markdown' table; the module can also be run as a script (`python -m bench.preprocess_speed`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.demo_data import console

# BraTS 2020 label values -> consecutive nnU-Net labels (necrosis 1, edema 2, enhancing 4 -> 3)
BRATS_TO_NNUNET = {0: 0, 1: 1, 2: 2, 4: 3}
NNUNET_LABELS = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [1, 3], "enhancing tumor": [3]}
NNUNET_REGIONS_CLASS_ORDER = [2, 1, 3]
MODALITY_CHANNELS = ("t1", "t1ce", "t2", "flair")


def to_nnunet_raw(brats_root: Path, nnunet_raw: Path, dataset_id: int, name: str) -> Path:
    """Convert a BraTS-layout dataset into nnU-Net v2's raw format; returns the dataset folder."""
    import nibabel as nib

    from pfseg_pipeline.data.layouts import discover

    folder = nnunet_raw / f"Dataset{dataset_id:03d}_{name}"
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
    cases = discover(brats_root, MODALITY_CHANNELS, require_label=True).cases
    lut = np.zeros(256, np.uint8)
    for src, dst in BRATS_TO_NNUNET.items():
        lut[src] = dst
    for case in cases:
        for k, modality in enumerate(MODALITY_CHANNELS):
            shutil.copyfile(case.images[modality], folder / "imagesTr" / f"{case.case_id}_{k:04d}.nii.gz")
        label = nib.load(str(case.label))
        data = lut[np.asarray(label.dataobj).astype(np.uint8)]
        out = nib.Nifti1Image(data, label.affine, label.header)
        out.set_data_dtype(np.uint8)
        nib.save(out, str(folder / "labelsTr" / f"{case.case_id}.nii.gz"))
    dataset = {
        "channel_names": {str(k): m for k, m in enumerate(MODALITY_CHANNELS)},
        "labels": NNUNET_LABELS,
        "regions_class_order": NNUNET_REGIONS_CLASS_ORDER,
        "numTraining": len(cases),
        "file_ending": ".nii.gz",
    }
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=2))
    return folder


def _timed(cmd: list[str], env: dict[str, str], log: Path) -> float:
    t0 = time.perf_counter()
    with open(log, "w") as f:
        result = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
    elapsed = time.perf_counter() - t0
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed with exit code {result.returncode}; see {log}:\n"
                           + log.read_text()[-3000:])
    return elapsed


def run(quick: bool = False, n_cases: int | None = None, shape_xyz: tuple[int, int, int] = (64, 64, 48),
        workers: int = 2, rounds: int | None = None, seed: int = 0,
        keep: str | None = None) -> dict[str, Any]:
    """Time both pipelines on the same data; returns figures and a 'markdown' table.

    quick: 4 cases, one round; otherwise 8 cases and 2 rounds (alternating, fresh folders each).
    """
    import nnunetv2
    import torch

    from pfseg_pipeline.data.synthetic import write_dataset

    n_cases = n_cases or (4 if quick else 8)
    rounds = rounds or (1 if quick else 2)
    root = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="pfseg_bench_pre_"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        raw = root / "raw"
        if raw.exists():
            shutil.rmtree(raw)
        write_dataset(raw, n_cases, shape_xyz, seed=seed)
        nnunet_raw = root / "nnUNet_raw"
        dataset_id = 501
        to_nnunet_raw(raw, nnunet_raw, dataset_id, "PfsegBench")
        ours, theirs, stages = [], [], []
        for r in range(rounds):
            ws = root / f"ws_{r}"
            shutil.rmtree(ws, ignore_errors=True)
            env = {**os.environ, "PFSEG_HOME": str(ws)}
            ours.append(_timed([console("pfseg_plan_and_preprocess"), "-i", str(raw), "-d", "Bench", "-np",
                                str(workers), "--workspace", str(ws)], env, root / f"ours_{r}.log"))
            summary_path = ws / "preprocessed" / "Bench" / "plan_and_preprocess_summary.json"
            summary = json.loads(summary_path.read_text())
            stages.append(summary["seconds"])
            pre = root / f"nnUNet_preprocessed_{r}"
            shutil.rmtree(pre, ignore_errors=True)
            env = {**os.environ, "nnUNet_raw": str(nnunet_raw), "nnUNet_preprocessed": str(pre),
                   "nnUNet_results": str(root / "nnUNet_results")}
            theirs.append(_timed([console("nnUNetv2_plan_and_preprocess"), "-d", str(dataset_id), "-c",
                                  "3d_fullres", "-np", str(workers), "-npfp", str(workers),
                                  "--verify_dataset_integrity"], env, root / f"nnunet_{r}.log"))
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    ours_s, theirs_s = min(ours), min(theirs)
    result = {
        "cases": n_cases, "shape_xyz": list(shape_xyz), "workers": workers, "rounds": rounds,
        "ours_seconds": [round(t, 2) for t in ours], "nnunet_seconds": [round(t, 2) for t in theirs],
        "ours_best_s": round(ours_s, 2), "nnunet_best_s": round(theirs_s, 2),
        "speedup": round(theirs_s / ours_s, 2),
        "ours_cases_per_s": round(n_cases / ours_s, 3), "nnunet_cases_per_s": round(n_cases / theirs_s, 3),
        "ours_stages_s": stages[int(np.argmin(ours))],
        "versions": {"torch": torch.__version__, "nnunetv2": getattr(nnunetv2, "__version__", "2.6.x"),
                     "cpus": os.cpu_count()},
    }
    stage_text = ", ".join(f"{k} {v:.1f} s" for k, v in result["ours_stages_s"].items() if k != "total")
    result["markdown"] = "\n".join([
        f"Preprocessing, {n_cases} synthetic cases of {'x'.join(map(str, shape_xyz))} voxels (x y z), "
        f"4 modalities, -np {workers}, best of {rounds} round(s), {os.cpu_count()} CPU(s):",
        "",
        "| pipeline | seconds | cases / s |",
        "|---|---|---|",
        f"| pfseg_plan_and_preprocess (default preset) | {ours_s:.1f} | {n_cases / ours_s:.2f} |",
        f"| nnUNetv2_plan_and_preprocess -c 3d_fullres --verify_dataset_integrity | {theirs_s:.1f} | "
        f"{n_cases / theirs_s:.2f} |",
        "",
        f"Speed-up: {theirs_s / ours_s:.1f}x. Ours by stage: {stage_text}.",
    ])
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4 cases, one round")
    parser.add_argument("--cases", type=int, default=None)
    parser.add_argument("--shape", type=int, nargs=3, default=(64, 64, 48), metavar=("X", "Y", "Z"))
    parser.add_argument("-np", "--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--keep", default=None, metavar="DIR", help="work in DIR and keep it (logs)")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    result = run(args.quick, args.cases, tuple(args.shape), args.workers, args.rounds, keep=args.keep)
    print(result["markdown"])
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
