"""NIfTI I/O keeps the geometry exactly and maps (z, y, x) arrays to NIfTI (x, y, z) voxels."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from pfseg_pipeline.data.nifti import (
    Geometry,
    make_reference,
    read_label,
    read_volume,
    write_label_map,
    write_volume,
)
from pfseg_pipeline.errors import UserError

SHAPE_XYZ = (7, 6, 5)


def _rotation(ax: float, az: float) -> np.ndarray:
    cx, sx, cz, sz = np.cos(ax), np.sin(ax), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ rx


def _oblique_reference(tmp_path):
    """An int16 image with an oblique LPS qform (code 1) and a different sform (code 2)."""
    zooms = np.array([0.9, 1.1, 2.5])
    qform = np.eye(4)
    qform[:3, :3] = _rotation(0.17, 0.35) @ np.diag([-1.0, -1.0, 1.0]) @ np.diag(zooms)
    qform[:3, 3] = [12.5, -30.25, 7.0]
    sform = qform.copy()
    sform[:3, 3] += [0.5, -0.25, 1.0]
    data = np.arange(np.prod(SHAPE_XYZ), dtype=np.int16).reshape(SHAPE_XYZ)
    img = nib.Nifti1Image(data, None)
    img.set_qform(qform, code=1)
    img.set_sform(sform, code=2)
    img.header.set_zooms(tuple(zooms))
    path = tmp_path / "oblique image.nii.gz"
    nib.save(img, str(path))
    return path, qform, sform, zooms


def _raw_header(path) -> nib.Nifti1Header:
    """The header as stored in the file (nibabel's loaded header resets the scaling fields)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        return nib.Nifti1Header.from_fileobj(f)


def test_label_map_keeps_oblique_geometry_and_axis_order(tmp_path):
    ref_path, qform, sform, zooms = _oblique_reference(tmp_path)
    rng = np.random.default_rng(0)
    labels_zyx = rng.choice(np.array([0, 1, 2, 4], np.uint8), size=SHAPE_XYZ[::-1])
    out = tmp_path / "out" / "label.nii.gz"
    write_label_map(labels_zyx, ref_path, out)

    ref, img = nib.load(str(ref_path)), nib.load(str(out))
    assert img.shape == SHAPE_XYZ
    assert np.allclose(img.header.get_zooms(), zooms)
    got_q, q_code = img.header.get_qform(coded=True)
    got_s, s_code = img.header.get_sform(coded=True)
    assert (int(q_code), int(s_code)) == (1, 2)
    assert np.allclose(got_q, ref.header.get_qform(), atol=1e-5)
    assert np.allclose(got_q, qform, atol=1e-4)
    assert np.allclose(got_s, sform, atol=1e-5)
    assert img.get_data_dtype() == np.uint8
    raw = _raw_header(out)
    assert float(raw["scl_slope"]) == 1.0 and float(raw["scl_inter"]) == 0.0
    stored = np.asanyarray(img.dataobj)
    assert stored.dtype == np.uint8
    # array index (z, y, x) is NIfTI voxel (x, y, z), everywhere
    assert np.array_equal(stored, labels_zyx.transpose(2, 1, 0))
    z, y, x = 4, 1, 6
    assert stored[x, y, z] == labels_zyx[z, y, x]

    back, geometry = read_label(out)
    assert back.dtype == np.uint8 and np.array_equal(back, labels_zyx)
    _, ref_geometry = read_volume(ref_path)
    assert geometry.same_grid(ref_geometry, atol=1e-6)
    assert geometry.spacing_zyx == pytest.approx(tuple(zooms[::-1]))
    assert Geometry.from_json(geometry.to_json()) == geometry


def test_read_volume_returns_zyx_and_applies_scaling(tmp_path):
    data_xyz = np.arange(np.prod(SHAPE_XYZ), dtype=np.int16).reshape(SHAPE_XYZ)
    img = nib.Nifti1Image(data_xyz, np.diag([-1.0, -1.0, 2.0, 1.0]))
    img.header.set_slope_inter(0.5, 10.0)
    path = tmp_path / "scaled.nii"
    nib.save(img, str(path))
    array, geometry = read_volume(path)
    assert array.dtype == np.float32 and array.shape == SHAPE_XYZ[::-1]
    assert geometry.shape_zyx == SHAPE_XYZ[::-1] and geometry.spacing_zyx == (2.0, 1.0, 1.0)
    assert array[3, 2, 1] == pytest.approx(data_xyz[1, 2, 3] * 0.5 + 10.0)


def test_header_only_reference_writes_its_declared_grid(tmp_path):
    """make_reference holds a 1x1x1 placeholder array: writers must use the header's shape."""
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    ref = make_reference(SHAPE_XYZ[::-1], affine)
    image = np.random.default_rng(1).integers(0, 500, SHAPE_XYZ[::-1]).astype(np.float32)
    write_volume(image, ref, tmp_path / "img.nii.gz", dtype=np.int16)
    write_label_map((image > 250).astype(np.uint8), ref, tmp_path / "seg.nii.gz")
    back, geometry = read_volume(tmp_path / "img.nii.gz")
    assert np.array_equal(back, image)
    assert geometry.shape_zyx == SHAPE_XYZ[::-1]
    assert np.allclose(geometry.affine, affine)
    labels, _ = read_label(tmp_path / "seg.nii.gz")
    assert np.array_equal(labels, image > 250)


def test_label_map_of_wrong_shape_is_refused(tmp_path):
    ref = make_reference(SHAPE_XYZ[::-1], np.eye(4))
    with pytest.raises(ValueError, match="shape"):
        write_label_map(np.zeros(SHAPE_XYZ, np.uint8), ref, tmp_path / "seg.nii.gz")


def test_unreadable_files_name_the_file(tmp_path):
    empty = tmp_path / "empty.nii.gz"
    empty.write_bytes(b"")
    with pytest.raises(UserError, match="empty.nii.gz"):
        read_volume(empty)
    with pytest.raises(UserError, match="not found"):
        read_volume(tmp_path / "missing.nii.gz")
