import itertools
import math

import numpy as np
import pytest
from scipy import ndimage

from pfseg_pipeline.data.labels import BRATS2020, BRATS2023
from pfseg_pipeline.evaluation.evaluate import evaluate_arrays
from pfseg_pipeline.evaluation.metrics import (
    dice,
    hd95,
    image_diagonal_mm,
    region_metrics,
    sensitivity,
    specificity,
    surface_distances,
)

SPACING = (2.5, 0.7, 1.3)  # z, y, x mm


def _brute_force_directed(a: np.ndarray, b: np.ndarray, spacing) -> np.ndarray:
    """Distances from each surface voxel of `a` to the nearest surface voxel of `b`, by listing
    the surfaces from their definition (a mask voxel with a face neighbour outside the mask or
    outside the image) and comparing every pair."""
    def surface_points(mask):
        padded = np.pad(mask, 1)
        inner = padded[1:-1, 1:-1, 1:-1].copy()
        for axis in range(3):
            for step in (-1, 1):
                inner &= np.roll(padded, step, axis=axis)[1:-1, 1:-1, 1:-1]
        return np.argwhere(mask & ~inner) * np.asarray(spacing)

    pa, pb = surface_points(a), surface_points(b)
    return np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1)).min(1)


def test_parallel_plates_offset_by_k_voxels():
    # one-voxel-thick plates: every voxel is surface, each sees its partner k voxels across
    for k in (1, 3):
        a = np.zeros((6, 7, 12), bool)
        a[1:5, 2:6, 3] = True
        b = np.roll(a, k, axis=2)
        assert hd95(a, b, SPACING) == pytest.approx(k * 1.3, abs=1e-12)
        assert hd95(a, b, SPACING, "directed-max") == pytest.approx(k * 1.3, abs=1e-12)
        assert dice(a, b) == 0.0


def test_single_voxels():
    a = np.zeros((9, 9, 9), bool)
    b = a.copy()
    a[1, 2, 3] = True
    b[4, 6, 8] = True
    expected = math.sqrt((3 * 2.5) ** 2 + (4 * 0.7) ** 2 + (5 * 1.3) ** 2)
    assert hd95(a, b, SPACING) == pytest.approx(expected, abs=1e-12)


def test_cubes_offset_along_z_anisotropic():
    a = np.zeros((14, 10, 10), bool)
    a[2:8, 2:8, 2:8] = True
    b = np.roll(a, 2, axis=0)  # 2 slices of 2.5 mm
    # by hand: each cube has 6**3 - 4**3 = 152 surface voxels; the 36 of a's bottom face are two
    # slices (5 mm) below b, and so are the 36 of b's top face above a; every other surface
    # voxel is nearer. So 72 of the 304 pooled distances are 5 mm, the largest (> 5 %): HD95 5 mm.
    to_b, to_a = surface_distances(b, a, SPACING)
    pooled = np.concatenate([to_b, to_a])
    assert pooled.size == 304 and pooled.max() == pytest.approx(5.0)
    assert np.count_nonzero(np.isclose(pooled, 5.0)) == 72
    assert hd95(a, b, SPACING) == pytest.approx(5.0, abs=1e-12)
    assert dice(a, b) == pytest.approx(2 * 4 * 36 / (2 * 216))


def test_directed_distances_match_brute_force():
    rng = np.random.default_rng(7)
    a = ndimage.gaussian_filter(rng.random((10, 12, 11)), 1.5) > 0.52
    b = ndimage.gaussian_filter(rng.random((10, 12, 11)), 1.5) > 0.52
    d_ab = _brute_force_directed(a, b, SPACING)
    d_ba = _brute_force_directed(b, a, SPACING)
    to_b, to_a = surface_distances(b, a, SPACING)  # (prediction -> reference, reference -> prediction)
    np.testing.assert_allclose(np.sort(to_b), np.sort(d_ab), atol=1e-9)
    np.testing.assert_allclose(np.sort(to_a), np.sort(d_ba), atol=1e-9)
    assert hd95(a, b, SPACING) == pytest.approx(np.percentile(np.concatenate([d_ab, d_ba]), 95), abs=1e-9)
    directed = max(np.percentile(d_ab, 95), np.percentile(d_ba, 95))
    assert hd95(a, b, SPACING, "directed-max") == pytest.approx(directed, abs=1e-9)


@pytest.mark.parametrize("seed", range(6))
def test_agrees_with_medpy_on_random_blobs(seed):
    from medpy.metric.binary import hd95 as medpy_hd95

    rng = np.random.default_rng(seed)
    shape = (18, 26, 22)
    spacing = [(2.0, 0.5, 0.9), (1.0, 1.0, 1.0), (5.0, 1.2, 0.8)][seed % 3]
    smooth = [ndimage.gaussian_filter(rng.random(shape), 2.0) for _ in range(2)]
    a, b = smooth[0] > np.quantile(smooth[0], 0.75), smooth[1] > np.quantile(smooth[1], 0.8)
    if seed % 2:  # a small one away from the border against a large one on it
        b = np.zeros(shape, bool)
        b[7:10, 9:13, 8:11] = True
        a[0] = True  # fills the first slice: touches the border on one whole face
    assert a[[0, -1]].any() or a[:, [0, -1]].any() or a[:, :, [0, -1]].any()
    # medpy's order is (result, reference)
    assert hd95(a, b, spacing) == pytest.approx(medpy_hd95(b, a, voxelspacing=spacing), abs=1e-6)
    assert hd95(b, a, spacing) == pytest.approx(hd95(a, b, spacing), abs=1e-12)


def test_empty_mask_conventions():
    empty = np.zeros((155, 240, 240), bool)
    tumour = empty.copy()
    tumour[70:80, 100:120, 100:110] = True
    assert dice(empty, empty) == 1.0 and hd95(empty, empty, (1, 1, 1)) == 0.0
    assert dice(tumour, empty) == 0.0 and dice(empty, tumour) == 0.0
    assert hd95(tumour, empty, (1, 1, 1)) == pytest.approx(373.13, abs=0.005)
    assert hd95(empty, tumour, (1, 1, 1), "directed-max") == pytest.approx(373.13, abs=0.005)
    assert image_diagonal_mm((155, 240, 240)) == pytest.approx(math.sqrt(240**2 + 240**2 + 155**2))
    assert image_diagonal_mm((10, 20, 30), (2.0, 1.0, 0.5)) == pytest.approx(math.sqrt(20**2 * 2 + 15**2))
    metrics = region_metrics(empty, empty)
    assert metrics["sensitivity"] is None and metrics["specificity"] == 1.0


def test_sensitivity_specificity_values():
    ref = np.zeros((4, 5, 5), bool)
    pred = ref.copy()
    ref.flat[:10] = True          # 10 positives, 90 negatives
    pred.flat[5:20] = True        # TP 5, FN 5, FP 10
    assert sensitivity(ref, pred) == pytest.approx(0.5)
    assert specificity(ref, pred) == pytest.approx(80 / 90)
    assert dice(ref, pred) == pytest.approx(2 * 5 / 25)
    assert specificity(np.ones_like(ref), pred) is None


def test_regions_from_brats_labels():
    seg = np.zeros((6, 8, 8), np.uint8)
    seg[1:5, 1:7, 1:7] = 2      # edema
    seg[2:4, 2:6, 2:6] = 1      # necrosis
    seg[2:4, 3:5, 3:5] = 4      # enhancing
    pred = seg.copy()
    pred[pred == 4] = 1         # enhancing called necrosis: WT and TC perfect, ET empty
    metrics = evaluate_arrays(seg, pred, (1.0, 1.0, 1.0), BRATS2020, "regions")
    assert list(metrics) == ["WT", "TC", "ET"]
    assert metrics["WT"]["dice"] == 1.0 and metrics["TC"]["dice"] == 1.0
    assert metrics["ET"]["dice"] == 0.0
    assert metrics["ET"]["hd95"] == pytest.approx(math.sqrt(36 + 64 + 64))
    assert metrics["ET"]["sensitivity"] == 0.0
    only_wt = evaluate_arrays(seg, (seg > 0).astype(np.uint8), None, "brats2020", "wt")
    assert list(only_wt) == ["WT"] and only_wt["WT"]["dice"] == 1.0
    seg23 = np.where(seg == 4, 3, seg).astype(np.uint8)
    assert evaluate_arrays(seg23, seg23, None, BRATS2023)["ET"]["dice"] == 1.0


def test_hd95_symmetric_for_both_definitions():
    rng = np.random.default_rng(3)
    for a, b in itertools.combinations([ndimage.gaussian_filter(rng.random((8, 9, 10)), 1) > 0.55
                                        for _ in range(3)], 2):
        for definition in ("pooled", "directed-max"):
            assert hd95(a, b, SPACING, definition) == pytest.approx(hd95(b, a, SPACING, definition))
