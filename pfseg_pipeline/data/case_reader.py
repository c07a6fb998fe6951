"""Reading a case: its modalities as one (C, Z, Y, X) array on one checked grid, its label map,
and its brain box. Fingerprinting (planners/) and preprocessing both read cases this way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pfseg_pipeline.data.image_io import read_channels, read_label, read_volume
from pfseg_pipeline.data.layouts import Case
from pfseg_pipeline.data.nifti import Geometry, grid_problem
from pfseg_pipeline.errors import UserError

Box = list[list[int]]  # [[z0, z1], [y0, y1], [x0, x1]], half-open, on the source grid


def read_case(case: Case, modalities: list[str], with_label: bool = True
              ) -> tuple[np.ndarray, np.ndarray | None, Geometry]:
    """Read a case's modalities as (C, Z, Y, X) float32 (and its label) on one checked grid.

    Modalities stacked in one 4D file (`case.channels`) are read from it in one pass.
    """
    missing = [m for m in modalities if m not in case.images]
    if missing:
        raise UserError(f"case {case.case_id}: no {missing[0]} image (the plans need "
                        f"{', '.join(modalities)})")
    by_file: dict[Path, list[int]] = {}
    for c, modality in enumerate(modalities):
        by_file.setdefault(Path(case.images[modality]), []).append(c)
    first_path = case.images[modalities[0]]
    images = geometry = None
    for path, indices in by_file.items():
        if len(indices) > 1 or modalities[indices[0]] in case.channels:
            volumes, other = read_channels(path, [case.channels.get(modalities[c], 0) for c in indices])
        else:
            volume, other = read_volume(path)
            volumes = volume[None]
        if images is None:
            images = np.empty((len(modalities), *volumes.shape[1:]), dtype=np.float32)
            geometry = other
        else:
            problem = grid_problem(path, other, first_path, geometry, f"{modalities[indices[0]]} image")
            if problem:
                raise UserError(problem)
        images[indices] = volumes
        del volumes
    for c, modality in enumerate(modalities):
        if not images[c].any():  # nothing to normalise: a blank or failed export, not a scan
            raise UserError(f"{case.images[modality]}: image is all zero")
    seg = None
    if with_label and case.label is not None:
        seg, other = read_label(case.label)
        if other.shape_zyx != geometry.shape_zyx:
            raise UserError(f"{case.label}: label shape {other.shape_zyx} (z y x) differs from the "
                            f"images' {geometry.shape_zyx}")
    return images, seg, geometry


def nonzero_box(images: np.ndarray) -> Box:
    """The bounding box of the voxels that are non-zero in any channel of (C, Z, Y, X).

    An all-zero volume gives the whole grid (nothing to crop away, nothing lost).

    >>> a = np.zeros((1, 4, 5, 6)); a[0, 1:3, 2, 3:5] = 1
    >>> nonzero_box(a)
    [[1, 3], [2, 3], [3, 5]]
    """
    images = np.asarray(images)
    mask = np.any(images != 0, axis=0) if images.ndim == 4 else images != 0
    return box_of_mask(mask)


def box_of_mask(mask: np.ndarray) -> Box:
    """The bounding box of a boolean (Z, Y, X) mask; the whole grid when it is empty."""
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(np.any(mask, axis=other))
        if hits.size == 0:
            return [[0, int(n)] for n in mask.shape]
        box.append([int(hits[0]), int(hits[-1]) + 1])
    return box
