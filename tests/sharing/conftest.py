"""A workspace with a tiny trained-looking pfseg (random weights) and the files training leaves."""

from __future__ import annotations

from pathlib import Path

import pytest

from pfseg_pipeline.fileio import write_json
from tests.inference.conftest import tiny_plans, write_case, write_model_dir

NAME = "Tiny"
SUMMARY = {"per_case": [], "missing": [], "checkpoint": "final", "cases_from": "validation", "split": "folds",
           "summary": {r: {"dice": {"mean": d, "std": 0.05, "median": d, "n": 2},
                           "hd95": {"mean": 3.5, "std": 1.0, "median": 3.5, "n": 2}}
                       for r, d in (("WT", 0.8125), ("TC", 0.75), ("ET", 0.625))}}
TRAIN_SUMMARY = {"dataset": NAME, "split": "folds", "fold": "0", "network": "pfseg", "train_cases": 8,
                 "val_cases": 2, "epochs": 50, "final_epoch": 49, "best_epoch": 31,
                 "compute": {"torch": "2.13.0+cpu", "device": "cpu", "cpu": "AMD EPYC",
                             "cpu_capability": "AVX2"}}
FINGERPRINT = {"version": 1, "modalities": ["t1", "t2"], "label_scheme": {"name": "brats2020"},
               "cases": [{"case": "case_0", "shape_zyx": [12, 17, 15]}],
               "dataset": {"n_cases": 10, "n_labelled": 10, "median_shape_zyx": [12.0, 17.0, 15.0],
                           "median_spacing_zyx": [1.0, 1.0, 1.0],
                           "spacing_zyx": {"p0": [1.0, 1.0, 1.0], "p100": [1.0, 1.0, 1.0]},
                           "brain_box_mm_zyx": {"p50": [10.0, 14.0, 12.0]}, "orientations": {"LPS": 10}}}


def make_workspace(root: Path, network: str = "pfseg", variant: str | None = None, folds=(0, 1),
                   checkpoint: str = "final", seed: int = 0) -> Path:
    """`root` as a workspace: results/Tiny/NETWORK[__VARIANT] with random-weight folds, the
    workspace's dataset.json (raw folder and case list included), fingerprint, train and
    validation summaries of fold 0."""
    model_dir = root / "results" / NAME / (f"{network}__{variant}" if variant else network)
    plans = tiny_plans()
    write_model_dir(model_dir, plans, network, folds=folds, seed=seed, checkpoint=checkpoint)
    write_json(model_dir / "dataset.json", {
        "name": NAME, "raw_root": str(root / "raw"), "layout": "brats", "modalities": plans.modalities,
        "label_scheme": plans.label_scheme, "target": plans.target, "n_cases": 1,
        "cases": [{"case": "case_0", "images": {"t1": str(root / "raw" / "case_0_t1.nii.gz")},
                   "label": None}]})
    write_json(root / "preprocessed" / NAME / "fingerprint.json", FINGERPRINT)
    write_json(model_dir / f"fold_{folds[0]}" / "train_summary.json", TRAIN_SUMMARY)
    write_json(model_dir / f"fold_{folds[0]}" / "validation" / "summary.json", SUMMARY)
    return model_dir


@pytest.fixture
def workspace_with_model(tmp_path) -> tuple[Path, Path]:
    """(workspace root, results/Tiny/pfseg)."""
    root = tmp_path / "ws"
    return root, make_workspace(root)


@pytest.fixture(scope="session")
def cases_in(tmp_path_factory) -> Path:
    """Two cases to predict (BraTS layout, t1 + t2), 12-13 x 17 x 15 voxels (z y x)."""
    root = tmp_path_factory.mktemp("cases_in")
    for i in range(2):
        write_case(root, f"case_{i}", shape_zyx=(12 + i, 17, 15), seed=i)
    return root
