"""MetaImage (.mha) and NRRD (.nrrd) through SimpleITK, with the geometry in NIfTI's terms.

SimpleITK describes a grid in LPS world coordinates (origin, spacing, direction); nibabel, and
therefore `Geometry.affine`, in RAS. The conversion happens here and nowhere else: the RAS
voxel-to-world matrix is `diag(-1, -1, 1) @ [direction @ diag(spacing) | origin]`. Index (i, j, k)
is (x, y, z) in both, and `GetArrayFromImage` returns (Z, Y, X) like our arrays, so no axis moves.
A 4D image (or a multi-component one) is read as channels, like a stacked NIfTI.

SimpleITK is imported inside the functions: modules that only name these functions import with
torch and numpy alone (the GPU machine has no SimpleITK).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pfseg_pipeline.data.nifti import Geometry
from pfseg_pipeline.errors import UserError
from pfseg_pipeline.fileio import atomic_path

SITK_SUFFIXES = (".mha", ".nrrd")
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])   # flips x and y: its own inverse


def geometry_from_lps(shape_zyx, spacing_xyz, origin_lps, direction_lps) -> Geometry:
    """A `Geometry` (RAS affine) from SimpleITK's LPS origin, spacing (x, y, z) and direction
    (9 values, row-major: column c is the world direction of index axis c)."""
    spacing = np.asarray(spacing_xyz, dtype=np.float64)[:3]
    direction = np.asarray(direction_lps, dtype=np.float64).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = LPS_TO_RAS @ direction @ np.diag(spacing)
    affine[:3, 3] = LPS_TO_RAS @ np.asarray(origin_lps, dtype=np.float64)[:3]
    return Geometry(tuple(int(s) for s in shape_zyx), (float(spacing[2]), float(spacing[1]),
                                                        float(spacing[0])),
                    tuple(tuple(float(v) for v in row) for row in affine))


def lps_from_geometry(geometry: Geometry) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """(spacing x y z, origin LPS, direction LPS as 9 row-major values) of a `Geometry`."""
    affine = np.asarray(geometry.affine, dtype=np.float64)
    spacing = np.asarray(geometry.spacing_zyx[::-1], dtype=np.float64)
    direction = LPS_TO_RAS @ affine[:3, :3] / spacing
    origin = LPS_TO_RAS @ affine[:3, 3]
    return (tuple(float(v) for v in spacing), tuple(float(v) for v in origin),
            tuple(float(v) for v in direction.ravel()))


def _read_image(path: Path):
    import SimpleITK as sitk

    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:  # SimpleITK reports every reading failure as RuntimeError
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreadable"
        raise UserError(f"{path}: unreadable image ({reason[:200]})") from exc


def _channels_first(image, path: Path) -> tuple[np.ndarray, Geometry]:
    """The voxels as (C, Z, Y, X) and the spatial grid of an image of 3 or 4 dimensions."""
    import SimpleITK as sitk

    dimension = image.GetDimension()
    if dimension not in (3, 4):
        raise UserError(f"{path}: expected a 3D image, found {dimension}D")
    array = sitk.GetArrayFromImage(image)
    if image.GetNumberOfComponentsPerPixel() > 1:   # vector pixels: (Z, Y, X, C)
        if dimension != 3:
            raise UserError(f"{path}: a 4D image with vector pixels is not supported")
        array = np.moveaxis(array, -1, 0)
    elif dimension == 3:
        array = array[None]
    direction = np.asarray(image.GetDirection(), dtype=np.float64)
    if dimension == 4:   # the 4th axis holds the channels: keep the spatial 3x3 block
        direction = direction.reshape(4, 4)[:3, :3]
    geometry = geometry_from_lps(array.shape[1:], image.GetSpacing(), image.GetOrigin(), direction)
    return array, geometry


def read_sitk_channels(path: str | os.PathLike, channels=None) -> tuple[np.ndarray, Geometry]:
    """Volumes of an .mha/.nrrd as (C, Z, Y, X) float32 (all, or the `channels` listed) and the grid."""
    path = Path(path)
    array, geometry = _channels_first(_read_image(path), path)
    if channels is not None:
        bad = [c for c in channels if not 0 <= c < array.shape[0]]
        if bad:
            raise UserError(f"{path}: has {array.shape[0]} volume(s), no channel {bad[0]}")
        array = array[list(channels)]
    return np.asarray(array, dtype=np.float32), geometry


def read_sitk_geometry(path: str | os.PathLike) -> tuple[Geometry, int]:
    """The spatial grid and the number of channels of an .mha/.nrrd, from its header alone."""
    import SimpleITK as sitk

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise UserError(f"{path}: unreadable image header") from exc
    size, dimension = reader.GetSize(), reader.GetDimension()
    if dimension not in (3, 4):
        raise UserError(f"{path}: expected a 3D image, found {dimension}D")
    direction = np.asarray(reader.GetDirection(), dtype=np.float64)
    if dimension == 4:
        direction = direction.reshape(4, 4)[:3, :3]
    channels = size[3] if dimension == 4 else reader.GetNumberOfComponents()
    geometry = geometry_from_lps(size[:3][::-1], reader.GetSpacing(), reader.GetOrigin(), direction)
    return geometry, int(channels)


def write_sitk_label_map(labels_zyx: np.ndarray, geometry: Geometry, path: str | os.PathLike) -> None:
    """Write a uint8 label map (Z, Y, X) on `geometry`'s grid as .mha or .nrrd (compressed),
    atomically."""
    import SimpleITK as sitk

    labels_zyx = np.asarray(labels_zyx)
    if labels_zyx.shape != tuple(geometry.shape_zyx):
        raise ValueError(f"label map shape {labels_zyx.shape} != reference {geometry.shape_zyx}")
    image = sitk.GetImageFromArray(np.ascontiguousarray(labels_zyx.astype(np.uint8)))
    spacing, origin, direction = lps_from_geometry(geometry)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), True)
