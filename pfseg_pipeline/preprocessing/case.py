"""One case from its source files to the target grid, and back.

`preprocess_case` reads every modality (checking they share a grid), crops, normalises and
resamples as the plans say; `restore_to_source` maps an array on the cached grid (a network's
probabilities) back onto the source grid. Both paths are driven by `plans.preprocessing`:

- default / demo: crop to the union non-zero (brain) box; z-score in the brain; resample to the
  target spacing (images cubic, labels by one-hot linear + argmax).
- paper: a fixed centred in-plane crop (240 -> 192), every axis resampled to a fixed shape
  (z 155 -> 128) linearly; per-volume min-max.

The properties dict (written as `cases/<case>.json`) holds what is needed to map back exactly:
source geometry, crop box, cropped and resampled shapes.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from pfseg_pipeline.data.appearance import case_appearance
from pfseg_pipeline.data.case_reader import box_of_mask, read_case
from pfseg_pipeline.data.labels import check_label_values
from pfseg_pipeline.data.layouts import Case
from pfseg_pipeline.data.nifti import Geometry
from pfseg_pipeline.errors import UserError
from pfseg_pipeline.plans import Plans
from pfseg_pipeline.preprocessing.crop import box_shape, centered_box, crop, uncrop
from pfseg_pipeline.preprocessing.normalise import normalise_channels
from pfseg_pipeline.preprocessing.resample import (
    resample_channels,
    resample_labels,
    resample_volume,
    shape_for_spacing,
)

CROPS = ("nonzero", "center")
RESAMPLINGS = ("spacing", "shape")


def preprocessing_steps(plans: Plans) -> dict[str, Any]:
    """The preprocessing recipe of `plans`, with defaults filled in and every key checked."""
    steps = {"crop": "nonzero", "center_crop_zyx": None, "resample": "spacing",
             "resampled_shape_zyx": None, "image_order": 3}
    steps.update(plans.preprocessing or {})

    def bad(key: str, why: str) -> UserError:
        return UserError(f"plans.json: field 'preprocessing.{key}' {why}, got {steps[key]!r}")

    if steps["crop"] not in CROPS:
        raise bad("crop", f"must be one of {CROPS}")
    if steps["crop"] == "center":
        size = steps["center_crop_zyx"]
        if not isinstance(size, list) or len(size) != 3 or any(
                s is not None and (not isinstance(s, int) or s < 1) for s in size):
            raise bad("center_crop_zyx", "must be three positive integers or null (z, y, x)")
    if steps["resample"] not in RESAMPLINGS:
        raise bad("resample", f"must be one of {RESAMPLINGS}")
    if steps["resample"] == "shape":
        shape = steps["resampled_shape_zyx"]
        if not isinstance(shape, list) or len(shape) != 3 or any(
                not isinstance(s, int) or s < 1 for s in shape):
            raise bad("resampled_shape_zyx", "must be three positive integers (z, y, x)")
    if steps["image_order"] not in (0, 1, 2, 3, 4, 5):
        raise bad("image_order", "must be a spline order 0..5")
    return steps


def preprocess_case(case: Case, plans: Plans, with_label: bool = True,
                    arrays: tuple[np.ndarray, Geometry] | None = None
                    ) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    """Read, crop, normalise and resample one case as `plans` says.

    `arrays`: the case's images already in memory, (C, Z, Y, X) float32 in `plans.modalities`
    order, with their geometry, used instead of reading `case.images` (no label); the Python
    API's arrays take this path, so they are preprocessed exactly as files are.

    Returns
    -------
    image : float32 (C, Z, Y, X) on the target grid, channels in `plans.modalities` order.
    seg : uint8 (Z, Y, X) with the raw label values, or None when the case has no label.
    properties : JSON-ready dict (source geometry, crop box, shapes, normalisation, the raw
        appearance (`data.appearance`), timings).
    """
    steps = preprocessing_steps(plans)
    t0 = time.perf_counter()
    images, seg, geometry = (read_case(case, list(plans.modalities), with_label) if arrays is None
                             else (arrays[0], None, arrays[1]))
    if seg is not None:
        unknown = check_label_values(seg, plans.scheme)
        if unknown:
            raise UserError(f"{case.label}: label values {unknown} are not in the "
                            f"{plans.scheme.name} scheme {list(plans.scheme.values)}")
    t_read = time.perf_counter() - t0
    # before any normalisation: what prediction holds against the training fingerprint
    brain = np.any(images != 0, axis=0)
    appearance = case_appearance(images, list(plans.modalities), geometry.spacing_zyx, brain)

    if steps["crop"] == "nonzero":
        box = box_of_mask(brain)
    else:
        box = centered_box(geometry.shape_zyx, steps["center_crop_zyx"])
    images = crop(images, box)
    seg = crop(seg, box) if seg is not None else None
    cropped_shape = box_shape(box)

    brain = np.any(images != 0, axis=0)
    images, stats = normalise_channels(images, brain, plans.normalization, list(plans.modalities))
    del brain

    if steps["resample"] == "spacing":
        new_shape = shape_for_spacing(cropped_shape, geometry.spacing_zyx, plans.target_spacing_zyx)
    else:
        new_shape = list(steps["resampled_shape_zyx"])
    images = resample_channels(images, new_shape, order=steps["image_order"])
    if seg is not None:
        seg = resample_labels(seg, new_shape).astype(np.uint8)
    spacing = [c * s / n for c, s, n in zip(cropped_shape, geometry.spacing_zyx, new_shape)]

    properties = {
        "case": case.case_id,
        "source_geometry": geometry.to_json(),
        "crop_box_zyx": box,
        "cropped_shape_zyx": cropped_shape,
        "resampled_shape_zyx": list(new_shape),
        "spacing_zyx": spacing,
        "modalities": list(plans.modalities),
        "normalisation": stats,
        "appearance": appearance,
        "label_voxels": _label_voxels(seg) if seg is not None else None,
        "sources": {m: {"path": str(case.images[m])} for m in plans.modalities},
        "plans_hash": plans.hash(),
        "timings": {"read": t_read, "preprocess": time.perf_counter() - t0 - t_read},
    }
    if case.label is not None and with_label:
        properties["sources"]["label"] = {"path": str(case.label)}
    return images, seg, properties


def _label_voxels(seg: np.ndarray) -> dict[str, int]:
    values, counts = np.unique(seg, return_counts=True)
    return {str(int(v)): int(n) for v, n in zip(values, counts)}


def restore_to_source(array: np.ndarray, properties: dict[str, Any], order: int = 1) -> np.ndarray:
    """Map (K, Z, Y, X) on the cached grid back onto the source grid (K, Zs, Ys, Xs).

    Undoes the resampling (spline of `order` back to the cropped shape; nothing when the shapes
    already match, so that path is exact), then places the result into the crop box of a
    zero volume of the source shape. A (Z, Y, X) array is accepted and returned as such.
    Floating arrays come back float32; integer arrays (labels) need `order=0`.
    """
    array = np.asarray(array)
    squeeze = array.ndim == 3
    if squeeze:
        array = array[None]
    expected = [int(v) for v in properties["resampled_shape_zyx"]]
    if list(array.shape[1:]) != expected:
        raise ValueError(f"array shape {tuple(array.shape[1:])} is not the cached grid {tuple(expected)} "
                         f"of case {properties.get('case')}")
    cropped_shape = [int(v) for v in properties["cropped_shape_zyx"]]
    source_shape = [int(v) for v in properties["source_geometry"]["shape_zyx"]]
    if list(array.shape[1:]) != cropped_shape:
        if order > 0 and not np.issubdtype(array.dtype, np.floating):
            raise ValueError("integer arrays (labels) can only be restored with order=0")
        out = np.empty((array.shape[0], *cropped_shape),
                       dtype=np.float32 if np.issubdtype(array.dtype, np.floating) else array.dtype)
        for k in range(array.shape[0]):
            out[k] = resample_volume(array[k], cropped_shape, order=order)
        array = out
    elif np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32, copy=False)
    restored = uncrop(array, properties["crop_box_zyx"], source_shape)
    return restored[0] if squeeze else restored
