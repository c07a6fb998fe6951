"""NIfTI reading and writing that keeps the geometry exactly.

Arrays in memory are (Z, Y, X): the NIfTI storage axes (i, j, k) reversed, as SimpleITK's
GetArrayFromImage returns them. Nothing is ever reoriented: an LPS image stays LPS, and a
label map written for it gets the same shape, zooms, sform and qform (codes and matrices).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from pfseg_pipeline.errors import UserError
from pfseg_pipeline.fileio import atomic_path

NIFTI_SUFFIXES = (".nii.gz", ".nii")


@dataclass(frozen=True)
class Geometry:
    """Where a volume lies in space; everything needed to write a matching NIfTI."""

    shape_zyx: tuple[int, int, int]
    spacing_zyx: tuple[float, float, float]
    affine: tuple[tuple[float, ...], ...]  # the 4x4 voxel (i, j, k) -> world matrix nibabel reports

    def to_json(self) -> dict:
        return {"shape_zyx": list(self.shape_zyx), "spacing_zyx": list(self.spacing_zyx),
                "affine": [list(r) for r in self.affine]}

    @classmethod
    def from_json(cls, d: dict) -> Geometry:
        return cls(tuple(int(v) for v in d["shape_zyx"]), tuple(float(v) for v in d["spacing_zyx"]),
                   tuple(tuple(float(v) for v in row) for row in d["affine"]))

    def same_grid(self, other: Geometry, atol: float = 1e-3) -> bool:
        """Same shape and (within `atol` mm) the same voxel-to-world matrix."""
        return self.shape_zyx == other.shape_zyx and bool(
            np.allclose(np.asarray(self.affine), np.asarray(other.affine), atol=atol))


def strip_nifti_suffix(name: str) -> str | None:
    """'abc_t1.nii.gz' -> 'abc_t1'; None when the name is not a NIfTI file name."""
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def load_header(path: str | os.PathLike) -> nib.Nifti1Image:
    """Open a NIfTI lazily (header only); unreadable files raise a `UserError` naming them."""
    path = Path(path)
    try:
        img = nib.load(str(path))
    except FileNotFoundError as exc:
        raise UserError(f"{path}: file not found") from exc
    except Exception as exc:  # ImageFileError, gzip errors, zero-byte files ...
        raise UserError(f"{path}: unreadable NIfTI ({_reason(exc)})") from exc
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise UserError(f"{path}: not a NIfTI image ({type(img).__name__})")
    return img


def geometry_of(img: nib.Nifti1Image, path: str | os.PathLike = "") -> Geometry:
    # The header's shape, not `img.shape`: a header-only reference (`make_reference`) holds a
    # 1x1x1 placeholder array but declares the real grid in its header.
    full_shape = tuple(int(s) for s in img.header.get_data_shape())
    shape = full_shape
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != 3:
        raise UserError(f"{path}: expected a 3D image, found {len(full_shape)}D shape {full_shape}")
    zooms = img.header.get_zooms()[:3]
    return Geometry(
        shape_zyx=(int(shape[2]), int(shape[1]), int(shape[0])),
        spacing_zyx=(float(zooms[2]), float(zooms[1]), float(zooms[0])),
        affine=tuple(tuple(float(v) for v in row) for row in img.affine),
    )


def read_volume(path: str | os.PathLike, dtype=np.float32, check_finite: bool = True
                ) -> tuple[np.ndarray, Geometry]:
    """Read a 3D NIfTI as a (Z, Y, X) array (scaling applied) plus its geometry.

    Raises `UserError` naming the file when it is unreadable, truncated, not 3D, or (with
    `check_finite`) holds NaN or Inf voxels.
    """
    path = Path(path)
    img = load_header(path)
    geometry = geometry_of(img, path)
    try:
        data = np.asarray(img.dataobj, dtype=np.float64 if dtype == np.float64 else np.float32)
    except Exception as exc:  # truncated gzip, short file: EOFError, zlib.error, OSError
        raise UserError(f"{path}: unreadable NIfTI data ({_reason(exc)})") from exc
    data = data.reshape(data.shape[:3])
    if check_finite and not np.isfinite(data).all():
        raise UserError(f"{path}: contains NaN or Inf voxels")
    array = np.ascontiguousarray(data.transpose(2, 1, 0))
    return (array if array.dtype == dtype else array.astype(dtype)), geometry


def read_label(path: str | os.PathLike) -> tuple[np.ndarray, Geometry]:
    """Read a label map as uint8 (Z, Y, X); non-integer or out-of-range values are a UserError."""
    array, geometry = read_volume(path, dtype=np.float32)
    rounded = np.rint(array)
    if not np.array_equal(rounded, array):
        raise UserError(f"{path}: label map holds non-integer values")
    if rounded.min() < 0 or rounded.max() > 255:
        raise UserError(f"{path}: label values outside 0..255")
    return rounded.astype(np.uint8), geometry


def write_label_map(labels_zyx: np.ndarray, reference: str | os.PathLike | nib.Nifti1Image,
                    path: str | os.PathLike) -> None:
    """Write a uint8 label map with the reference image's shape, zooms, sform and qform.

    `labels_zyx` is (Z, Y, X); it is stored as (X, Y, Z) like every NIfTI. The header keeps the
    reference's codes and matrices, with scl_slope 1 and scl_inter 0. Written atomically.
    """
    ref = reference if isinstance(reference, nib.Nifti1Image) else load_header(reference)
    ref_geometry = geometry_of(ref, getattr(ref, "get_filename", lambda: "")() or "")
    labels_zyx = np.asarray(labels_zyx)
    if labels_zyx.shape != ref_geometry.shape_zyx:
        raise ValueError(f"label map shape {labels_zyx.shape} != reference {ref_geometry.shape_zyx}")
    data = np.ascontiguousarray(labels_zyx.astype(np.uint8).transpose(2, 1, 0))
    out = _image_like(data, ref)
    with atomic_path(path) as tmp:
        nib.save(out, str(tmp))


def write_volume(array_zyx: np.ndarray, reference: nib.Nifti1Image, path: str | os.PathLike,
                 dtype=np.float32) -> None:
    """Write an image volume on the reference grid (used by the synthetic generator and tests)."""
    data = np.ascontiguousarray(np.asarray(array_zyx).astype(dtype).transpose(2, 1, 0))
    out = _image_like(data, reference)
    with atomic_path(path) as tmp:
        nib.save(out, str(tmp))


def make_reference(shape_zyx: tuple[int, int, int], affine: np.ndarray,
                   qform_code: int = 1, sform_code: int = 1) -> nib.Nifti1Image:
    """An empty header-only image of the given grid, to write new volumes against."""
    shape_xyz = tuple(int(s) for s in reversed(shape_zyx))
    img = nib.Nifti1Image(np.zeros((1, 1, 1), np.uint8), np.asarray(affine, dtype=np.float64))
    img.header.set_data_shape(shape_xyz)
    img.set_qform(np.asarray(affine, dtype=np.float64), code=qform_code)
    img.set_sform(np.asarray(affine, dtype=np.float64), code=sform_code)
    return img


def _image_like(data_xyz: np.ndarray, ref: nib.Nifti1Image) -> nib.Nifti1Image:
    header = ref.header.copy()
    header.set_data_dtype(data_xyz.dtype)
    header.set_data_shape(data_xyz.shape)
    out = nib.Nifti1Image(data_xyz, None, header=header)
    # Copy both matrices and both codes verbatim (the constructor's affine handling could
    # otherwise replace one of them).
    out.set_qform(ref.header.get_qform(), code=int(ref.header["qform_code"]))
    out.set_sform(ref.header.get_sform(), code=int(ref.header["sform_code"]))
    out.header.set_zooms(ref.header.get_zooms()[: data_xyz.ndim])
    out.header["scl_slope"] = 1.0
    out.header["scl_inter"] = 0.0
    return out


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
