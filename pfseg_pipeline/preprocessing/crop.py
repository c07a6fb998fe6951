"""Crop boxes: a centred box, cropping to a box and the inverse placement. (The brain box,
`nonzero_box`, is found where a case is read: data/case_reader.py.)

A box is `[[z0, z1], [y0, y1], [x0, x1]]` on the source grid, half-open (z1 excluded). A box may
reach outside the volume (a centred crop larger than a small scan): `crop` pads that part with
zeros and `uncrop` keeps only the part inside, so `uncrop(crop(a, box), box, a.shape)` gives `a`
back inside the box and zeros elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pfseg_pipeline.data.case_reader import Box


def centered_box(shape_zyx: Sequence[int], size_zyx: Sequence[int | None]) -> Box:
    """A box of `size_zyx` centred in `shape_zyx` (None keeps an axis whole).

    When the size is larger than the volume the box reaches outside it (zero padding).

    >>> centered_box((155, 240, 240), (None, 192, 192))
    [[0, 155], [24, 216], [24, 216]]
    """
    box = []
    for n, size in zip(shape_zyx, size_zyx):
        size = int(n) if size is None else int(size)
        start = (int(n) - size) // 2
        box.append([start, start + size])
    return box


def box_shape(box: Box) -> list[int]:
    return [int(b[1] - b[0]) for b in box]


def crop(array: np.ndarray, box: Box) -> np.ndarray:
    """Cut `box` out of the last three axes of `array`, padding with zeros outside the grid."""
    array = np.asarray(array)
    spatial = array.shape[-3:]
    inside = [(max(b0, 0), min(b1, n)) for (b0, b1), n in zip(box, spatial)]
    if all(b0 >= 0 and b1 <= n for (b0, b1), n in zip(box, spatial)):
        slices = tuple(slice(b0, b1) for b0, b1 in box)
        return np.ascontiguousarray(array[(Ellipsis, *slices)])
    out = np.zeros(array.shape[:-3] + tuple(box_shape(box)), dtype=array.dtype)
    src = tuple(slice(lo, hi) for lo, hi in inside)
    dst = tuple(slice(lo - b0, hi - b0) for (lo, hi), (b0, _) in zip(inside, box))
    if all(hi > lo for lo, hi in inside):
        out[(Ellipsis, *dst)] = array[(Ellipsis, *src)]
    return out


def uncrop(array: np.ndarray, box: Box, shape_zyx: Sequence[int], fill: float = 0) -> np.ndarray:
    """Place `array` (..., box shape) back into a `fill`ed volume of `shape_zyx` (the inverse of crop)."""
    array = np.asarray(array)
    if list(array.shape[-3:]) != box_shape(box):
        raise ValueError(f"array shape {array.shape[-3:]} does not match the box {box}")
    out = np.full(array.shape[:-3] + tuple(int(n) for n in shape_zyx), fill, dtype=array.dtype)
    inside = [(max(b0, 0), min(b1, int(n))) for (b0, b1), n in zip(box, shape_zyx)]
    if all(hi > lo for lo, hi in inside):
        dst = tuple(slice(lo, hi) for lo, hi in inside)
        src = tuple(slice(lo - b0, hi - b0) for (lo, hi), (b0, _) in zip(inside, box))
        out[(Ellipsis, *dst)] = array[(Ellipsis, *src)]
    return out
