"""The Python API: files and arrays give pfseg_predict's labels; preprocessing cannot be skipped."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from pfseg_pipeline.api import Model, geometry_from_affine, load_model
from pfseg_pipeline.cli.common import run
from pfseg_pipeline.cli.predict import main as predict_main
from pfseg_pipeline.errors import UserError
from pfseg_pipeline.model_package.archive import extract_package
from pfseg_pipeline.sharing.build import export_model
from tests.inference.conftest import tiny_plans, write_case, write_model_dir

# an anisotropic grid that is resampled to the plans' 1 mm, with a spacing float32 cannot hold
SPACING_ZYX = (1.1, 1.0, 0.9)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    model_dir = root / "results" / "Tiny" / "pfseg"
    write_model_dir(model_dir, tiny_plans(), "pfseg", folds=(0, 1))
    files = write_case(root / "in", "case_0", shape_zyx=(13, 17, 15), spacing_zyx=SPACING_ZYX)
    files.pop("seg")
    assert run(predict_main, ["-i", str(root / "in"), "-o", str(root / "pred"), "--model-dir", str(model_dir),
                              "--device", "cpu", "--no-progress"]) == 0
    cli_file = root / "pred" / "case_0.nii.gz"
    return {"root": root, "dir": model_dir, "files": files, "cli_file": cli_file,
            "cli_labels": np.asarray(nib.load(cli_file).dataobj).T,          # (Z, Y, X)
            "model": load_model(model_dir, device="cpu")}


def _arrays(files):
    return ({m: np.asarray(nib.load(p).dataobj).T for m, p in files.items()},   # (Z, Y, X)
            nib.load(files["t1"]).affine)


def test_files_and_arrays_give_pfseg_predicts_labels_bit_for_bit(setup, tmp_path):
    model: Model = setup["model"]
    from_files = model.segment(setup["files"], probabilities=True)
    arrays, affine = _arrays(setup["files"])
    from_arrays = model.segment_arrays(arrays, affine, probabilities=True)
    expected = setup["cli_labels"]
    assert expected.shape == (13, 17, 15) and np.any(expected > 0)
    for result in (from_files, from_arrays):
        assert result.labels.dtype == np.uint8 and np.array_equal(result.labels, expected)
        assert result.regions == ("WT", "TC", "ET") and result.probabilities.shape == (3, 13, 17, 15)
        assert result.probabilities.dtype == np.float32
    np.testing.assert_array_equal(from_arrays.probabilities, from_files.probabilities)
    # what pfseg_predict wrote, and what save writes for files (the input's header) and arrays
    written = nib.load(setup["cli_file"])
    for result, name in ((from_files, "files.nii.gz"), (from_arrays, "arrays.nii.gz")):
        saved = nib.load(result.save(tmp_path / name))
        assert np.array_equal(np.asarray(saved.dataobj), np.asarray(written.dataobj))
        assert np.allclose(saved.affine, written.affine, atol=1e-5)
        assert np.allclose(saved.header.get_zooms(), written.header.get_zooms())
    assert nib.load(tmp_path / "files.nii.gz").header == written.header        # the same header, whole


def test_a_4d_array_and_a_list_in_the_models_order(setup):
    model: Model = setup["model"]
    arrays, affine = _arrays(setup["files"])
    stacked = np.stack([arrays["t1"], arrays["t2"]])
    assert model.modalities == ("t1", "t2")
    for images in (stacked, [arrays["t1"], arrays["t2"]], {"T1w": arrays["t1"], "t2w": arrays["t2"]}):
        assert np.array_equal(model.segment_arrays(images, affine).labels, setup["cli_labels"])
    assert model.segment([setup["files"]["t1"], setup["files"]["t2"]]).probabilities is None


def test_preprocessing_is_always_applied(setup):
    """Another scanner's intensity scale (a * x + b inside the brain) gives the same result:
    the API z-scores each modality in the brain, as pfseg_predict does, whatever it is given."""
    model: Model = setup["model"]
    arrays, affine = _arrays(setup["files"])
    rescaled = {m: np.where(a != 0, 3.0 * a + 250.0, 0.0) for m, a in arrays.items()}
    plain = model.segment_arrays(arrays, affine, probabilities=True)
    other = model.segment_arrays(rescaled, affine, probabilities=True)
    assert np.abs(other.probabilities - plain.probabilities).max() < 1e-4
    assert np.mean(other.labels == plain.labels) > 0.999
    # the predictor alone takes preprocessed images only: handed the scans, it says something else
    def unpreprocessed(images):
        return model.predictor.predict_preprocessed(np.stack(list(images.values())).astype(np.float32))

    assert np.abs(unpreprocessed(rescaled) - unpreprocessed(arrays)).max() > 1e-2


def test_a_package_and_its_folder_load_like_the_results_folder(setup, tmp_path):
    package = export_model(setup["dir"], tmp_path / "tiny.zip").path
    extract_package(package, tmp_path / "unpacked")
    for source in (package, tmp_path / "unpacked"):
        model = load_model(source, device="cpu")
        assert model.network == "pfseg" and model.folds == ["0", "1"] and model.checkpoint == "final"
        assert f"{source}" in repr(model) and "backend torch" in repr(model)
        assert np.array_equal(model.segment(setup["files"]).labels, setup["cli_labels"])


def test_onnx_runtime_from_python(setup):
    pytest.importorskip("onnxruntime")
    model = load_model(setup["dir"], backend="onnxruntime")
    assert model.backend == "onnxruntime" and model.predictor.device.type == "cpu"
    labels = model.segment(setup["files"]).labels
    assert np.mean(labels == setup["cli_labels"]) >= 0.9999


def test_an_onnx_package_runs_on_the_cpu_where_auto_would_pick_cuda(setup, tmp_path, monkeypatch):
    """An onnx package loaded without a backend runs on ONNX Runtime: the predictor stays on the
    CPU with the default device 'auto' on a machine that has a GPU; asking for CUDA is refused."""
    pytest.importorskip("onnxruntime")
    package = export_model(setup["dir"], tmp_path / "onnx.zip", fmt="onnx").path
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)        # a GPU machine, as torch sees it
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    model = load_model(package)
    assert model.backend == "onnxruntime" and model.predictor.device == torch.device("cpu")
    with pytest.raises(UserError, match="--backend onnxruntime runs on the CPU"):
        load_model(package, device="cuda")
    monkeypatch.undo()
    assert np.mean(model.segment(setup["files"]).labels == setup["cli_labels"]) >= 0.9999


@pytest.mark.parametrize("images, words", [
    (lambda a: {"t1": a["t1"]}, "arrays: no t2 (this model takes t1, t2)"),
    (lambda a: {"t1": a["t1"], "t2": a["t2"], "pd": a["t2"]}, "arrays: unknown modality 'pd'"),
    (lambda a: [a["t1"]], "arrays: 1 given, this model takes 2 (t1, t2, in that order)"),
    (lambda a: {"t1": a["t1"], "t2": a["t2"][:-1]}, "need 3D (Z, Y, X) arrays of one shape"),
    (lambda a: {"t1": a["t1"], "t2": np.where(a["t2"] > 0, np.nan, 0)}, "the t2 array holds NaN or Inf"),
    (lambda a: {"t1": np.zeros_like(a["t1"]), "t2": a["t2"]}, "the t1 array is all zero"),
])
def test_bad_arrays_are_one_clear_error(setup, images, words):
    arrays, affine = _arrays(setup["files"])
    with pytest.raises(UserError, match=words.replace("(", r"\(").replace(")", r"\)")):
        setup["model"].segment_arrays(images(arrays), affine)


def test_the_affine_gives_the_geometry_a_nifti_header_would(setup):
    arrays, affine = _arrays(setup["files"])
    geometry = geometry_from_affine((13, 17, 15), affine)
    zooms_xyz = nib.load(setup["files"]["t1"]).header.get_zooms()
    assert geometry.spacing_zyx == tuple(float(z) for z in zooms_xyz[::-1])
    assert geometry.spacing_zyx[0] == float(np.float32(1.1)) != 1.1
    with pytest.raises(UserError, match="affine must be a finite 4x4 matrix"):
        geometry_from_affine((2, 2, 2), np.eye(3))
    with pytest.raises(UserError, match="zero-length axis"):
        geometry_from_affine((2, 2, 2), np.diag([1.0, 0.0, 1.0, 1.0]))
    with pytest.raises(UserError, match="images: no t2"):
        setup["model"].segment({"t1": setup["files"]["t1"]})
