import numpy as np
import pytest

from pfseg_pipeline.errors import UserError
from pfseg_pipeline.evaluation.paper_grid import nearest_indices, to_paper_grid_labels


def test_brats_grid_maps_to_128_192_192():
    seg = np.zeros((155, 240, 240), np.uint8)
    seg[:] = (np.arange(155) % 250)[:, None, None]   # slice index as label value
    seg[:, 23, :] = 251                              # the last row cropped away
    seg[:, 24, :] = 252                              # the first row kept
    seg[:, :, 216] = 253                             # the first column cropped away at the end
    out = to_paper_grid_labels(seg)
    assert out.shape == (128, 192, 192) and out.dtype == np.uint8
    assert (out[:, 0, 1:] == 252).all()
    assert not (out == 251).any() and not (out == 253).any()
    # z: nearest neighbour with centres aligned, floor((i + 0.5) * 155 / 128)
    expected_z = np.floor((np.arange(128) + 0.5) * 155 / 128).astype(int)
    np.testing.assert_array_equal(out[:, 100, 100], expected_z)
    assert expected_z[0] == 0 and expected_z[-1] == 154
    assert set(np.unique(out)) <= set(np.unique(seg))  # labels stay labels


def test_other_sizes_generalise_and_small_ones_are_refused():
    seg = np.zeros((20, 201, 196), np.uint8)
    seg[:, 4, 2] = 1          # first kept voxel: crop (201 - 192) // 2 = 4 and (196 - 192) // 2 = 2
    out = to_paper_grid_labels(seg)
    assert out.shape == (128, 192, 192) and (out[:, 0, 0] == 1).all()
    np.testing.assert_array_equal(nearest_indices(20, 128), np.floor((np.arange(128) + 0.5) * 20 / 128))
    with pytest.raises(UserError, match="smaller than the paper grid"):
        to_paper_grid_labels(np.zeros((155, 180, 240), np.uint8))
