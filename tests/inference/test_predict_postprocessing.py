"""pfseg_predict with the model folder's postprocessing.json: applied and recorded, skipped with
--no-postprocessing, and a malformed file refused in one line before anything is written."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from pfseg_pipeline.cli.common import run
from pfseg_pipeline.cli.predict import main
from pfseg_pipeline.data.labels import BRATS2020
from pfseg_pipeline.fileio import write_json
from pfseg_pipeline.inference.postprocessing import Postprocessing

from .conftest import tiny_plans, write_case, write_model_dir

RULE = Postprocessing(("WT", "TC", "ET"), ("TC",), small_et_threshold_mm3=1e9)   # every ET: necrosis


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A random-weight pfseg folder and two cases (its labels are speckled: many TC components)."""
    root = tmp_path_factory.mktemp("pp")
    write_model_dir(root / "model", tiny_plans(), "pfseg", folds=(0,))
    for i in range(2):
        write_case(root / "in", f"case_{i}", shape_zyx=(12 + i, 17, 15), seed=i)
    return root


@pytest.fixture
def model(inputs, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(inputs / "model", model)
    return model


def predict(inputs, model, out, *extra):
    """One pass (--no-tta): the random network's speckle, which the mean over 8 mirrors smooths away
    (the plan's default, training.tta, would leave too few TC components to test with)."""
    return run(main, ["-i", str(inputs / "in"), "-o", str(out), "--model-dir", str(model), "--device", "cpu",
                      "--no-progress", "--no-tta", *extra])


def labels(path):
    return np.asarray(nib.load(path).dataobj)


def test_predict_applies_the_model_folders_postprocessing_and_records_it(inputs, model, tmp_path, caplog):
    assert predict(inputs, model, tmp_path / "raw") == 0
    assert json.loads((tmp_path / "raw" / "timings.json").read_text())["postprocessing"] == {
        "applied": False, "steps": "none"}
    write_json(model / "postprocessing.json", RULE.to_json())
    assert predict(inputs, model, tmp_path / "pp") == 0
    assert "postprocessing from" in caplog.text and "relabelled as necrosis" in caplog.text
    timings = json.loads((tmp_path / "pp" / "timings.json").read_text())
    assert timings["postprocessing"] == {"applied": True, "steps": RULE.describe()}
    for case in ("case_0", "case_1"):
        raw, done = labels(tmp_path / "raw" / f"{case}.nii.gz"), labels(tmp_path / "pp" / f"{case}.nii.gz")
        assert (raw == 4).any() and ndimage.label(np.isin(raw, (1, 4)), np.ones((3, 3, 3)))[1] > 1
        assert (done == RULE.apply_to_labels(raw, BRATS2020, "regions", (1, 1, 1))).all()
        assert not (done == 4).any()                                          # ET -> necrosis
        assert ndimage.label(np.isin(done, (1, 4)), np.ones((3, 3, 3)))[1] == 1   # one core left
        assert ((done > 0) == (raw > 0)).all()                                # WT untouched
    assert predict(inputs, model, tmp_path / "skip", "--no-postprocessing") == 0
    for case in ("case_0", "case_1"):
        name = f"{case}.nii.gz"
        assert (labels(tmp_path / "skip" / name) == labels(tmp_path / "raw" / name)).all()
    assert json.loads((tmp_path / "skip" / "timings.json").read_text())["postprocessing"]["applied"] is False


@pytest.mark.parametrize("content", ['{"version": 1, "regions": ["WT", "TC", "ET"]', '{"version": 7}',
                                     '{"version": 1, "regions": ["WT"], "keep_largest_component": [], '
                                     '"small_et": {"threshold_mm3": 0}}'])
def test_malformed_postprocessing_json_is_one_line_exit_2(inputs, model, tmp_path, capsys, content):
    (model / "postprocessing.json").write_text(content)
    out = tmp_path / "out"
    assert predict(inputs, model, out) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(model / "postprocessing.json") in err
    assert not out.exists()                                    # nothing written
    assert predict(inputs, model, out, "--no-postprocessing") == 0


def test_a_package_carries_the_postprocessing_to_predict_and_the_api(inputs, model, tmp_path):
    """Exported with the folder's postprocessing.json, a zip gives the folder's postprocessed labels
    through pfseg_predict and through the Python API (which can leave it out, as the CLI can)."""
    from pfseg_pipeline.api import load_model
    from pfseg_pipeline.sharing.build import export_model

    write_json(model / "postprocessing.json", RULE.to_json())
    export_model(model, tmp_path / "model.zip")
    assert predict(inputs, model, tmp_path / "folder") == 0
    assert predict(inputs, tmp_path / "model.zip", tmp_path / "zip") == 0
    with_rule, without = (load_model(tmp_path / "model.zip", device="cpu", postprocessing=applied, tta=False)
                          for applied in (True, False))                      # one pass, as predict() above
    assert with_rule.postprocessing.to_json() == RULE.to_json() and without.postprocessing is None
    for case in ("case_0", "case_1"):
        expected = labels(tmp_path / "folder" / f"{case}.nii.gz")
        assert not (expected == 4).any()                                      # the rule was applied
        assert (labels(tmp_path / "zip" / f"{case}.nii.gz") == expected).all()
        files = {m: inputs / "in" / case / f"{case}_{m}.nii.gz" for m in ("t1", "t2")}
        assert (with_rule.segment(files).labels.T == expected).all()          # (Z,Y,X) vs nibabel's (X,Y,Z)
        assert (without.segment(files).labels == 4).any()
