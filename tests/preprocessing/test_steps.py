"""Crop, normalise and resample on tiny arrays."""

from __future__ import annotations

import numpy as np

from pfseg_pipeline.data.case_reader import nonzero_box
from pfseg_pipeline.preprocessing.crop import centered_box, crop, uncrop
from pfseg_pipeline.preprocessing.normalise import minmax, zscore_in_brain
from pfseg_pipeline.preprocessing.resample import resample_labels, resample_volume, shape_for_spacing


def test_nonzero_box_is_the_union_over_channels():
    a = np.zeros((2, 6, 7, 8))
    a[0, 1, 2, 3] = 1
    a[1, 4, 5, 6] = -2  # negative values count as brain too
    assert nonzero_box(a) == [[1, 5], [2, 6], [3, 7]]
    assert nonzero_box(np.zeros((1, 3, 4, 5))) == [[0, 3], [0, 4], [0, 5]]


def test_crop_uncrop_round_trip_inside_and_outside_the_grid():
    rng = np.random.default_rng(0)
    a = rng.random((2, 5, 6, 7))
    for box in ([[1, 4], [0, 6], [2, 5]], centered_box((5, 6, 7), (None, 10, 4))):
        restored = uncrop(crop(a, box), box, a.shape[1:])
        inside = tuple(slice(max(b0, 0), min(b1, n)) for (b0, b1), n in zip(box, a.shape[1:]))
        assert np.array_equal(restored[(slice(None), *inside)], a[(slice(None), *inside)])
        mask = np.ones(a.shape[1:], bool)
        mask[inside] = False
        assert not restored[:, mask].any()
    assert centered_box((155, 240, 240), (None, 192, 192)) == [[0, 155], [24, 216], [24, 216]]


def test_zscore_inside_the_brain_keeps_background_zero():
    rng = np.random.default_rng(1)
    v = np.zeros((6, 6, 6), np.float32)
    v[1:5, 1:5, 1:5] = rng.normal(100, 20, (4, 4, 4))
    out, stats = zscore_in_brain(v, v != 0)
    brain = v != 0
    assert np.all(out[~brain] == 0)
    assert abs(out[brain].mean()) < 1e-5 and abs(out[brain].std() - 1) < 1e-4
    assert stats["kind"] == "zscore" and stats["brain_voxels"] == 64
    flat, _ = zscore_in_brain(np.where(brain, 5.0, 0.0), brain)  # constant brain: finite zeros
    assert np.isfinite(flat).all() and not flat.any()
    mm, mstats = minmax(v)
    assert mm.min() == 0 and mm.max() == 1 and mstats["max"] == v.max()


def test_resample_skips_matching_spacing_and_round_trips_shapes():
    v = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    assert shape_for_spacing(v.shape, (1, 1, 1), (1.0000001, 1, 1)) == [4, 5, 6]
    assert resample_volume(v, (4, 5, 6)) is v or np.array_equal(resample_volume(v, (4, 5, 6)), v)
    up = resample_volume(v, (8, 5, 6), order=1)
    assert up.shape == (8, 5, 6)
    back = resample_volume(up, (4, 5, 6), order=1)
    # exact away from the first and last slice (linear extrapolation is clamped at the edges)
    assert np.allclose(back[1:-1], v[1:-1], atol=1e-4)


def test_label_resampling_keeps_values_and_small_parts():
    seg = np.zeros((10, 10, 10), np.uint8)
    seg[2:8, 2:8, 2:8] = 2
    seg[4:6, 4:6, 4:6] = 4
    out = resample_labels(seg, (20, 20, 20))
    assert set(np.unique(out)) == {0, 2, 4}
    # one-hot linear + argmax: the 4x4x4 block of ET keeps all but its 8 corner voxels
    assert (out == 4).sum() == 4 ** 3 - 8
    assert np.array_equal(resample_labels(out, (10, 10, 10)), seg)
