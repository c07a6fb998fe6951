"""pfseg_predict from a model package, and on ONNX Runtime: the same labels as from the folder."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from pfseg_pipeline.cli.common import run
from pfseg_pipeline.cli.predict import main
from pfseg_pipeline.sharing.build import export_model

from .conftest import tiny_plans, write_case, write_model_dir


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A results folder (pfseg, folds 0 and 1, random weights), its pytorch package, two cases
    and their labels predicted from the folder."""
    root = tmp_path_factory.mktemp("packaged")
    model_dir = root / "results" / "Tiny" / "pfseg"
    write_model_dir(model_dir, tiny_plans(), "pfseg", folds=(0, 1))
    for i in range(2):
        write_case(root / "in", f"case_{i}", shape_zyx=(12 + i, 17, 15), seed=i)
    assert predict("-i", root / "in", "-o", root / "from_folder", "--model-dir", model_dir) == 0
    package = export_model(model_dir, root / "tiny.zip").path
    return {"root": root, "dir": model_dir, "zip": package, "reference": labels(root / "from_folder")}


def predict(*args):
    return run(main, [*map(str, args), "--device", "cpu", "--no-progress"])


def labels(folder):
    return {p.name: np.asarray(nib.load(p).dataobj) for p in sorted(folder.glob("*.nii.gz"))}


def test_a_package_predicts_the_folders_labels_bit_for_bit(model, tmp_path):
    out = tmp_path / "from_zip"
    assert predict("-i", model["root"] / "in", "-o", out, "--model-dir", model["zip"]) == 0
    got = labels(out)
    assert got.keys() == model["reference"].keys() and len(got) == 2
    assert all(np.array_equal(got[k], model["reference"][k]) for k in got)
    assert any(np.any(v > 0) for v in got.values())                # the labels are not all background
    timings = json.loads((out / "timings.json").read_text())
    assert timings["folds"] == ["0", "1"] and timings["checkpoint"] == "final"
    assert not list(tmp_path.glob("pfseg-model-*"))                 # the unpacked folder is gone


def test_onnx_runtime_labels_like_pytorch(model, tmp_path):
    pytest.importorskip("onnxruntime")
    for source in (model["dir"], model["zip"]):
        out = tmp_path / f"ort_{source.name}"
        assert predict("-i", model["root"] / "in", "-o", out, "--model-dir", source,
                       "--backend", "onnxruntime", "--save-probabilities") == 0
        got = labels(out)
        alike = sum(int((got[k] == model["reference"][k]).sum()) for k in got)
        total = sum(v.size for v in got.values())
        assert alike / total >= 0.9999, f"{alike} of {total} voxels labelled alike"


def test_an_onnx_package_runs_on_its_graph_backends_only(model, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    package = export_model(model["dir"], tmp_path / "onnx.zip", folds=["0"], fmt="onnx").path
    out = tmp_path / "out"
    assert predict("-i", model["root"] / "in", "-o", out, "--model-dir", package) == 0   # its default
    reference = tmp_path / "reference"
    assert predict("-i", model["root"] / "in", "-o", reference, "--model-dir", model["dir"], "-f", "0") == 0
    got, expected = labels(out), labels(reference)
    assert sum(int((got[k] == expected[k]).sum()) for k in got) / sum(v.size for v in got.values()) >= 0.9999
    capsys.readouterr()
    assert predict("-i", model["root"] / "in", "-o", tmp_path / "x", "--model-dir", package,
                   "--backend", "torch") == 2
    assert "an onnx package runs on --backend onnxruntime or openvino only" in capsys.readouterr().err


def test_what_a_package_refuses(model, tmp_path, capsys):
    package = model["zip"]
    cases = model["root"] / "in"
    for args, words in [
        (["--checkpoint", "best"], "holds checkpoint_final only, not checkpoint_best"),
        (["-f", "7"], "no fold 7 (it holds fold(s) 0, 1)"),
        (["--network", "resunet3d"], "holds network 'pfseg', not 'resunet3d'"),
        (["--backend", "onnxruntime", "--device", "cuda"], "--backend onnxruntime runs on the CPU"),
    ]:
        assert run(main, ["-i", str(cases), "-o", str(tmp_path / "out"), "--model-dir", str(package),
                          "--no-progress", *args]) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0], (args, err)
    assert not (tmp_path / "out").exists()


def test_a_torchscript_package_is_for_other_runtimes(model, tmp_path, capsys):
    package = export_model(model["dir"], tmp_path / "ts.zip", folds=["0"], fmt="torchscript").path
    assert predict("-i", model["root"] / "in", "-o", tmp_path / "out", "--model-dir", package) == 2
    assert "TorchScript is for other runtimes" in capsys.readouterr().err


def test_a_fold_subset_of_a_package(model, tmp_path):
    out, reference = tmp_path / "one", tmp_path / "reference"
    assert predict("-i", model["root"] / "in", "-o", out, "--model-dir", model["zip"], "-f", "1") == 0
    assert predict("-i", model["root"] / "in", "-o", reference, "--model-dir", model["dir"], "-f", "1") == 0
    got, expected = labels(out), labels(reference)
    assert all(np.array_equal(got[k], expected[k]) for k in expected)
