"""Segmentation metrics of BraTS: Dice, HD95 in mm, sensitivity and specificity.

Masks are boolean (Z, Y, X) arrays and `spacing_zyx` is the voxel size in mm along those axes
(the NIfTI zooms reversed), so every distance is in mm whatever the anisotropy.

Empty masks follow the BraTS convention:

- both empty: Dice 1, HD95 0;
- exactly one empty: Dice 0, HD95 = the image diagonal in mm,
  ``sqrt(sum((shape * spacing) ** 2))``: the full extent of the grid (373.13 mm for
  240 x 240 x 155 at 1 mm; the centre-to-centre extent ``(shape - 1) * spacing`` would give
  371.43 mm).

HD95 comes in two definitions; every table must say which it uses:

- ``pooled`` (default, MedPy's ``hd95``): the 95th percentile (linear interpolation) of the
  distances of BOTH directions pooled together;
- ``directed-max`` (the BraTS challenge tool's): the larger of the two directed 95th
  percentiles.

In both, the surface of a mask is the mask minus its erosion by the 6-neighbourhood
(connectivity 1); voxels outside the image count as background, so a mask touching the image
border has a surface there (exactly what MedPy does: scipy's ``binary_erosion`` with its
default ``border_value=0``). A surface voxel's distance is the Euclidean distance, in mm, from
its centre to the nearest surface voxel centre of the other mask.

Speed: the distance transforms run on the joint bounding box of the two masks (plus a margin
of one voxel, clipped to the image), not on the whole image. This changes no distance:

- erosion: every voxel outside the box is background, in the image as in the box's padding
  (``border_value=0``), so each voxel's neighbourhood reads the same and the surfaces are the
  same voxels;
- distances: scipy's ``distance_transform_edt`` is exact (a nearest-feature search, not a
  propagation along paths), so the distance from a voxel in the box to the nearest surface
  voxel is the same in the box as in the image as long as the box holds EVERY surface voxel,
  which it does since it holds both masks whole.

Agreement with ``medpy.metric.binary.hd95`` (within 1e-6 mm) is checked in the tests and
measured in ``bench/metrics_speed.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

HD95_DEFINITIONS = ("pooled", "directed-max")
METRIC_NAMES = ("dice", "hd95", "sensitivity", "specificity")

_FACE_NEIGHBOURS = ndimage.generate_binary_structure(3, 1)


def _as_masks(reference: np.ndarray, prediction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    reference = np.asarray(reference).astype(bool, copy=False)
    prediction = np.asarray(prediction).astype(bool, copy=False)
    if reference.shape != prediction.shape:
        raise ValueError(f"mask shapes differ: reference {reference.shape}, prediction {prediction.shape}")
    return reference, prediction


def _spacing(spacing_zyx: Sequence[float] | float | None, ndim: int) -> np.ndarray:
    if spacing_zyx is None:
        return np.ones(ndim)
    spacing = np.broadcast_to(np.asarray(spacing_zyx, dtype=np.float64), (ndim,)).copy()
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise ValueError(f"voxel spacing must be positive and finite, got {tuple(spacing)}")
    return spacing


def image_diagonal_mm(shape_zyx: Sequence[int], spacing_zyx: Sequence[float] | float | None = None) -> float:
    """The HD95 of a case where exactly one mask is empty: the grid's full diagonal in mm.

    >>> round(image_diagonal_mm((155, 240, 240), (1.0, 1.0, 1.0)), 2)
    373.13
    """
    extent = np.asarray(shape_zyx, dtype=np.float64) * _spacing(spacing_zyx, len(shape_zyx))
    return float(math.sqrt(float(np.sum(extent ** 2))))


def dice(reference: np.ndarray, prediction: np.ndarray) -> float:
    """Dice similarity coefficient 2|R n P| / (|R| + |P|); 1 when both masks are empty."""
    reference, prediction = _as_masks(reference, prediction)
    size = np.count_nonzero(reference) + np.count_nonzero(prediction)
    if size == 0:
        return 1.0
    return 2.0 * np.count_nonzero(reference & prediction) / size


def sensitivity(reference: np.ndarray, prediction: np.ndarray) -> float | None:
    """True positive rate TP / (TP + FN); None (undefined) when the reference is empty."""
    reference, prediction = _as_masks(reference, prediction)
    positives = np.count_nonzero(reference)
    if positives == 0:
        return None
    return np.count_nonzero(reference & prediction) / positives


def specificity(reference: np.ndarray, prediction: np.ndarray) -> float | None:
    """True negative rate TN / (TN + FP); None (undefined) when the reference fills the image."""
    reference, prediction = _as_masks(reference, prediction)
    negatives = reference.size - np.count_nonzero(reference)
    if negatives == 0:
        return None
    false_positives = np.count_nonzero(prediction & ~reference)
    return (negatives - false_positives) / negatives


def _joint_box(reference: np.ndarray, prediction: np.ndarray, margin: int = 1) -> tuple[slice, ...]:
    """Bounding box of both masks (each non-empty), grown by `margin` and clipped to the image."""
    union = reference | prediction
    box = []
    for axis in range(union.ndim):
        others = tuple(a for a in range(union.ndim) if a != axis)
        hits = np.flatnonzero(np.any(union, axis=others))
        box.append(slice(max(int(hits[0]) - margin, 0), min(int(hits[-1]) + 1 + margin, union.shape[axis])))
    return tuple(box)


def _surface(mask: np.ndarray) -> np.ndarray:
    """Mask voxels with at least one face neighbour outside the mask (outside the image counts)."""
    return mask & ~ndimage.binary_erosion(mask, structure=_FACE_NEIGHBOURS, border_value=0)


def surface_distances(reference: np.ndarray, prediction: np.ndarray,
                      spacing_zyx: Sequence[float] | float | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances in mm between two non-empty masks (Z, Y, X).

    Returns ``(prediction_to_reference, reference_to_prediction)``: for each surface voxel of
    the first mask named, the distance to the nearest surface voxel of the other. Raises
    ValueError when either mask is empty (the distances are undefined).
    """
    reference, prediction = _as_masks(reference, prediction)
    spacing = _spacing(spacing_zyx, reference.ndim)
    if not reference.any() or not prediction.any():
        raise ValueError("surface distances need two non-empty masks")
    box = _joint_box(reference, prediction)
    ref_surface = _surface(reference[box])
    pred_surface = _surface(prediction[box])
    to_reference = ndimage.distance_transform_edt(~ref_surface, sampling=spacing)[pred_surface]
    to_prediction = ndimage.distance_transform_edt(~pred_surface, sampling=spacing)[ref_surface]
    return to_reference, to_prediction


def hd95(reference: np.ndarray, prediction: np.ndarray, spacing_zyx: Sequence[float] | float | None = None,
         definition: str = "pooled") -> float:
    """95th percentile Hausdorff distance in mm (see the module docstring for the definitions).

    Symmetric in its two masks. Empty masks: both empty -> 0; one empty -> the image diagonal.

    >>> a = np.zeros((8, 8, 8), bool); a[2:5, 2:5, 2:5] = True
    >>> hd95(a, np.roll(a, 1, axis=0), spacing_zyx=(3.0, 1.0, 1.0))
    3.0
    """
    if definition not in HD95_DEFINITIONS:
        raise ValueError(f"unknown HD95 definition {definition!r} "
                         f"(choose from {', '.join(HD95_DEFINITIONS)})")
    reference, prediction = _as_masks(reference, prediction)
    ref_empty, pred_empty = not reference.any(), not prediction.any()
    if ref_empty and pred_empty:
        return 0.0
    if ref_empty or pred_empty:
        return image_diagonal_mm(reference.shape, spacing_zyx)
    to_reference, to_prediction = surface_distances(reference, prediction, spacing_zyx)
    if definition == "pooled":
        return float(np.percentile(np.concatenate([to_reference, to_prediction]), 95))
    return float(max(np.percentile(to_reference, 95), np.percentile(to_prediction, 95)))


def region_metrics(reference: np.ndarray, prediction: np.ndarray,
                   spacing_zyx: Sequence[float] | float | None = None,
                   hd95_definition: str = "pooled") -> dict[str, float | None]:
    """Dice, HD95 (mm), sensitivity and specificity of one region's masks (Z, Y, X)."""
    reference, prediction = _as_masks(reference, prediction)
    return {
        "dice": float(dice(reference, prediction)),
        "hd95": hd95(reference, prediction, spacing_zyx, hd95_definition),
        "sensitivity": _float_or_none(sensitivity(reference, prediction)),
        "specificity": _float_or_none(specificity(reference, prediction)),
    }


def _float_or_none(value: float | None) -> float | None:
    return None if value is None else float(value)
