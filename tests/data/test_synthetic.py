"""The synthetic BraTS generator: deterministic, BraTS-like, and not trivially separable."""

from __future__ import annotations

import gzip
import hashlib

import nibabel as nib
import numpy as np
import pytest

from pfseg_pipeline.cli.common import run
from pfseg_pipeline.cli.make_synthetic import main
from pfseg_pipeline.data.fields import smooth_noise, upsample_linear
from pfseg_pipeline.data.layouts import MODALITIES, discover
from pfseg_pipeline.data.nifti import read_label, read_volume
from pfseg_pipeline.data.synthetic import make_case, write_dataset

SHAPE_ZYX = (36, 44, 44)
N_CASES = 5


@pytest.fixture(scope="module")
def cases():
    return [make_case(SHAPE_ZYX, (11, k)) for k in range(N_CASES)]


def test_same_seed_same_arrays_and_different_seed_differs():
    a_images, a_seg = make_case((16, 20, 24), (3, 7))
    b_images, b_seg = make_case((16, 20, 24), np.random.default_rng([3, 7]))
    c_images, _ = make_case((16, 20, 24), (3, 8))
    assert np.array_equal(a_seg, b_seg)
    for modality in MODALITIES:
        assert a_images[modality].dtype == np.float32 and a_images[modality].shape == (16, 20, 24)
        assert np.array_equal(a_images[modality], b_images[modality])
    assert not np.array_equal(a_images["t1"], c_images["t1"])


def test_case_k_does_not_depend_on_number_of_cases(synthetic_raw, tmp_path):
    """Case 2 written alone (--start-index 2) is byte-identical to case 2 of a 3-case run."""
    assert run(main, [str(tmp_path / "alone"), "--cases", "1", "--start-index", "2",
                      "--shape", "24", "20", "16"]) == 0
    case = "BraTS20_Training_002"
    for suffix in (*MODALITIES, "seg"):
        name = f"{case}/{case}_{suffix}.nii.gz"
        assert (tmp_path / "alone" / name).read_bytes() == (synthetic_raw / name).read_bytes()


def test_written_files_are_brats_like(synthetic_raw):
    found = discover(synthetic_raw, require_label=True)
    assert found.problems == []
    assert [c.case_id for c in found.cases] == [f"BraTS20_Training_{k:03d}" for k in (1, 2, 3)]
    case = found.cases[0]
    img = nib.load(str(case.images["t1"]))
    assert img.shape == (24, 20, 16) and img.get_data_dtype() == np.int16
    assert nib.aff2axcodes(img.affine) == ("L", "P", "S")
    assert np.allclose(img.header.get_zooms(), 1.0)
    assert int(img.header["qform_code"]) == 1 and int(img.header["sform_code"]) == 1
    seg = nib.load(str(case.label))
    assert seg.get_data_dtype() == np.uint8 and np.allclose(seg.affine, img.affine)
    # the files hold exactly what make_case returns
    images, labels = make_case((16, 20, 24), (0, 1))
    assert np.array_equal(read_volume(case.images["flair"])[0], images["flair"])
    assert np.array_equal(read_label(case.label)[0], labels)


def test_labels_and_zero_background(cases):
    seen = set()
    for images, seg in cases:
        assert seg.dtype == np.uint8
        seen |= set(np.unique(seg).tolist())
        brain = images["t1"] > 0
        for modality in MODALITIES:
            # background exactly 0 in every modality, the same brain everywhere, brain voxels >= 1
            assert np.array_equal(images[modality] > 0, brain)
            assert images[modality].min() == 0
        assert not brain[0].any() and not brain[-1].any() and not brain[:, :, 0].any()
        assert 0.1 < brain.mean() < 0.5
        assert not (seg[~brain] > 0).any()
        assert (seg > 0).any()
    assert seen == {0, 1, 2, 4}


def test_tumour_sizes_vary(cases):
    fractions = [np.count_nonzero(seg) / np.count_nonzero(images["t1"]) for images, seg in cases]
    assert max(fractions) > 3 * min(fractions)


def test_plausible_contrasts(cases):
    for images, seg in cases:
        brain = images["t1"] > 0
        normal = brain & (seg == 0)
        flair, t2, t1ce, t1 = images["flair"], images["t2"], images["t1ce"], images["t1"]
        assert flair[seg == 2].mean() > 1.15 * flair[normal].mean()
        assert np.median(t2[seg == 2]) > 1.15 * np.median(t2[normal])   # CSF lifts the T2 mean
        if (seg == 1).any() and (seg == 4).any():
            assert t1ce[seg == 4].mean() > 1.2 * t1ce[seg == 1].mean()
            assert t1[seg == 1].mean() < np.median(t1[normal])


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / max(1, np.count_nonzero(a) + np.count_nonzero(b))


def test_single_flair_threshold_is_far_from_the_whole_tumour(cases):
    """Even the best threshold per case (an oracle) stays well under Dice 0.9."""
    best = []
    for images, seg in cases:
        flair, brain, whole = images["flair"], images["flair"] > 0, seg > 0
        thresholds = np.quantile(flair[brain], np.linspace(0.3, 0.999, 120))
        best.append(max(_dice(flair > t, whole) for t in thresholds))
    assert max(best) < 0.9, best


def test_case_without_tumour():
    images, seg = make_case((16, 20, 24), (0, 5), tumour_probability=0.0)
    assert not seg.any() and (images["t2"] > 0).any()


def test_smooth_noise_and_upsampling():
    rng = np.random.default_rng(0)
    field = smooth_noise(rng, (20, 30, 40), 8.0)
    assert field.shape == (20, 30, 40) and field.dtype == np.float32
    assert 0.3 < field.std() < 3.0
    # neighbours are strongly correlated (smooth), unlike white noise
    assert np.corrcoef(field[:, :, 1:].ravel(), field[:, :, :-1].ravel())[0, 1] > 0.9
    assert np.allclose(upsample_linear(np.array([0.0, 1.0]), (4,)), [0.0, 0.25, 0.75, 1.0])


def test_cli_refuses_to_overwrite_and_checks_options(tmp_path, capsys):
    out = tmp_path / "syn"
    args = [str(out), "--cases", "1", "--shape", "16", "16", "12"]
    assert run(main, args) == 0
    assert (out / "BraTS20_Training_001" / "BraTS20_Training_001_seg.nii.gz").is_file()
    assert (out / "make_synthetic.log").is_file()
    assert run(main, args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert run(main, [*args, "--overwrite"]) == 0
    assert run(main, [str(out), "--shape", "4", "4", "4"]) == 2
    assert "too small" in capsys.readouterr().err
    assert run(main, [str(out), "--cases", "0"]) == 2
    assert run(main, ["--help"]) == 0
    assert "examples" in capsys.readouterr().out


def test_parallel_writing_gives_the_same_cases(tmp_path):
    serial = write_dataset(tmp_path / "a", 2, (16, 16, 12), seed=4)
    parallel = write_dataset(tmp_path / "b", 2, (16, 16, 12), seed=4, workers=2)
    assert serial == parallel
    for case in serial:
        name = f"{case}/{case}_t1ce.nii.gz"
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


# sha256 of the uncompressed NIfTI bytes of case 3 (seed 5, 24 20 16 voxels), computed on main
# before the anatomy generator was added: the blob generator's output must never change (the
# unit tests and every benchmark so far rest on it). Uncompressed, so that a different zlib
# build cannot fail the test while the voxels and header stay the same.
BLOB_CASE_SHA256 = {
    "flair": "d5f95ad8939f133c081166374569bad2dc8545953eecc594e95041f41e9df726",
    "seg": "7cc1ad1547cf0181d6269e912129bd64a4550beaa5bac1c0abaeabead8516b61",
    "t1": "b46fc210a7dad548e73a5b41d7037963a19a34ff022b8c47fa36254ce49a8d7e",
    "t1ce": "cab4fe0736cc968b850cf1232576dea74c518f2d75f9c7ecb1bb2845fc1c1f7d",
    "t2": "927fbd5297d496fc39ead96c09493c8d8b6c69c3be330e4cf7a2ea97e6f80c2c",
}
NO_TUMOUR_FLAIR_SHA256 = "126bb4d6ab4fc9a473f5c850756b9d300815fc4568ac9289bfb909c41f0e761b"


def _nifti_sha256(path) -> str:
    return hashlib.sha256(gzip.decompress(path.read_bytes())).hexdigest()


def test_blob_output_is_byte_identical_to_the_pinned_files(tmp_path):
    write_dataset(tmp_path / "a", 1, (24, 20, 16), seed=5, start_index=3)
    case = tmp_path / "a" / "BraTS20_Training_003"
    assert {suffix: _nifti_sha256(case / f"BraTS20_Training_003_{suffix}.nii.gz")
            for suffix in BLOB_CASE_SHA256} == BLOB_CASE_SHA256
    write_dataset(tmp_path / "b", 1, (16, 16, 12), seed=9, tumour_probability=0.0)
    flair = tmp_path / "b" / "BraTS20_Training_001" / "BraTS20_Training_001_flair.nii.gz"
    assert _nifti_sha256(flair) == NO_TUMOUR_FLAIR_SHA256
