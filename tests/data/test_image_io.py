"""Image formats: .mha / .nrrd through SimpleITK with LPS <-> RAS at the boundary, 4D NIfTI channels.

The round trips check our conversion against SimpleITK's own reading of the same NIfTI (it
converts to LPS itself), so a sign error in either direction fails.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from pfseg_pipeline.data import image_io
from pfseg_pipeline.data.nifti import make_reference, write_volume
from pfseg_pipeline.errors import UserError

SHAPE_ZYX = (7, 9, 11)


def _oblique_affine(orientation: str, seed: int = 0) -> np.ndarray:
    """A rotated, anisotropic voxel-to-world matrix with LPS- or RAS-like axes."""
    rng = np.random.default_rng(seed)
    rotation = np.linalg.qr(rng.normal(size=(3, 3)))[0] * 0.2 + np.eye(3)
    rotation = np.linalg.qr(rotation)[0]
    rotation = rotation * np.sign(np.diag(rotation))
    signs = {"LPS": [-1, -1, 1], "RAS": [1, 1, 1]}[orientation]
    affine = np.eye(4)
    affine[:3, :3] = np.diag(signs) @ rotation @ np.diag([1.5, 2.0, 3.0])
    affine[:3, 3] = [10.25, -20.5, 5.0]
    return affine


@pytest.fixture(params=["LPS", "RAS"])
def nifti_image(request, tmp_path):
    volume = np.random.default_rng(1).integers(0, 500, SHAPE_ZYX).astype(np.int16)
    path = tmp_path / "scan.nii.gz"
    write_volume(volume, make_reference(SHAPE_ZYX, _oblique_affine(request.param)), path, dtype=np.int16)
    return path, volume


@pytest.mark.parametrize("suffix", [".mha", ".nrrd"])
def test_sitk_formats_read_like_the_nifti_they_came_from(nifti_image, tmp_path, suffix):
    path, volume = nifti_image
    converted = tmp_path / f"scan{suffix}"
    sitk.WriteImage(sitk.ReadImage(str(path)), str(converted))   # SimpleITK's own NIfTI -> LPS
    array, geometry = image_io.read_volume(converted)
    _, nifti_geometry = image_io.read_volume(path)
    assert np.array_equal(array, volume)
    assert geometry.shape_zyx == SHAPE_ZYX
    np.testing.assert_allclose(geometry.affine, nib.load(str(path)).affine, atol=1e-4)
    np.testing.assert_allclose(geometry.spacing_zyx, nifti_geometry.spacing_zyx, atol=1e-6)
    header_geometry, channels = image_io.read_geometry(converted)
    assert channels == 1 and np.allclose(header_geometry.affine, geometry.affine)


@pytest.mark.parametrize("suffix", [".mha", ".nrrd", ".nii.gz"])
def test_label_maps_written_in_any_format_keep_the_reference_grid(nifti_image, tmp_path, suffix):
    path, volume = nifti_image
    labels = (volume % 4).astype(np.uint8)
    mha_reference = tmp_path / "scan_ref.mha"
    sitk.WriteImage(sitk.ReadImage(str(path)), str(mha_reference))
    for reference in (path, mha_reference):
        out = tmp_path / f"labels_from_{reference.name.split('.')[-1]}{suffix}"
        image_io.write_label_map(labels, reference, out)
        written, expected = sitk.ReadImage(str(out)), sitk.ReadImage(str(path))
        assert np.array_equal(sitk.GetArrayFromImage(written), labels)
        assert written.GetPixelID() == sitk.sitkUInt8
        np.testing.assert_allclose(written.GetOrigin(), expected.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(written.GetSpacing(), expected.GetSpacing(), atol=1e-5)
        np.testing.assert_allclose(written.GetDirection(), expected.GetDirection(), atol=1e-5)
        back, geometry = image_io.read_label(out)
        assert np.array_equal(back, labels) and geometry.shape_zyx == SHAPE_ZYX


def test_a_nifti_label_map_on_a_nifti_reference_keeps_its_header_codes(tmp_path):
    reference = make_reference(SHAPE_ZYX, _oblique_affine("LPS"), qform_code=2, sform_code=4)
    write_volume(np.ones(SHAPE_ZYX), reference, tmp_path / "ref.nii.gz")
    image_io.write_label_map(np.zeros(SHAPE_ZYX, np.uint8), tmp_path / "ref.nii.gz", tmp_path / "out.nii")
    header = nib.load(str(tmp_path / "out.nii")).header
    assert (int(header["qform_code"]), int(header["sform_code"])) == (2, 4)


def test_4d_nifti_channels(tmp_path):
    volumes = np.random.default_rng(2).normal(100, 10, (3, *SHAPE_ZYX)).astype(np.float32)
    affine = _oblique_affine("LPS")
    path = tmp_path / "stacked.nii.gz"
    nib.save(nib.Nifti1Image(volumes.transpose(3, 2, 1, 0), affine), str(path))   # (x, y, z, c)
    for k in range(3):
        array, geometry = image_io.read_volume(path, channel=k)
        assert np.allclose(array, volumes[k]) and geometry.shape_zyx == SHAPE_ZYX
    both, _ = image_io.read_channels(path, [2, 0])
    assert np.allclose(both, volumes[[2, 0]])
    assert image_io.read_geometry(path)[1] == 3
    with pytest.raises(UserError, match=r"stacked.nii.gz: has 3 volume\(s\), no channel 3"):
        image_io.read_volume(path, channel=3)
    with pytest.raises(UserError, match="expected a 3D image"):
        image_io.read_volume(path)
    # a label map written against a 4D reference gets its spatial grid
    image_io.write_label_map(np.ones(SHAPE_ZYX, np.uint8), path, tmp_path / "seg.nii.gz")
    seg = nib.load(str(tmp_path / "seg.nii.gz"))
    assert seg.shape == SHAPE_ZYX[::-1] and np.allclose(seg.affine, affine)


def test_image_names():
    assert image_io.strip_image_suffix("a_t1.NRRD") == "a_t1"
    assert image_io.strip_image_suffix(".mha") is None and image_io.strip_image_suffix("a.png") is None
    assert image_io.image_format("x/y.nii") == "nii" and image_io.image_format("y.MHA") == "mha"
    with pytest.raises(UserError, match="not an image file"):
        image_io.image_format("y.png")


def test_nifti_channels_of_a_3d_and_a_5d_file_read_the_same_volumes(tmp_path):
    """Channel 0 of a 3D file is the file; a (x, y, z, c, 1) file stacks its volumes on the 4th
    axis like a 4D one (one channel alone is sliced on that axis, not on the trailing 1)."""
    volumes = np.random.default_rng(3).normal(0, 1, (3, *SHAPE_ZYX))
    single = tmp_path / "single.nii"
    nib.save(nib.Nifti1Image(volumes[0].T.copy(), np.eye(4)), str(single))
    array, _ = image_io.read_channels(single, [0])
    assert array.shape == (1, *SHAPE_ZYX) and array.dtype == np.float32
    assert np.allclose(array[0], volumes[0], atol=1e-6)
    exact, _ = image_io.read_volume(single, dtype=np.float64, channel=0)
    assert exact.dtype == np.float64 and np.array_equal(exact, volumes[0])
    with pytest.raises(UserError, match=r"single.nii: has 1 volume\(s\), no channel 1"):
        image_io.read_channels(single, [0, 1])
    five = tmp_path / "five.nii.gz"
    stacked_xyzc1 = volumes.transpose(3, 2, 1, 0)[..., None].astype(np.float32)
    nib.save(nib.Nifti1Image(stacked_xyzc1, np.eye(4)), str(five))
    for k in range(3):
        array, geometry = image_io.read_volume(five, channel=k)
        assert np.allclose(array, volumes[k], atol=1e-6) and geometry.shape_zyx == SHAPE_ZYX
    both, _ = image_io.read_channels(five, [1, 2])
    assert np.allclose(both, volumes[[1, 2]], atol=1e-6)


def test_a_truncated_4d_nifti_is_one_line_naming_it_for_one_channel_or_several(tmp_path):
    """Slicing nibabel's proxy reads the file: a short file fails there, and must still be a
    UserError naming the file."""
    volumes = np.random.default_rng(4).normal(0, 1, (3, *SHAPE_ZYX)).astype(np.float32)
    whole = tmp_path / "whole.nii"
    nib.save(nib.Nifti1Image(volumes.transpose(3, 2, 1, 0), np.eye(4)), str(whole))
    short = tmp_path / "short.nii"
    short.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(UserError, match="short.nii: "):
        image_io.read_volume(short, channel=2)
    with pytest.raises(UserError, match="short.nii: "):
        image_io.read_channels(short, [0, 2])


@pytest.mark.parametrize("suffix", [".mha", ".nii.gz"])
def test_nan_or_inf_voxels_are_one_line_naming_the_file_in_every_format(tmp_path, suffix):
    volume = np.zeros(SHAPE_ZYX, np.float32)
    volume[3, 4, 5], volume[0, 0, 0] = np.nan, np.inf
    path = tmp_path / f"scan{suffix}"
    image = sitk.GetImageFromArray(volume)     # SimpleITK's arrays are (Z, Y, X)
    sitk.WriteImage(image, str(path))
    for read in (image_io.read_volume, lambda p: image_io.read_channels(p, [0])):
        with pytest.raises(UserError, match=f"{path.name}: contains NaN or Inf voxels"):
            read(path)
    array, _ = image_io.read_volume(path, check_finite=False)   # verify counts them itself
    assert int(np.isnan(array).sum()) == 1 and int(np.isinf(array).sum()) == 1
