"""NIfTI reading and writing that keeps the geometry exactly.

Arrays in memory are (Z, Y, X): the NIfTI storage axes (i, j, k) reversed, as SimpleITK's
GetArrayFromImage returns them. Nothing is ever reoriented: an LPS image stays LPS, and a
label map written for it gets the same shape, zooms, sform and qform (codes and matrices).
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pfseg_pipeline.errors import UserError
from pfseg_pipeline.fileio import atomic_path

if TYPE_CHECKING:
    import nibabel as nib
else:
    class _LazyNibabel:
        """nibabel, imported on first use: modules that need only this module's names (data.layouts,
        and through it the planner) then import with torch and numpy alone, as on the GPU machine."""

        def __getattr__(self, name):
            import nibabel

            return getattr(nibabel, name)

    nib = _LazyNibabel()

NIFTI_SUFFIXES = (".nii.gz", ".nii")
AFFINE_TOLERANCE_MM = 1e-3   # voxel-to-world matrices closer than this are the same grid
_NIFTI1_HEADER_BYTES = 348


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


_GZIP_MAGIC = b"\x1f\x8b"


def file_problem(path: str | os.PathLike) -> str | None:
    """What is wrong with a NIfTI file before parsing it (None when nothing is): missing,
    unreadable, empty, or compressed differently from what its name says. One line naming it."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(4)
    except FileNotFoundError:
        return f"{path}: file not found"
    except OSError as exc:
        return f"{path}: cannot read ({exc.strerror or exc})"
    if size == 0:
        return f"{path}: empty file (0 bytes)"
    gz_name = path.name.lower().endswith(".gz")
    if gz_name and head[:2] != _GZIP_MAGIC:
        hint = " (an uncompressed NIfTI? rename it to .nii)" if _is_nifti_header(head) else ""
        return f"{path}: not gzip-compressed data despite the .gz name{hint}"
    if not gz_name and head[:2] == _GZIP_MAGIC:
        return f"{path}: gzip-compressed data under a .nii name (rename it to .nii.gz)"
    return None


def _is_nifti_header(head: bytes) -> bool:
    """Whether 4 bytes start a NIfTI-1/2 header (sizeof_hdr 348 or 540, either byte order)."""
    return len(head) == 4 and (int.from_bytes(head, "little") in (348, 540)
                               or int.from_bytes(head, "big") in (348, 540))


def load_header(path: str | os.PathLike) -> nib.Nifti1Image:
    """Open a NIfTI lazily (header only); unreadable files raise a `UserError` naming them."""
    path = Path(path)
    problem = file_problem(path)
    if problem:
        raise UserError(problem)
    try:
        img = nib.load(str(path))
    except FileNotFoundError as exc:
        raise UserError(f"{path}: file not found") from exc
    except Exception as exc:  # ImageFileError, gzip errors, zero-byte files ...
        raise UserError(f"{path}: {_truncation(path) or 'unreadable NIfTI'} ({_reason(exc)})") from exc
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise UserError(f"{path}: not a NIfTI image ({type(img).__name__})")
    return img


def geometry_of(img: nib.Nifti1Image, path: str | os.PathLike = "", stacked: bool = False) -> Geometry:
    """The grid of a 3D NIfTI; with `stacked`, the spatial grid of a 4D one (x, y, z, channel),
    the MSD's modalities stacked in one file."""
    # The header's shape, not `img.shape`: a header-only reference (`make_reference`) holds a
    # 1x1x1 placeholder array but declares the real grid in its header.
    full_shape = tuple(int(s) for s in img.header.get_data_shape())
    shape = full_shape
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if stacked and len(shape) == 4:
        shape = shape[:3]
    if len(shape) != 3:
        raise UserError(f"{path}: expected a 3D image, found {len(full_shape)}D shape {full_shape}")
    zooms = img.header.get_zooms()[:3]
    return Geometry(
        shape_zyx=(int(shape[2]), int(shape[1]), int(shape[0])),
        spacing_zyx=(float(zooms[2]), float(zooms[1]), float(zooms[0])),
        affine=tuple(tuple(float(v) for v in row) for row in img.affine),
    )


def read_volume(path: str | os.PathLike, dtype=np.float32, check_finite: bool = True,
                channel: int | None = None) -> tuple[np.ndarray, Geometry]:
    """Read a 3D NIfTI as a (Z, Y, X) array (scaling applied) plus its geometry.

    `channel` picks one volume of a 4D file (x, y, z, channel: the MSD's stacked modalities);
    channel 0 of a 3D file is the file itself. Raises `UserError` naming the file when it is
    unreadable, truncated, not 3D (without `channel`), has no such channel, or (with
    `check_finite`) holds NaN or Inf voxels.
    """
    if channel is not None:
        array, geometry = read_channels(path, [channel], dtype=dtype, check_finite=check_finite)
        return array[0], geometry
    path = Path(path)
    img = load_header(path)
    geometry = geometry_of(img, path)
    data = _data(lambda: img.dataobj, path, dtype).reshape(geometry.shape_zyx[::-1])
    return _checked_zyx(data[None], path, dtype, check_finite)[0], geometry


def read_channels(path: str | os.PathLike, channels: Sequence[int], dtype=np.float32,
                  check_finite: bool = True) -> tuple[np.ndarray, Geometry]:
    """Volumes `channels` of a NIfTI (a 4D one stacks them along its 4th axis; a 3D one is
    channel 0) as (C, Z, Y, X), the file read once, plus its spatial grid. The same errors as
    `read_volume`, and a channel the file does not hold."""
    path = Path(path)
    channels = [int(c) for c in channels]
    img = load_header(path)
    geometry = geometry_of(img, path, stacked=True)
    n_channels = stacked_channels(img)
    bad = [c for c in channels if not 0 <= c < n_channels]
    if bad:
        raise UserError(f"{path}: has {n_channels} volume(s), no channel {bad[0]}")
    x, y, z = geometry.shape_zyx[::-1]
    if len(channels) == 1 and n_channels > 1:   # one volume of a 4D file: read only that one
        data = _data(lambda: img.dataobj[:, :, :, channels[0]], path, dtype).reshape(x, y, z, 1)
    else:
        data = _data(lambda: img.dataobj, path, dtype).reshape(x, y, z, n_channels)[..., channels]
    return _checked_zyx(np.moveaxis(data, -1, 0), path, dtype, check_finite), geometry


def _data(read: Callable[[], Any], path: Path, dtype) -> np.ndarray:
    """The voxels `read()` gives (nibabel's proxy or a slice of it, which reads the file: scaling
    applied) in float64 when asked for, else float32; a truncated or short file is a `UserError`
    naming it."""
    try:
        return np.asarray(read(), dtype=np.float64 if dtype == np.float64 else np.float32)
    except Exception as exc:  # truncated gzip, short file: EOFError, zlib.error, OSError
        raise UserError(f"{path}: {data_error(exc)}") from exc


def require_finite(array: np.ndarray, path: str | os.PathLike) -> None:
    """NaN or Inf voxels in `array` (read from `path`, whatever its format) are a UserError."""
    if not np.isfinite(array).all():
        raise UserError(f"{path}: contains NaN or Inf voxels")


def _checked_zyx(data_cxyz: np.ndarray, path: Path, dtype, check_finite: bool) -> np.ndarray:
    """(C, X, Y, Z) voxels as a contiguous (C, Z, Y, X) array of `dtype`, NaN or Inf refused."""
    if check_finite:
        require_finite(data_cxyz, path)
    array = np.ascontiguousarray(data_cxyz.transpose(0, 3, 2, 1))
    return array if array.dtype == dtype else array.astype(dtype)


def stacked_channels(img: nib.Nifti1Image) -> int:
    """How many volumes a NIfTI stacks along its 4th axis (1 for a 3D file)."""
    shape = img.header.get_data_shape()
    return int(shape[3]) if len(shape) >= 4 else 1


def read_label(path: str | os.PathLike) -> tuple[np.ndarray, Geometry]:
    """Read a label map as uint8 (Z, Y, X); non-integer or out-of-range values are a UserError."""
    array, geometry = read_volume(path, dtype=np.float32)
    return as_label_map(array, path), geometry


def as_label_map(array: np.ndarray, path: str | os.PathLike) -> np.ndarray:
    """Label values read as floats -> uint8; non-integer or out-of-range values are a UserError
    naming the file."""
    rounded = np.rint(array)
    if not np.array_equal(rounded, array):
        raise UserError(f"{path}: label map holds non-integer values")
    if rounded.min() < 0 or rounded.max() > 255:
        raise UserError(f"{path}: label values outside 0..255")
    return rounded.astype(np.uint8)


def write_label_map(labels_zyx: np.ndarray, reference: str | os.PathLike | nib.Nifti1Image,
                    path: str | os.PathLike) -> None:
    """Write a uint8 label map with the reference image's shape, zooms, sform and qform.

    `labels_zyx` is (Z, Y, X); it is stored as (X, Y, Z) like every NIfTI. The header keeps the
    reference's codes and matrices, with scl_slope 1 and scl_inter 0. Written atomically.
    """
    ref = reference if isinstance(reference, nib.Nifti1Image) else load_header(reference)
    ref_geometry = geometry_of(ref, getattr(ref, "get_filename", lambda: "")() or "", stacked=True)
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


def _truncation(path: Path) -> str | None:
    """'truncated file' when a file that failed to parse ends early (a short header, or a gzip
    stream without its end), else None. Only called on the error path: it may read the file."""
    try:
        if path.name.lower().endswith(".gz"):
            with gzip.open(path, "rb") as f:
                size = 0
                while chunk := f.read(1 << 20):
                    size += len(chunk)
        else:
            size = path.stat().st_size
    except EOFError:
        return "truncated file (the gzip stream ends early)"
    except (OSError, zlib.error):
        return None
    if size < _NIFTI1_HEADER_BYTES:
        return f"truncated file ({size} bytes, a NIfTI header needs {_NIFTI1_HEADER_BYTES})"
    return None


def grid_problem(path: Path, geometry: Geometry, ref_path: Path, ref: Geometry, what: str,
                 atol: float = AFFINE_TOLERANCE_MM) -> str | None:
    """One line saying how `path`'s grid differs from `ref_path`'s (shape, else affine beyond
    `atol` mm), or None when they match. Shapes are written x y z, as viewers show them."""
    if geometry.shape_zyx != ref.shape_zyx:
        return (f"{path}: grid differs from {ref_path}: {what} shape {_xyz(geometry.shape_zyx)} vs "
                f"{_xyz(ref.shape_zyx)}")
    difference = float(np.max(np.abs(np.asarray(geometry.affine) - np.asarray(ref.affine))))
    if difference > atol:
        return (f"{path}: grid differs from {ref_path}: {what} affine differs by up to "
                f"{difference:.4g} mm (tolerance {atol:g} mm)")
    return None


def _xyz(shape_zyx: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in reversed(shape_zyx))


def data_error(exc: BaseException) -> str:
    """Why the voxels of a file that parsed could not be read, in words (after the path)."""
    kind = "truncated file" if isinstance(exc, EOFError) else "corrupt or truncated image data"
    return f"{kind} ({_reason(exc)})"


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
