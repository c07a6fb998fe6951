"""preprocess_case / restore_to_source: the cached grid and back to the source grid."""

from __future__ import annotations

import numpy as np
import pytest

from pfseg_pipeline.data.labels import BRATS2020, labels_to_regions
from pfseg_pipeline.data.nifti import read_label
from pfseg_pipeline.errors import UserError
from pfseg_pipeline.preprocessing.case import preprocess_case, restore_to_source
from tests.preprocessing.conftest import phantom, plans_for, write_case


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / float(a.sum() + b.sum())


def _restored_regions(seg_cached, properties):
    """Region masks of the cached label map, taken back to the source grid as probabilities."""
    regions = labels_to_regions(seg_cached, BRATS2020).astype(np.float32)
    return restore_to_source(regions, properties, order=1) > 0.5


def test_no_resampling_round_trip_is_exact(tmp_path):
    images, seg = phantom((20, 26, 24))
    case = write_case(tmp_path, "c1", images, seg)
    image, seg_cached, props = preprocess_case(case, plans_for())
    assert props["resampled_shape_zyx"] == props["cropped_shape_zyx"]
    assert image.shape == (4, *props["resampled_shape_zyx"]) and image.dtype == np.float32
    assert seg_cached.dtype == np.uint8
    # z-score inside the brain: background stays exactly 0
    brain = np.any(image != 0, axis=0)
    assert abs(image[0][brain].mean()) < 1e-3
    source_seg, _ = read_label(case.label)
    restored = _restored_regions(seg_cached, props)
    assert np.array_equal(restored, labels_to_regions(source_seg, BRATS2020))
    # the label map itself, order 0
    assert np.array_equal(restore_to_source(seg_cached, props, order=0), source_seg)
    assert props["source_geometry"]["shape_zyx"] == [20, 26, 24]
    assert props["plans_hash"] == plans_for().hash()


def test_anisotropic_source_to_isotropic_target_dice_at_least_099(tmp_path):
    spacing = (2.0, 1.0, 1.0)
    images, seg = phantom((16, 36, 34), spacing_zyx=spacing)
    case = write_case(tmp_path, "c2", images, seg, spacing_zyx=spacing)
    image, seg_cached, props = preprocess_case(case, plans_for((1.0, 1.0, 1.0)))
    assert props["resampled_shape_zyx"][0] == 2 * props["cropped_shape_zyx"][0]
    assert props["spacing_zyx"] == pytest.approx([1.0, 1.0, 1.0])
    restored = _restored_regions(seg_cached, props)
    truth = labels_to_regions(seg, BRATS2020)
    dice = [_dice(r, t) for r, t in zip(restored, truth)]
    print("anisotropic 2x1x1 -> 1 mm, Dice WT/TC/ET:", [round(d, 4) for d in dice])
    assert min(dice) >= 0.99


def test_isotropic_1mm_to_1p5mm_target_round_trip(tmp_path):
    images, seg = phantom((54, 62, 58), radii_mm=(22.0, 16.0, 12.0))
    case = write_case(tmp_path, "c3", images, seg)
    image, seg_cached, props = preprocess_case(case, plans_for((1.5, 1.5, 1.5)))
    assert all(r < c for r, c in zip(props["resampled_shape_zyx"], props["cropped_shape_zyx"]))
    restored = _restored_regions(seg_cached, props)
    truth = labels_to_regions(seg, BRATS2020)
    dice = [_dice(r, t) for r, t in zip(restored, truth)]
    print("1 mm -> 1.5 mm -> 1 mm, Dice WT/TC/ET:", [round(d, 4) for d in dice])
    # coarsening to 1.5 mm loses sub-voxel boundary detail: about 0.97-0.99 for 12-22 mm spheres
    assert min(dice) >= 0.96 and dice[0] >= 0.98


def test_paper_path_crops_in_plane_and_resamples_z(tmp_path):
    from pfseg_pipeline.planners.planner import plan
    from tests.planners.conftest import fake_fingerprint

    images, seg = phantom((40, 208, 200), radii_mm=(20.0, 12.0, 6.0))
    case = write_case(tmp_path, "p1", {"t2": images["t2"]}, seg)
    plans = plan(fake_fingerprint(3, shape_zyx=(40, 208, 200), box_zyx=(36, 170, 160)), "P", preset="paper",
                 peak_fn=lambda n, p, b: 1)
    image, seg_cached, props = preprocess_case(case, plans)
    assert image.shape == (1, 128, 192, 192) and seg_cached.shape == (128, 192, 192)
    assert props["crop_box_zyx"] == [[0, 40], [8, 200], [4, 196]]
    assert image.min() >= 0 and image.max() <= 1  # min-max
    restored = _restored_regions(seg_cached, props)[:1]
    truth = labels_to_regions(seg, BRATS2020)[:1]
    assert _dice(restored[0], truth[0]) >= 0.99


def test_mismatched_grids_are_a_user_error(tmp_path):
    images, seg = phantom((12, 14, 16))
    images["t2"] = images["t2"][:, :, :15]
    case = write_case(tmp_path, "bad", {"t1": images["t1"]}, seg)
    other = write_case(tmp_path / "o", "bad", {"t2": images["t2"]}, None)
    case = type(case)("bad", {"t1": case.images["t1"], "t2": other.images["t2"]}, case.label)
    with pytest.raises(UserError, match="t2"):
        preprocess_case(case, plans_for(modalities=["t1", "t2"]))


def test_restore_rejects_an_array_on_another_grid(tmp_path):
    images, seg = phantom((12, 14, 16))
    case = write_case(tmp_path, "c4", images, seg)
    _, _, props = preprocess_case(case, plans_for())
    with pytest.raises(ValueError, match="cached grid"):
        restore_to_source(np.zeros((3, 5, 5, 5), np.float32), props)
