"""pfseg_predict's inputs beyond a folder of cases: one case's folder, its files, one 4D file, .mha and
.nrrd; each prediction must equal the one of the same case given in the BraTS layout, on the input's grid."""

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from pfseg_pipeline.cli.common import run
from pfseg_pipeline.cli.predict import main

from .conftest import tiny_plans, write_case, write_model_dir

CASE = "case_0"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A random-weight pfseg model (t1, t2) and one LPS case; its prediction from the BraTS layout."""
    root = tmp_path_factory.mktemp("inputs")
    write_model_dir(root / "model", tiny_plans(), "pfseg", folds=(0,))
    paths = write_case(root / "brats", CASE, shape_zyx=(13, 17, 15), seed=3)
    reference = root / "reference_prediction"
    assert predict("-i", root / "brats", "-o", reference, "--model-dir", root / "model") == 0
    seg = labels(reference / f"{CASE}.nii.gz")
    assert 0 < np.count_nonzero(seg) < seg.size   # a prediction with something to compare
    return root, paths, seg


def predict(*args):
    return run(main, [*map(str, args), "--device", "cpu", "--no-progress"])


def labels(path):
    return np.asarray(nib.load(path).dataobj)


def _same_grid_as(out, source):
    a, b = nib.load(out), nib.load(source)
    assert a.shape == b.shape and np.allclose(a.affine, b.affine)


def test_one_case_folder_with_files_named_by_modality(setup, tmp_path):
    root, paths, expected = setup
    folder = tmp_path / "Patient 7"
    folder.mkdir()
    for modality in ("t1", "t2"):
        shutil.copy(paths[modality], folder / f"{modality.upper()}.nii.gz")
    out = tmp_path / "out"
    assert predict("-i", folder, "-o", out, "--model-dir", root / "model") == 0
    assert np.array_equal(labels(out / "Patient 7.nii.gz"), expected)
    _same_grid_as(out / "Patient 7.nii.gz", paths["t1"])


def test_the_files_of_one_case(setup, tmp_path):
    root, paths, expected = setup
    out = tmp_path / "out"
    assert predict("-i", paths["t2"], paths["t1"], "-o", out, "--model-dir", root / "model") == 0
    assert np.array_equal(labels(out / f"{CASE}.nii.gz"), expected)
    # files whose names say nothing, in the order --channels gives
    plain = tmp_path / "plain"
    plain.mkdir()
    shutil.copy(paths["t2"], plain / "a.nii.gz")
    shutil.copy(paths["t1"], plain / "b.nii.gz")
    out2 = tmp_path / "out2"
    assert predict("-i", plain / "a.nii.gz", plain / "b.nii.gz", "--channels", "T2w", "T1w", "-o", out2,
                   "--model-dir", root / "model") == 0
    assert np.array_equal(labels(out2 / "plain.nii.gz"), expected)


def test_one_4d_file_in_the_channel_order_given(setup, tmp_path):
    root, paths, expected = setup
    t1, t2 = (nib.load(paths[m]) for m in ("t1", "t2"))
    stacked = np.stack([np.asarray(t2.dataobj), np.asarray(t1.dataobj)], axis=-1)   # t2 first
    image = nib.Nifti1Image(stacked, t1.affine, t1.header.copy())
    image.header.set_data_dtype(np.int16)
    nib.save(image, tmp_path / "P9.nii.gz")
    out = tmp_path / "out"
    assert predict("-i", tmp_path / "P9.nii.gz", "--channels", "t2", "t1", "-o", out,
                   "--model-dir", root / "model") == 0
    assert np.array_equal(labels(out / "P9.nii.gz"), expected)
    _same_grid_as(out / "P9.nii.gz", paths["t1"])
    # without --channels the model's own order (t1, t2 for 3D training files) is taken: another answer
    assert predict("-i", tmp_path / "P9.nii.gz", "-o", tmp_path / "default",
                   "--model-dir", root / "model") == 0
    assert not np.array_equal(labels(tmp_path / "default" / "P9.nii.gz"), expected)


@pytest.mark.parametrize("suffix", [".mha", ".nrrd"])
def test_mha_and_nrrd_inputs_give_the_same_labels_in_their_own_format(setup, tmp_path, suffix):
    root, paths, expected = setup
    folder = tmp_path / "in" / CASE
    folder.mkdir(parents=True)
    for modality in ("t1", "t2"):
        sitk.WriteImage(sitk.ReadImage(str(paths[modality])), str(folder / f"{CASE}_{modality}{suffix}"))
    out = tmp_path / "out"
    assert predict("-i", tmp_path / "in", "-o", out, "--model-dir", root / "model") == 0
    written, source = sitk.ReadImage(str(out / f"{CASE}{suffix}")), sitk.ReadImage(str(paths["t1"]))
    assert np.array_equal(sitk.GetArrayFromImage(written), expected.transpose(2, 1, 0))   # (z, y, x)
    np.testing.assert_allclose(written.GetOrigin(), source.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(written.GetDirection(), source.GetDirection(), atol=1e-6)
    np.testing.assert_allclose(written.GetSpacing(), source.GetSpacing(), atol=1e-6)
    # --output-format: a NIfTI on the same grid as the NIfTI the scans came from
    assert predict("-i", tmp_path / "in", "-o", tmp_path / "nii", "--output-format", "nii.gz",
                   "--model-dir", root / "model") == 0
    assert np.array_equal(labels(tmp_path / "nii" / f"{CASE}.nii.gz"), expected)
    _same_grid_as(tmp_path / "nii" / f"{CASE}.nii.gz", paths["t1"])


def test_every_prediction_folder_records_its_label_scheme(setup, tmp_path):
    root, paths, _ = setup
    out = tmp_path / "out"
    assert predict("-i", paths["t1"], paths["t2"], "-o", out, "--model-dir", root / "model",
                   "--label-scheme", "msd") == 0
    record = json.loads((out / "label_scheme.json").read_text())
    assert record["label_scheme"]["name"] == "msd" and record["target"] == "regions"
    assert set(np.unique(labels(out / f"{CASE}.nii.gz"))) <= {0, 1, 2, 3}
    # a second run into the folder with another scheme would mix the two: refused
    assert predict("-i", paths["t1"], paths["t2"], "-o", out, "--model-dir", root / "model") == 2


@pytest.mark.parametrize("args, message", [
    (lambda p, t: [p["t1"]], "one 3D image, but the model reads 2 modalities"),
    (lambda p, t: [p["t1"], t / "other_t2.nii.gz"], "the files name different cases"),
    (lambda p, t: [p["t1"], t / "x.nii.gz"], "cannot tell which modality this file is"),
    (lambda p, t: [p["t1"], p["t2"], "--channels", "t1"], "--channels names 1 modalities for 2 files"),
])
def test_inputs_that_cannot_be_a_case_are_one_line(setup, tmp_path, capsys, args, message):
    root, paths, _ = setup
    shutil.copy(paths["t2"], tmp_path / "other_t2.nii.gz")
    shutil.copy(paths["t2"], tmp_path / "x.nii.gz")
    out = tmp_path / "out"
    assert predict("-i", *args(paths, tmp_path), "-o", out, "--model-dir", root / "model") == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and message in error[0]
    assert not out.exists()
