import json
import math

import numpy as np
import pandas as pd
import pytest

from pfseg_pipeline.cli import evaluate as evaluate_cli
from pfseg_pipeline.cli.common import run
from pfseg_pipeline.data.nifti import make_reference, write_label_map
from pfseg_pipeline.evaluation.evaluate import evaluate_folder, find_references

SHAPE_ZYX = (10, 12, 14)
SPACING_ZYX = (2.0, 1.0, 0.5)
AFFINE = np.diag([SPACING_ZYX[2], SPACING_ZYX[1], SPACING_ZYX[0], 1.0])  # i, j, k = x, y, z


def _seg(offset: int = 0) -> np.ndarray:
    seg = np.zeros(SHAPE_ZYX, np.uint8)
    seg[3:7, 3 + offset:9 + offset, 3:11] = 2
    seg[4:6, 4 + offset:8 + offset, 5:9] = 1
    seg[4:6, 5 + offset:7 + offset, 6:8] = 4
    return seg


def _write(seg: np.ndarray, path, affine=AFFINE):
    path.parent.mkdir(parents=True, exist_ok=True)
    write_label_map(seg, make_reference(seg.shape, affine), path)


@pytest.fixture
def brats_refs(tmp_path):
    ref = tmp_path / "ref"
    for case in ("case_a", "case_b", "case c"):
        _write(_seg(), ref / case / f"{case}_seg.nii.gz")
        _write(np.zeros(SHAPE_ZYX, np.uint8), ref / case / f"{case}_t1.nii.gz")  # an image: not a label
    return ref


def test_missing_prediction_is_scored_empty_and_listed(brats_refs, tmp_path):
    pred = tmp_path / "pred"
    _write(_seg(), pred / "case_a.nii.gz")
    _write(_seg(offset=1), pred / "case c.nii.gz")
    _write(_seg(), pred / "stray.nii.gz")                       # no reference: ignored
    result = evaluate_folder(brats_refs, pred, progress=False)
    assert result["missing"] == ["case_b"]
    assert result["ignored_predictions"] == ["stray"]
    assert result["failed"] == []
    by_case = {c["case"]: c for c in result["per_case"]}
    assert list(by_case) == ["case c", "case_a", "case_b"]
    assert by_case["case_a"]["WT"]["dice"] == 1.0 and by_case["case_a"]["ET"]["hd95"] == 0.0
    diagonal = math.sqrt((10 * 2.0) ** 2 + 12 ** 2 + (14 * 0.5) ** 2)
    for region in ("WT", "TC", "ET"):
        assert by_case["case_b"][region]["dice"] == 0.0
        assert by_case["case_b"][region]["hd95"] == pytest.approx(diagonal)
    # shifted by one voxel along y (1 mm): the HD95 is 1 mm
    assert by_case["case c"]["WT"]["hd95"] == pytest.approx(1.0)
    assert result["summary"]["WT"]["dice"]["n"] == 3


def test_summary_json_schema_and_csv(brats_refs, tmp_path):
    pred = tmp_path / "pred"
    for case in ("case_a", "case_b", "case c"):
        _write(_seg(offset=1 if case == "case_b" else 0), pred / f"{case}.nii")  # .nii works too
    out = tmp_path / "scores" / "summary.json"
    assert run(evaluate_cli.main, ["-r", str(brats_refs), "-p", str(pred), "-o", str(out), "-np", "1",
                                   "--hd95", "directed-max"]) == 0
    data = json.loads(out.read_text())
    assert {"per_case", "summary", "missing", "hd95_definition", "target"} <= set(data)
    assert data["hd95_definition"] == "directed-max" and data["target"] == "regions"
    assert data["units"] == "mm" and data["missing"] == []
    for entry in data["per_case"]:
        assert set(entry) == {"case", "WT", "TC", "ET"}
        for region in ("WT", "TC", "ET"):
            assert set(entry[region]) == {"dice", "hd95", "sensitivity", "specificity"}
    stats = data["summary"]["WT"]["dice"]
    assert set(stats) == {"mean", "std", "median", "n"} and stats["n"] == 3
    values = [e["WT"]["dice"] for e in data["per_case"]]
    assert stats["mean"] == pytest.approx(np.mean(values)) and stats["std"] == pytest.approx(np.std(values))
    frame = pd.read_csv(out.with_suffix(".csv"))
    assert list(frame["case"]) == ["case c", "case_a", "case_b"]
    assert frame["WT_dice"].tolist() == pytest.approx(values)
    assert (tmp_path / "scores" / "pfseg_evaluate.log").is_file()


def test_grid_mismatch_is_refused_with_both_files_named(brats_refs, tmp_path, capsys):
    pred = tmp_path / "pred"
    _write(_seg(), pred / "case_a.nii.gz")
    _write(_seg(), pred / "case_b.nii.gz", affine=np.diag([0.5, 1.0, 2.1, 1.0]))   # other spacing
    _write(_seg()[:, :, :-1], pred / "case c.nii.gz")                               # other shape
    assert run(evaluate_cli.main, ["-r", str(brats_refs), "-p", str(pred), "-np", "1"]) == 2
    err = capsys.readouterr().err
    line = next(ln for ln in err.splitlines() if "case_b" in ln and "another grid" in ln)
    assert str(pred / "case_b.nii.gz") in line and str(brats_refs / "case_b" / "case_b_seg.nii.gz") in line
    assert "2 case(s) could not be scored" in err
    data = json.loads((pred / "summary.json").read_text())
    assert [c["case"] for c in data["per_case"]] == ["case_a"]        # the others went on
    assert [f["case"] for f in data["failed"]] == ["case c", "case_b"]
    assert "shape" in data["failed"][0]["error"]


def test_nnunet_and_flat_reference_layouts_in_parallel(tmp_path):
    nnunet = tmp_path / "raw"
    (nnunet / "imagesTr").mkdir(parents=True)
    (nnunet / "dataset.json").write_text(json.dumps(
        {"channel_names": {"0": "T2"}, "labels": {"background": 0, "NETC": 1, "SNFH": 2, "ET": 3},
         "file_ending": ".nii.gz"}))
    seg23 = np.where(_seg() == 4, 3, _seg()).astype(np.uint8)
    for case in ("x1", "x2"):
        _write(seg23, nnunet / "labelsTr" / f"{case}.nii.gz")
    found = find_references(nnunet)
    assert found.layout == "nnunet" and found.label_scheme.name == "brats2023"
    pred = tmp_path / "pred"
    for case in ("x1", "x2"):
        _write(seg23, pred / f"{case}.nii.gz")
    result = evaluate_folder(nnunet, pred, num_processes=2, progress=False, write=False)
    assert result["label_scheme"] == "brats2023"
    assert [c["ET"]["dice"] for c in result["per_case"]] == [1.0, 1.0]

    flat = tmp_path / "flat"
    _write(seg23, flat / "x1.nii.gz")
    _write(seg23, flat / "x2_seg.nii.gz")
    assert set(find_references(flat).labels) == {"x2"}     # _seg files win when present
    (flat / "x2_seg.nii.gz").rename(flat / "x2.nii.gz")
    assert set(find_references(flat).labels) == {"x1", "x2"}
    # values outside the declared scheme fail that case, naming the file
    result = evaluate_folder(flat, pred, scheme="brats2020", progress=False, write=False)
    assert len(result["failed"]) == 2 and "label values [3]" in result["failed"][0]["error"]


def test_paper_grid_through_the_cli(tmp_path):
    shape = (20, 200, 200)
    ref_seg = np.zeros(shape, np.uint8)
    ref_seg[5:15, 80:120, 90:110] = 2
    pred_seg = np.roll(ref_seg, 3, axis=2)
    _write(ref_seg, tmp_path / "ref" / "p1" / "p1_seg.nii.gz", affine=np.eye(4))
    _write(pred_seg, tmp_path / "pred" / "p1.nii.gz", affine=np.eye(4))
    assert run(evaluate_cli.main, ["-r", str(tmp_path / "ref"), "-p", str(tmp_path / "pred"), "--wt",
                                   "--paper-grid", "-np", "1"]) == 0
    data = json.loads((tmp_path / "pred" / "summary.json").read_text())
    assert data["paper_grid"] == [128, 192, 192] and data["units"] == "voxels"
    assert list(data["per_case"][0]) == ["case", "WT"]
    # a 3-voxel shift in x is 3 voxels on the paper grid (x is only cropped)
    assert data["per_case"][0]["WT"]["hd95"] == pytest.approx(3.0)
    # z: 10 of 20 slices -> 64 of 128; in-plane unchanged: Dice = 2 * overlap / sum
    assert data["per_case"][0]["WT"]["dice"] == pytest.approx(2 * 17 / 40)
