"""summary.json carries nnU-Net's structure beside ours; predictions and references of different label
schemes are refused."""

import ast
import json
import math

import numpy as np
import pytest

from pfseg_pipeline.cli import evaluate as evaluate_cli
from pfseg_pipeline.cli.common import run
from pfseg_pipeline.data.labels import MSD
from pfseg_pipeline.data.nifti import make_reference, write_label_map
from pfseg_pipeline.data.scheme_record import write_scheme_record
from pfseg_pipeline.evaluation.evaluate import evaluate_folder

SHAPE_ZYX = (6, 8, 10)


def _write(seg, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    write_label_map(seg, make_reference(seg.shape, np.eye(4)), path)


def _maps():
    ref = np.zeros(SHAPE_ZYX, np.uint8)
    ref[1:5, 2:6, 2:8] = 2          # edema
    ref[2:4, 3:5, 3:7] = 1          # necrotic core
    ref[2:4, 3:5, 4:6] = 4          # enhancing
    pred = ref.copy()
    pred[2:4, 3:5, 3:4] = 2         # part of the core predicted as edema
    pred[0, 0, 0:3] = 4             # three false enhancing voxels
    return ref, pred


def test_nnunet_structure_beside_ours(tmp_path):
    ref, pred = _maps()
    _write(ref, tmp_path / "ref" / "a.nii.gz")
    _write(pred, tmp_path / "pred" / "a.nii.gz")
    _write(ref, tmp_path / "ref" / "b.nii.gz")
    _write(np.zeros(SHAPE_ZYX, np.uint8), tmp_path / "ref" / "empty.nii.gz")
    _write(np.zeros(SHAPE_ZYX, np.uint8), tmp_path / "pred" / "empty.nii.gz")
    evaluate_folder(tmp_path / "ref", tmp_path / "pred", progress=False)
    summary = json.loads((tmp_path / "pred" / "summary.json").read_text())   # NaN as nnU-Net writes it
    assert {"per_case", "summary", "missing"} <= set(summary)                 # ours stay
    assert summary["region_keys"] == {"WT": "(1, 2, 4)", "TC": "(1, 4)", "ET": "(4,)"}
    # nnU-Net's load_summary_json reads the keys back as the tuples of label values
    assert {k: ast.literal_eval(k) for k in summary["mean"]} == {"(1, 2, 4)": (1, 2, 4), "(1, 4)": (1, 4),
                                                               "(4,)": (4,)}
    entries = {e["reference_file"].split("/")[-1]: e for e in summary["metric_per_case"]}
    a = entries["a.nii.gz"]
    assert a["prediction_file"].endswith("pred/a.nii.gz")
    tc_ref, tc_pred = np.isin(ref, (1, 4)), np.isin(pred, (1, 4))
    tp, fp, fn = (int(np.sum(tc_ref & tc_pred)), int(np.sum(~tc_ref & tc_pred)),
                  int(np.sum(tc_ref & ~tc_pred)))
    assert a["metrics"]["(1, 4)"] == {"Dice": 2 * tp / (2 * tp + fp + fn), "IoU": tp / (tp + fp + fn),
                                      "TP": tp, "FP": fp, "FN": fn, "TN": ref.size - tp - fp - fn,
                                      "n_pred": tp + fp, "n_ref": tp + fn}
    assert (tp, fp, fn) == (12, 3, 4)
    assert entries["b.nii.gz"]["prediction_file"] is None                      # missing: scored empty
    assert entries["b.nii.gz"]["metrics"]["(4,)"]["TP"] == 0
    empty = entries["empty.nii.gz"]["metrics"]["(1, 2, 4)"]
    assert math.isnan(empty["Dice"]) and math.isnan(empty["IoU"])              # nnU-Net: NaN, not 1
    assert summary["per_case"][2]["WT"]["dice"] == 1.0                         # ours: the BraTS convention
    dice_et = [e["metrics"]["(4,)"]["Dice"] for e in summary["metric_per_case"]]
    assert summary["mean"]["(4,)"]["Dice"] == pytest.approx(np.nanmean(dice_et))
    assert summary["foreground_mean"]["Dice"] == pytest.approx(
        np.mean([summary["mean"][k]["Dice"] for k in summary["mean"]]))


def test_predictions_of_another_scheme_are_refused(tmp_path, capsys):
    ref, pred = _maps()
    _write(ref, tmp_path / "ref" / "a.nii.gz")
    _write(pred, tmp_path / "pred" / "a.nii.gz")
    write_scheme_record(tmp_path / "pred", MSD, "regions")
    argv = ["-r", str(tmp_path / "ref"), "-p", str(tmp_path / "pred")]
    assert run(evaluate_cli.main, argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "label_scheme.json: the predictions are in the msd label scheme (WT 1+2+3, TC 2+3, ET 3), the " \
           "references in brats2020 (WT 1+2+4, TC 1+4, ET 4)" in line and "--label-scheme brats2020" in line
    assert not (tmp_path / "pred" / "summary.json").exists()
    # the same maps in the MSD's numbers, references declared msd: scored, TC = 2 + 3
    to_msd = np.array([0, 2, 1, 0, 3], np.uint8)
    _write(to_msd[ref], tmp_path / "ref_msd" / "a.nii.gz")
    _write(to_msd[pred], tmp_path / "pred" / "a.nii.gz")
    assert run(evaluate_cli.main, ["-r", str(tmp_path / "ref_msd"), "-p", str(tmp_path / "pred"),
                                   "--label-scheme", "msd"]) == 0
    summary = json.loads((tmp_path / "pred" / "summary.json").read_text())
    assert summary["region_keys"]["TC"] == "(2, 3)"
    assert summary["metric_per_case"][0]["metrics"]["(2, 3)"]["TP"] == 12
