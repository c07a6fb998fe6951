"""Odd but valid inputs simply work (exit 0) through verify, plan_and_preprocess, predict and
evaluate: spaces and non-ASCII names, extra files, .nii and .nii.gz mixed, scaled int16, LPS
and oblique affines, a case without tumour."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from pfseg_pipeline.cli import evaluate, plan_and_preprocess, predict
from pfseg_pipeline.cli.common import run
from pfseg_pipeline.data.nifti import strip_nifti_suffix

from . import builders as b
from .kinds import ODD, ODD_COMMANDS, case_ids

ROWS = [(odd, command) for odd in ODD for command in ODD_COMMANDS]


def _files(dataset, case, kind):
    return [p for p in (dataset / case).iterdir() if strip_nifti_suffix(p.name) == f"{case}_{kind}"]


@pytest.mark.parametrize("odd,command", ROWS, ids=[f"{o.id}-{c}" for o, c in ROWS])
def test_odd_but_valid_input_works(odd, command, tmp_path, synthetic_raw, model_template, capsys):
    dataset = odd.make(b.copy_tree(synthetic_raw, tmp_path / "raw data"))
    cases = case_ids(dataset)
    assert len(cases) == 3
    ws = tmp_path / "ws"
    if command in ("verify", "plan_and_preprocess"):
        argv = ["-i", str(dataset), "-d", "Odd", "--workspace", str(ws), "-np", "1", "--preset", "demo"]
        if command == "verify":
            argv.append("--verify-only")
        code = run(plan_and_preprocess.main, argv)
        err = capsys.readouterr().err
        assert code == 0 and "Traceback" not in err, err
        if command == "plan_and_preprocess":
            cache = ws / "preprocessed" / "Odd" / "cases"
            assert sorted(p.stem for p in cache.glob("*.npz")) == cases
            listed = json.loads((ws / "preprocessed" / "Odd" / "dataset.json").read_text())
            assert sorted(c["case"] for c in listed["cases"]) == cases
    elif command == "predict":
        out = tmp_path / "prédictions out"
        code = run(predict.main, ["-i", str(dataset), "-o", str(out), "--model-dir", str(model_template),
                                  "--device", "cpu", "--no-progress", "--workers", "1"])
        err = capsys.readouterr().err
        assert code == 0 and "Traceback" not in err, err
        for case in cases:
            written = nib.load(str(out / f"{case}.nii.gz"))
            reference = nib.load(str(_files(dataset, case, "t1")[0]))
            # DESIGN.md, NIfTI output: the geometry of the case's reference image, uint8 labels
            assert written.shape == reference.shape
            assert np.allclose(written.header.get_zooms(), reference.header.get_zooms())
            assert np.allclose(written.header.get_sform(), reference.header.get_sform(), atol=1e-5)
            assert np.allclose(written.header.get_qform(), reference.header.get_qform(), atol=1e-5)
            assert int(written.header["sform_code"]) == int(reference.header["sform_code"])
            assert int(written.header["qform_code"]) == int(reference.header["qform_code"])
            assert written.get_data_dtype() == np.uint8
    else:
        pred = tmp_path / "prédictions"
        pred.mkdir()
        for case in cases:
            label = _files(dataset, case, "seg")[0]
            shutil.copyfile(label, pred / (case + label.name[len(case) + len("_seg"):]))
        code = run(evaluate.main, ["-r", str(dataset), "-p", str(pred), "-np", "1"])
        err = capsys.readouterr().err
        assert code == 0 and "Traceback" not in err, err
        summary = json.loads((pred / "summary.json").read_text())
        assert sorted(c["case"] for c in summary["per_case"]) == cases
        assert not summary["failed"] and not summary["missing"]
        for entry in summary["per_case"]:  # perfect predictions (an empty pair scores 1 too)
            assert all(entry[r]["dice"] == pytest.approx(1.0) for r in ("WT", "TC", "ET"))
