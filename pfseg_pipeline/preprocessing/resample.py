"""Resampling between a source grid and the target grid (images, label maps, probabilities).

Every function maps a (..., Z, Y, X) array onto a new shape covering the SAME physical extent
(`scipy.ndimage.zoom` with `grid_mode=True`: voxel edges, not voxel centres, are aligned), so
resampling to a shape and back to the original shape is a consistent round trip. When the
shape does not change, the input is returned as it is (no interpolation, so the no-resampling
path is exact).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

# Spacings closer than this (relative) count as equal: NIfTI headers store float32 zooms, so
# "1.0" may read as 0.99999994.
SPACING_RTOL = 1e-3


def shape_for_spacing(shape_zyx: Sequence[int], spacing_zyx: Sequence[float],
                      target_spacing_zyx: Sequence[float]) -> list[int]:
    """The grid shape that covers the same extent at the target spacing (at least 1 voxel).

    Axes whose spacing already matches keep their shape exactly.

    >>> shape_for_spacing((155, 240, 240), (1, 1, 1), (1.5, 1, 1))
    [103, 240, 240]
    """
    out = []
    for n, s, t in zip(shape_zyx, spacing_zyx, target_spacing_zyx):
        if abs(s - t) <= SPACING_RTOL * t:
            out.append(int(n))
        else:
            out.append(max(1, int(round(n * s / t))))
    return out


def _zoom_factors(old: Sequence[int], new: Sequence[int]) -> tuple[float, ...]:
    return tuple(n / o for o, n in zip(old, new))


def resample_volume(volume: np.ndarray, new_shape_zyx: Sequence[int], order: int = 3) -> np.ndarray:
    """Resample one (Z, Y, X) volume to `new_shape_zyx` with a spline of `order` (float32 out).

    Edges replicate the border voxel (`mode="nearest"`), so a brain touching the crop border is
    not darkened by zeros from outside.
    """
    volume = np.asarray(volume)
    new_shape = tuple(int(n) for n in new_shape_zyx)
    if volume.shape == new_shape:
        return volume.astype(np.float32, copy=False)
    out = ndimage.zoom(volume.astype(np.float32, copy=False), _zoom_factors(volume.shape, new_shape),
                       order=order, mode="nearest", grid_mode=True, prefilter=order > 1)
    if out.shape != new_shape:  # zoom rounds the output size; guard against float error
        raise RuntimeError(f"resampling produced {out.shape}, expected {new_shape}")
    return out


def resample_channels(array: np.ndarray, new_shape_zyx: Sequence[int], order: int = 3) -> np.ndarray:
    """Resample each channel of (C, Z, Y, X) to (C, *new_shape_zyx)."""
    array = np.asarray(array)
    if tuple(array.shape[1:]) == tuple(int(n) for n in new_shape_zyx):
        return array.astype(np.float32, copy=False)
    out = np.empty((array.shape[0], *(int(n) for n in new_shape_zyx)), dtype=np.float32)
    for c in range(array.shape[0]):
        out[c] = resample_volume(array[c], new_shape_zyx, order)
    return out


def resample_labels(seg: np.ndarray, new_shape_zyx: Sequence[int]) -> np.ndarray:
    """Resample a label map (Z, Y, X) by linear interpolation of each label's one-hot mask and argmax.

    Smoother than nearest-neighbour (boundaries move by sub-voxel amounts, small parts survive
    better). One label at a time, so memory stays at two float volumes whatever the label count.
    """
    seg = np.asarray(seg)
    new_shape = tuple(int(n) for n in new_shape_zyx)
    if seg.shape == new_shape:
        return seg.copy()
    values = np.unique(seg)
    best_score = np.full(new_shape, -1.0, dtype=np.float32)
    best_label = np.zeros(new_shape, dtype=seg.dtype)
    for value in values:
        score = resample_volume((seg == value).astype(np.float32), new_shape, order=1)
        better = score > best_score
        best_score[better] = score[better]
        best_label[better] = value
    return best_label
