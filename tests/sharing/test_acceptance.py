"""Issue 16's acceptance, end to end: a model trained in the demo's way is exported, the zips alone
are copied to a fresh folder, and there, with no workspace (a fresh empty working directory and
PFSEG_HOME), it predicts the workspace's labels bit for bit through the zip (pfseg_predict
--model-dir) and the Python API, and through ONNX Runtime with at least 99.99 % of the voxels
labelled alike."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from pfseg_pipeline.cli import export_model, make_synthetic, plan_and_preprocess, train
from pfseg_pipeline.cli.common import run

ROOT = Path(__file__).resolve().parents[2]
SHAPE_XYZ = ["32", "32", "24"]     # the demo's synthetic cases, smaller (the demo's are 64 64 48)

# run in the fresh folder: every way of predicting from the copied zips
FRESH_RUNS = textwrap.dedent("""
    import sys
    from pathlib import Path
    from pfseg_pipeline.api import load_model
    from pfseg_pipeline.cli.common import run
    from pfseg_pipeline.cli.predict import main as predict

    models, cases, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    common = ["-i", str(cases), "--device", "cpu", "--no-progress"]
    for name, args in {"zip": ["--model-dir", str(models / "model.zip")],
                       "zip_ort": ["--model-dir", str(models / "model.zip"), "--backend", "onnxruntime"],
                       "onnx_zip": ["--model-dir", str(models / "model_onnx.zip")],
                       "zip_ov": ["--model-dir", str(models / "model.zip"), "--backend", "openvino"],
                       "onnx_zip_ov": ["--model-dir", str(models / "model_onnx.zip"), "--backend", "openvino"]
                       }.items():
        assert run(predict, [*common, "-o", str(out / name), *args]) == 0, name
    for name, backend in (("api", "torch"), ("api_ort", "onnxruntime"), ("api_ov", "openvino")):
        model = load_model(models / "model.zip", device="cpu", backend=backend)
        for case in sorted(p for p in cases.iterdir() if p.is_dir()):
            files = {m: case / f"{case.name}_{m}.nii.gz" for m in model.modalities}
            model.segment(files, case_id=case.name).save(out / name / f"{case.name}.nii.gz")
""")


def _labels(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(nib.load(p).dataobj) for p in sorted(folder.glob("*.nii.gz"))}


def _subprocess(args: list[str], cwd: Path, home: Path) -> None:
    env = {**os.environ, "PFSEG_HOME": str(home), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
def test_a_demo_model_predicts_the_same_labels_from_a_fresh_folder(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    ws, raw, test = tmp_path / "ws", tmp_path / "raw", tmp_path / "test_cases"
    # the demo's steps: synthetic cases, the demo preset, pfseg on fold 0 (a few iterations)
    assert run(make_synthetic.main, [str(raw), "--cases", "5", "--shape", *SHAPE_XYZ, "--seed", "1"]) == 0
    assert run(make_synthetic.main, [str(test), "--cases", "2", "--shape", *SHAPE_XYZ, "--seed", "2",
                                     "--start-index", "901"]) == 0
    for case in test.iterdir():                       # the cases to predict carry no labels
        for label in case.glob("*_seg.nii.gz"):
            label.unlink()
    assert run(plan_and_preprocess.main, ["-i", str(raw), "-d", "Demo", "--preset", "demo", "-np", "1",
                                          "--workspace", str(ws)]) == 0
    assert run(train.main, ["Demo", "0", "--epochs", "1", "--iterations-per-epoch", "3", "--num-workers", "0",
                            "--device", "cpu", "--no-progress", "--workspace", str(ws)]) == 0
    exports = tmp_path / "exports"
    for name, fmt in (("model.zip", "pytorch"), ("model_onnx.zip", "onnx")):
        assert run(export_model.main, ["Demo", "-o", str(exports / name), "--format", fmt,
                                       "--workspace", str(ws)]) == 0

    # the reference: pfseg_predict from the workspace, in a process of its own like the fresh runs
    reference_dir = tmp_path / "reference"
    _subprocess(["-m", "pfseg_pipeline.cli.predict", "-i", str(test), "-o", str(reference_dir), "-d", "Demo",
                 "--workspace", str(ws), "--device", "cpu", "--no-progress"], cwd=tmp_path, home=ws)
    reference = _labels(reference_dir)
    assert len(reference) == 2 and all(v.shape == (32, 32, 24) for v in reference.values())

    # a fresh folder holding only the zips; an empty working directory and an empty PFSEG_HOME
    fresh, cwd, home, out = tmp_path / "fresh", tmp_path / "cwd", tmp_path / "home", tmp_path / "out"
    for folder in (fresh, cwd, home):
        folder.mkdir()
    for name in ("model.zip", "model_onnx.zip"):
        shutil.copy(exports / name, fresh / name)
    script = tmp_path / "fresh_runs.py"
    script.write_text(FRESH_RUNS)
    _subprocess([str(script), str(fresh), str(test), str(out)], cwd=cwd, home=home)
    assert list(cwd.iterdir()) == [] and list(home.iterdir()) == []      # no workspace was made or read

    for name in ("zip", "api"):                       # bit for bit
        got = _labels(out / name)
        assert got.keys() == reference.keys(), name
        assert all(np.array_equal(got[k], reference[k]) for k in got), name
    for name in ("zip_ort", "onnx_zip", "api_ort",    # ONNX Runtime and OpenVINO: at least 99.99 % alike
                 "zip_ov", "onnx_zip_ov", "api_ov"):
        got = _labels(out / name)
        alike = sum(int((got[k] == reference[k]).sum()) for k in reference)
        total = sum(v.size for v in reference.values())
        assert alike / total >= 0.9999, f"{name}: {alike} of {total} voxels labelled alike"
    # the card reports the fold's real validation (the trainer's summary.json)
    with zipfile.ZipFile(fresh / "model.zip") as archive:
        card = json.loads(archive.read("model_card.json"))
    fold = ws / "results" / "Demo" / "pfseg" / "fold_0"
    wt_dice = json.loads((fold / "validation" / "summary.json").read_text())["summary"]["WT"]["dice"]["mean"]
    assert card["folds"][0]["validation"]["regions"]["WT"]["dice_mean"] == wt_dice
