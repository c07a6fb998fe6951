"""pfseg_evaluate --report: every image report.html names exists and shows the case it says."""

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from pfseg_pipeline.cli import evaluate as evaluate_cli
from pfseg_pipeline.cli.common import run
from pfseg_pipeline.data.labels import BRATS2020, labels_to_regions
from pfseg_pipeline.data.layouts import discover
from pfseg_pipeline.data.nifti import make_reference, read_label, read_volume, write_label_map, write_volume
from pfseg_pipeline.evaluation.figures import CONTOURS, panel_layout, render_figure

from .report_checks import check_figure, images_of, read_png


def _masks(path):
    seg, _ = read_label(path)
    return dict(zip(("WT", "TC", "ET"), labels_to_regions(seg, BRATS2020)))


@pytest.fixture
def evaluated(synthetic_raw, tmp_path):
    """Predictions that differ from the references in known ways, scored with --report."""
    cases = discover(synthetic_raw, require_label=True).cases
    pred = tmp_path / "pred"
    for k, case in enumerate(cases):
        seg, _ = read_label(case.label)
        if k == 1:
            seg = np.roll(seg, 2, axis=2)                       # shifted two voxels along x
        if k == 2:                                               # no enhancing tumour, edema one voxel wider
            grown = ndimage.binary_dilation(seg > 0) & (seg == 0)
            seg = np.where(seg == 4, 1, seg)
            seg[grown] = 2
        write_label_map(seg.astype(np.uint8), case.label, pred / f"{case.case_id}.nii.gz")
    assert run(evaluate_cli.main, ["-r", str(synthetic_raw), "-p", str(pred), "--report", "-np", "1"]) == 0
    return cases, pred


def test_every_image_of_the_report_shows_the_case_it_names(evaluated):
    cases, pred = evaluated
    by_id = {c.case_id: c for c in cases}
    images = images_of(pred / "report.html")
    assert sorted(i["data-case"] for i in images) == sorted(by_id)
    for image in images:
        case = by_id[image["data-case"]]
        png = pred / image["src"]
        assert png.is_file()
        masks = {"reference": _masks(case.label), "prediction": _masks(pred / f"{case.case_id}.nii.gz")}
        scan, geometry = read_volume(case.images["flair"])
        centre = tuple(int(v) for v in image["data-centre-zyx"].split(","))
        # the slices pass through the reference tumour's centre of mass
        assert centre == tuple(int(round(v)) for v in np.argwhere(masks["reference"]["WT"]).mean(axis=0))
        assert check_figure(read_png(png), geometry, centre, masks, scan) > 50
        # ... and the check tells cases apart: another case's masks do not fit this figure
        other = next(c for c in cases if c.case_id != case.case_id)
        with pytest.raises(AssertionError):
            check_figure(read_png(png), geometry, centre, {"reference": _masks(other.label),
                                                           "prediction": masks["prediction"]}, scan)


def test_the_report_lists_the_cases_worst_first(evaluated):
    _, pred = evaluated
    summary = json.loads((pred / "summary.json").read_text())
    mean_dice = {c["case"]: np.mean([c[r]["dice"] for r in ("WT", "TC", "ET")]) for c in summary["per_case"]}
    shown = [i["data-case"] for i in images_of(pred / "report.html")]
    assert shown == sorted(mean_dice, key=mean_dice.get)
    assert mean_dice[shown[0]] < mean_dice[shown[-1]] == 1.0
    text = (pred / "report.html").read_text()
    assert "reference WT" in text and "prediction ET" in text and "HD95 (mm)" in text


def test_the_views_are_in_anatomical_orientation_whatever_the_storage(tmp_path):
    """A marker at the patient's right, anterior, superior corner lands top left in the axial and
    coronal views and top left (anterior) in the sagittal one, for LPS- and RAS-stored copies."""
    shape = (8, 10, 12)
    volume = np.ones(shape, np.float32)
    figures = []
    for signs in ((-1, -1, 1), (1, 1, 1)):
        affine = np.diag([*signs, 1.0])
        marker = np.zeros(shape, bool)
        # world (x right, y anterior, z superior) extremes: index 0 or last depending on the sign
        ix, iy = (shape[2] - 1 if signs[0] > 0 else 0), (shape[1] - 1 if signs[1] > 0 else 0)
        marker[shape[0] - 1, iy, ix] = True
        path = tmp_path / f"m{signs[0]}.nii.gz"
        write_volume(volume, make_reference(shape, affine), path)
        _, geometry = read_volume(path)
        centre = (shape[0] - 1, iy, ix)
        figure, panels = render_figure(volume, geometry, centre, {"prediction": {"WT": marker}})
        figures.append(figure)
        for panel in panels:
            assert panel.plane(marker)[0, 0], panel.view
    assert np.array_equal(figures[0], figures[1])
    assert [p.view for p in panel_layout(geometry, (0, 0, 0))] == ["axial", "coronal", "sagittal"]
    assert len(set(CONTOURS.values())) == len(CONTOURS)


def test_preview_draws_the_predicted_contours(synthetic_raw, tmp_path):
    from pfseg_pipeline.evaluation.report import write_preview

    case = discover(synthetic_raw, require_label=True).cases[0]
    path = write_preview([(case.case_id, case.label, case)], tmp_path, BRATS2020, "regions")
    (image,) = images_of(path)
    assert image["data-case"] == case.case_id and Path(tmp_path / image["src"]).is_file()
    scan, geometry = read_volume(case.images["t1"])
    centre = tuple(int(v) for v in image["data-centre-zyx"].split(","))
    masks = {"prediction": _masks(case.label)}
    assert check_figure(read_png(tmp_path / image["src"]), geometry, centre, masks, scan) > 20
