"""The postprocessing rules on hand-built label maps, and postprocessing.json read back."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from pfseg_pipeline.data.labels import BRATS2020, BRATS2023
from pfseg_pipeline.errors import UserError
from pfseg_pipeline.inference.postprocessing import (
    Postprocessing,
    keep_largest_component,
    load_postprocessing,
)

REGIONS = ("WT", "TC", "ET")


def test_keep_largest_component_counts_corner_neighbours():
    mask = np.zeros((5, 5, 5), bool)
    mask[0, 0, 0] = mask[1, 1, 1] = True          # two voxels touching at a corner: one component
    mask[3:5, 3:5, 3] = True                      # four voxels: the largest
    assert keep_largest_component(mask).sum() == 4
    mask[2, 2, 2] = True                          # joins the corner chain to the 2x2 block
    assert keep_largest_component(mask).sum() == 7
    assert not keep_largest_component(np.zeros((3, 3, 3), bool)).any()


def test_keep_largest_component_keeps_every_tied_one_in_any_axis_order():
    mask = np.zeros((6, 7, 8), bool)
    mask[0:2, 0:2, 0] = True                      # four voxels
    mask[4, 4:6, 6:8] = True                      # four voxels, far away: a tie
    mask[2, 6, 3] = True                          # one voxel
    kept = keep_largest_component(mask)
    assert kept.sum() == 8 and not kept[2, 6, 3]
    # speckle of 30 components, the two largest of 18 voxels: the same however it is laid out
    speckle = np.random.default_rng(1).random((9, 10, 11)) > 0.9
    kept = keep_largest_component(speckle)
    assert kept.sum() == 36 and ndimage.label(kept, np.ones((3, 3, 3)))[1] == 2
    for axes in ((2, 1, 0), (1, 0, 2), (0, 2, 1)):
        back = np.argsort(axes)
        assert (keep_largest_component(speckle.transpose(axes)).transpose(back) == kept).all(), axes
    assert (keep_largest_component(speckle[::-1, :, ::-1])[::-1, :, ::-1] == kept).all()


def _tumour_with_stray_parts() -> np.ndarray:
    """brats2020 labels on 1 mm: a tumour (edema 2, core 1, ET 4); inside its edema, apart from
    its core, a stray core blob with one ET voxel; far away, a stray edema blob with one ET voxel."""
    seg = np.zeros((20, 20, 40), np.uint8)
    seg[2:12, 2:12, 2:12] = 2                     # main lesion, 1000 voxels
    seg[4:9, 4:9, 4:9] = 1                        # its core, 125 voxels ...
    seg[5:8, 5:8, 5:8] = 4                        # ... with 27 of ET
    seg[10:12, 10:12, 10:12] = 1                  # a stray core, 8 voxels, one voxel from the core ...
    seg[11, 11, 11] = 4                           # ... with one ET voxel
    seg[15:18, 15:18, 30:33] = 2                  # far away: a second lesion, 27 voxels ...
    seg[16, 16, 31] = 4                           # ... with one ET voxel
    return seg


def test_largest_component_steps_fall_back_to_the_surrounding_region():
    seg = _tumour_with_stray_parts()
    tc_voxels = np.isin(seg, (1, 4)).sum()
    wt = Postprocessing(REGIONS, ("WT",)).apply_to_labels(seg, BRATS2020, "regions", (1, 1, 1))
    assert not wt[13:, 13:, 25:].any()                           # the far lesion is gone, its ET with it
    assert (wt[:13, :13, :13] == seg[:13, :13, :13]).all()       # the main one untouched
    tc = Postprocessing(REGIONS, ("TC",)).apply_to_labels(seg, BRATS2020, "regions", (1, 1, 1))
    assert (tc[10:12, 10:12, 10:12] == 2).all() and tc[16, 16, 31] == 2   # stray cores become edema
    assert ((tc > 0) == (seg > 0)).all()                         # WT unchanged by a TC step
    assert np.isin(tc, (1, 4)).sum() == 125
    et = Postprocessing(REGIONS, ("ET",)).apply_to_labels(seg, BRATS2020, "regions", (1, 1, 1))
    assert (et == 4).sum() == 27 and et[11, 11, 11] == 1 and et[16, 16, 31] == 1  # stray ET: core
    assert np.isin(et, (1, 4)).sum() == tc_voxels                 # TC unchanged by an ET step
    every = Postprocessing(REGIONS, REGIONS).apply_to_labels(seg, BRATS2020, "regions", (1, 1, 1))
    expected = seg.copy()
    expected[13:, 13:, 25:] = 0
    expected[10:12, 10:12, 10:12] = 2
    assert (every == expected).all()


@pytest.mark.parametrize("scheme", [BRATS2020, BRATS2023])
def test_small_et_rule_relabels_as_necrosis_by_volume_in_mm3(scheme):
    et_value, necrosis = scheme.regions["ET"][0], scheme.regions_class_order[1]
    seg = np.zeros((10, 10, 10), np.uint8)
    seg[2:8, 2:8, 2:8] = 2
    seg[3:7, 3:7, 3:7] = necrosis
    seg[4:6, 4:6, 4:6] = et_value                                # 8 voxels of ET
    rule = Postprocessing(REGIONS, (), small_et_threshold_mm3=100.0)
    at_1mm = rule.apply_to_labels(seg, scheme, "regions", (1, 1, 1))      # 8 mm^3 < 100: relabelled
    assert not (at_1mm == et_value).any() and (at_1mm[4:6, 4:6, 4:6] == necrosis).all()
    assert ((at_1mm > 0) == (seg > 0)).all()
    at_2mm = rule.apply_to_labels(seg, scheme, "regions", (2, 2, 2))      # 64 mm^3: still under
    assert (at_2mm == at_1mm).all()
    at_3mm = rule.apply_to_labels(seg, scheme, "regions", (3, 3, 2))      # 144 mm^3: kept
    assert (at_3mm == seg).all()


def test_identity_and_wt_target():
    seg = _tumour_with_stray_parts()
    assert (Postprocessing(REGIONS).apply_to_labels(seg, BRATS2020, "regions", (1, 1, 1)) == seg).all()
    binary = (seg > 0).astype(np.uint8)
    kept = Postprocessing(("WT",), ("WT",)).apply_to_labels(binary, BRATS2020, "wt", (1, 1, 1))
    assert kept.sum() == 1000 and set(np.unique(kept)) == {0, 1}


def _write(tmp_path, data) -> object:
    path = tmp_path / "postprocessing.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_postprocessing_json_round_trip(tmp_path):
    rule = Postprocessing(REGIONS, ("WT", "ET"), 200.0)
    path = _write(tmp_path, {**rule.to_json(), "mean_dice": {"raw": {}, "postprocessed": {}}})
    assert load_postprocessing(path, "regions") == rule
    assert rule.describe() == ("largest component of WT; largest component of ET; ET under 200 mm^3 "
                               "relabelled as necrosis")


@pytest.mark.parametrize("change, needle", [
    (lambda d: d.update(version=2), "field 'version' must be 1"),
    (lambda d: d.update(regions=["WT", "ET"]), "field 'regions'"),
    (lambda d: d.update(keep_largest_component="WT"), "field 'keep_largest_component'"),
    (lambda d: d.update(keep_largest_component=["NCR"]), "field 'keep_largest_component'"),
    (lambda d: d["small_et"].update(threshold_mm3=-1), "field 'small_et.threshold_mm3'"),
    (lambda d: d["small_et"].update(threshold_mm3="200"), "field 'small_et.threshold_mm3'"),
    (lambda d: d.pop("small_et"), "field 'small_et.threshold_mm3'"),
])
def test_malformed_postprocessing_json_names_the_file_and_field(tmp_path, change, needle):
    data = Postprocessing(REGIONS, ("WT",), 100.0).to_json()
    change(data)
    path = _write(tmp_path, data)
    with pytest.raises(UserError, match=needle) as info:
        load_postprocessing(path, "regions")
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_postprocessing_json_for_another_target_or_not_json(tmp_path):
    path = _write(tmp_path, Postprocessing(REGIONS, ("WT",)).to_json())
    with pytest.raises(UserError, match=r"chosen for regions \['WT', 'TC', 'ET'\], but the model predicts"):
        load_postprocessing(path, "wt")
    with pytest.raises(UserError, match="not valid JSON"):
        load_postprocessing(_write(tmp_path, "{version: 1"), "regions")
    data = Postprocessing(("WT",)).to_json()
    data["small_et"]["threshold_mm3"] = 50
    with pytest.raises(UserError, match="must be 0 for a model without an ET region"):
        load_postprocessing(_write(tmp_path, data), "wt")
