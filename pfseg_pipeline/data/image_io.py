"""Image files of any format we read: NIfTI (.nii, .nii.gz) through nibabel, MetaImage (.mha)
and NRRD (.nrrd) through SimpleITK. The one place the rest of the package reads and writes them.

Arrays are (Z, Y, X) (channels first when several: (C, Z, Y, X)); geometry is a
`nifti.Geometry` whose affine is RAS whatever the file stored (`sitk_io` converts LPS at the
boundary). A 4D file holds channels (the MSD's modalities stacked along the 4th axis): reading
one `channel` of it gives a 3D volume on its spatial grid.

A label map is written in the format its output name says, on the grid of a reference image
of any format: NIfTI from a NIfTI reference copies that header exactly (codes and matrices);
every other pairing goes through the reference's `Geometry`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pfseg_pipeline.data import nifti
from pfseg_pipeline.data.nifti import Geometry
from pfseg_pipeline.data.sitk_io import (
    SITK_SUFFIXES,
    read_sitk_channels,
    read_sitk_geometry,
    write_sitk_label_map,
)
from pfseg_pipeline.errors import UserError

IMAGE_SUFFIXES = (*nifti.NIFTI_SUFFIXES, *SITK_SUFFIXES)
OUTPUT_FORMATS = tuple(s.lstrip(".") for s in IMAGE_SUFFIXES)   # nii.gz, nii, mha, nrrd


def strip_image_suffix(name: str) -> str | None:
    """'abc_t1.mha' -> 'abc_t1'; None when the name is not an image file name we read.

    >>> strip_image_suffix("x_flair.nii.gz"), strip_image_suffix("x.nrrd"), strip_image_suffix("x.png")
    ('x_flair', 'x', None)
    """
    lower = name.lower()
    for suffix in IMAGE_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def image_format(path: str | os.PathLike) -> str:
    """'nii.gz', 'nii', 'mha' or 'nrrd'; a UserError naming the file for any other name."""
    lower = Path(path).name.lower()
    for suffix in IMAGE_SUFFIXES:
        if lower.endswith(suffix):
            return suffix.lstrip(".")
    raise UserError(f"{path}: not an image file we read (expected {', '.join(IMAGE_SUFFIXES)})")


def _is_sitk(path: str | os.PathLike) -> bool:
    return image_format(path) in ("mha", "nrrd")


def read_volume(path: str | os.PathLike, dtype=np.float32, check_finite: bool = True,
                channel: int | None = None) -> tuple[np.ndarray, Geometry]:
    """One volume (Z, Y, X) of a 3D file, or `channel` of a 4D one, and its grid (RAS affine)."""
    if not _is_sitk(path):
        return nifti.read_volume(path, dtype=dtype, check_finite=check_finite, channel=channel)
    array, geometry = read_sitk_channels(path, None if channel is None else [channel])
    if channel is None and array.shape[0] != 1:
        raise UserError(f"{path}: expected a 3D image, found {array.shape[0]} volumes")
    if check_finite:
        nifti.require_finite(array, path)
    return array[0].astype(dtype, copy=False), geometry


def read_channels(path: str | os.PathLike, channels: Sequence[int]) -> tuple[np.ndarray, Geometry]:
    """Several volumes of one (4D) file as (C, Z, Y, X) float32, the file read once, and its grid."""
    channels = [int(c) for c in channels]
    if _is_sitk(path):
        array, geometry = read_sitk_channels(path, channels)
        nifti.require_finite(array, path)
        return array, geometry
    return nifti.read_channels(path, channels)


def read_label(path: str | os.PathLike) -> tuple[np.ndarray, Geometry]:
    """A label map as uint8 (Z, Y, X); non-integer or out-of-range values are a UserError."""
    if not _is_sitk(path):
        return nifti.read_label(path)
    array, geometry = read_volume(path)
    return nifti.as_label_map(array, path), geometry


def read_geometry(path: str | os.PathLike) -> tuple[Geometry, int]:
    """The spatial grid of a file (a 4D one's too) and how many volumes it holds; header only."""
    if _is_sitk(path):
        return read_sitk_geometry(path)
    img = nifti.load_header(path)
    return nifti.geometry_of(img, path, stacked=True), nifti.stacked_channels(img)


def write_label_map(labels_zyx: np.ndarray, reference: str | os.PathLike, path: str | os.PathLike) -> None:
    """Write a uint8 label map (Z, Y, X) in the format of `path`'s name, on `reference`'s grid.

    NIfTI on a NIfTI reference: the reference's header (shape, zooms, sform and qform with
    their codes; scl_slope 1, scl_inter 0). Otherwise the reference's `Geometry`: a NIfTI
    gets it as qform and sform (code 1, scanner), an .mha/.nrrd as LPS origin, spacing and
    direction.
    """
    out_format = image_format(path)
    if out_format in ("nii.gz", "nii") and not _is_sitk(reference):
        nifti.write_label_map(labels_zyx, reference, path)
        return
    geometry, _ = read_geometry(reference)
    if out_format in ("nii.gz", "nii"):
        reference_header = nifti.make_reference(geometry.shape_zyx, np.asarray(geometry.affine))
        nifti.write_label_map(labels_zyx, reference_header, path)
    else:
        write_sitk_label_map(labels_zyx, geometry, path)
