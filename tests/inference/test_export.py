"""Export in the input's own geometry: headers copied exactly, labels = restored probabilities."""

import gzip

import nibabel as nib
import numpy as np
import pytest

from pfseg_pipeline.cli.common import run
from pfseg_pipeline.cli.predict import main
from pfseg_pipeline.data.layouts import Case
from pfseg_pipeline.fileio import load_npz
from pfseg_pipeline.inference.predictor import Predictor, load_models
from pfseg_pipeline.preprocessing.case import preprocess_case, restore_to_source

from .conftest import MODALITIES, tiny_plans, write_case, write_model_dir

CASES = {  # case id: (shape z y x, spacing z y x, orientation, qform code, sform code)
    "ras_case": ((14, 18, 16), (1.0, 1.0, 1.0), "RAS", 1, 1),
    "lps_case": ((15, 17, 18), (1.0, 1.0, 1.0), "LPS", 1, 2),
    "aniso case": ((9, 20, 13), (2.0, 0.9, 1.3), "LPS", 2, 1),  # non-1 mm, resampled to 1 mm
}


@pytest.fixture(scope="module")
def predicted(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    plans = tiny_plans()
    for i, (case_id, (shape, spacing, orientation, qcode, scode)) in enumerate(CASES.items()):
        write_case(root / "in", case_id, shape, spacing, orientation, seed=i, with_label=i == 0,
                   qform_code=qcode, sform_code=scode)
    write_model_dir(root / "model", plans, "pfseg", folds=(0, 1))
    code = run(main, ["-i", str(root / "in"), "-o", str(root / "out"), "--model-dir", str(root / "model"),
                      "--save-probabilities", "--device", "cpu", "--no-progress"])
    assert code == 0
    return root


@pytest.mark.parametrize("case_id", list(CASES))
def test_output_header_matches_the_input(predicted, case_id):
    ref = nib.load(predicted / "in" / case_id / f"{case_id}_{MODALITIES[0]}.nii.gz")
    out = nib.load(predicted / "out" / f"{case_id}.nii.gz")
    assert out.shape == ref.shape
    assert out.header.get_zooms() == ref.header.get_zooms()
    np.testing.assert_array_equal(out.header.get_sform(), ref.header.get_sform())
    np.testing.assert_array_equal(out.header.get_qform(), ref.header.get_qform())
    assert int(out.header["sform_code"]) == int(ref.header["sform_code"])
    assert int(out.header["qform_code"]) == int(ref.header["qform_code"])
    assert nib.aff2axcodes(out.affine) == nib.aff2axcodes(ref.affine)
    assert out.get_data_dtype() == np.uint8
    with gzip.open(predicted / "out" / f"{case_id}.nii.gz") as f:  # the stored header, not nibabel's
        stored = nib.Nifti1Header.from_fileobj(f)                # view (it hides the scaling)
    assert float(stored["scl_slope"]) == 1.0 and float(stored["scl_inter"]) == 0.0
    assert stored.get_data_dtype() == np.uint8
    assert np.asanyarray(out.dataobj).dtype == np.uint8


@pytest.mark.parametrize("case_id", ["lps_case", "aniso case"])
def test_label_map_is_the_cached_grid_prediction_mapped_back(predicted, case_id):
    folder = predicted / "in" / case_id
    case = Case(case_id, {m: folder / f"{case_id}_{m}.nii.gz" for m in MODALITIES})
    loaded = load_models(predicted / "model")
    image, _, properties = preprocess_case(case, loaded.plans, with_label=False)
    # the predictor pfseg_predict builds: the plan's inference (training.tta: mirror TTA here)
    cached = Predictor.from_loaded(loaded, "cpu").predict_preprocessed(image)
    restored = restore_to_source(cached, properties, order=1)
    assert restored.shape[1:] == tuple(reversed(nib.load(case.images["t1"]).shape))
    wt, tc, et = restored > 0.5
    # BraTS 2020, nested: WT=2, then TC inside WT = 1, then ET inside TC = 4
    expected = np.zeros(restored.shape[1:], np.uint8)
    expected[wt] = 2
    expected[wt & tc] = 1
    expected[wt & tc & et] = 4
    written = np.asarray(nib.load(predicted / "out" / f"{case_id}.nii.gz").dataobj).transpose(2, 1, 0)
    np.testing.assert_array_equal(written, expected)
    assert len(np.unique(expected)) > 1  # a random network still paints something
    saved = load_npz(predicted / "out" / f"{case_id}.npz")
    assert saved["probabilities"].dtype == np.float16
    np.testing.assert_allclose(saved["probabilities"], restored, atol=1e-3)
    assert list(saved["regions"]) == ["WT", "TC", "ET"]
