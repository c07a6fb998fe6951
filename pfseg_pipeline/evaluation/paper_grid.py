"""The paper's evaluation grid: label maps brought to 128 x 192 x 192 (z, y, x), in voxels.

PFSeg's protocol (PFSEG_METHOD.md) crops BraTS volumes in-plane from 240 to 192 (24 voxels per
side on y and x) and resamples z from 155 to 128, then scores Dice and HD95 on that grid with
unit spacing. `pfseg_evaluate --paper-grid` reproduces it on label maps exported in their
native geometry:

- in-plane (y, x): a centred crop of ``(size - 192) // 2`` voxels from the start of the axis,
  keeping 192 voxels (an odd surplus leaves the extra voxel at the end); a size under 192 is
  refused (the protocol has no padding);
- z: nearest-neighbour resampling to 128 slices with voxel centres aligned
  (``source = floor((i + 0.5) * size / 128)``, as scikit-image's ``resize(order=0)`` and
  torch's ``nearest-exact`` do), so labels stay labels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pfseg_pipeline.errors import UserError
from pfseg_pipeline.presets import PAPER_GRID_ZYX


def paper_crop(size: int, target: int) -> slice:
    """The centred in-plane crop of one axis: (size - target) // 2 voxels dropped before."""
    if size < target:
        raise UserError(f"in-plane size {size} is smaller than the paper grid's {target}: "
                        "--paper-grid needs BraTS-sized images (240 x 240 in-plane)")
    start = (size - target) // 2
    return slice(start, start + target)


def nearest_indices(size: int, target: int) -> np.ndarray:
    """Source index of each of `target` output samples, nearest neighbour, centres aligned."""
    positions = (np.arange(target, dtype=np.float64) + 0.5) * (size / target)
    return np.minimum(np.floor(positions).astype(np.int64), size - 1)


def to_paper_grid_labels(seg_zyx: np.ndarray, grid_zyx: Sequence[int] = PAPER_GRID_ZYX) -> np.ndarray:
    """A label map (Z, Y, X) on the paper's grid (default 128 x 192 x 192), values unchanged.

    >>> to_paper_grid_labels(np.zeros((155, 240, 240), np.uint8)).shape
    (128, 192, 192)
    """
    seg_zyx = np.asarray(seg_zyx)
    if seg_zyx.ndim != 3:
        raise ValueError(f"expected a (Z, Y, X) label map, got shape {seg_zyx.shape}")
    grid_z, grid_y, grid_x = (int(v) for v in grid_zyx)
    size_z, size_y, size_x = seg_zyx.shape
    cropped = seg_zyx[:, paper_crop(size_y, grid_y), paper_crop(size_x, grid_x)]
    return np.ascontiguousarray(cropped[nearest_indices(size_z, grid_z)])
