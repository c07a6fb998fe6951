"""Verification: one test per kind of problem, each naming the offending file; odd but valid
inputs pass; the CLI's --verify-only lists every problem and exits 2."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from pfseg_pipeline.cli.common import run
from pfseg_pipeline.cli.plan_and_preprocess import main
from pfseg_pipeline.data.layouts import MODALITIES
from pfseg_pipeline.data.synthetic import make_case
from pfseg_pipeline.data.verify import verify_dataset
from pfseg_pipeline.errors import VerificationError

CASE = "BraTS20_Training_002"   # the case each test breaks; cases 001 and 003 stay good


def _file(root: Path, suffix: str, case: str = CASE) -> Path:
    return root / case / f"{case}_{suffix}.nii.gz"


def _save_like(path: Path, data_xyz: np.ndarray, like: Path, affine: np.ndarray | None = None) -> None:
    """Replace `path` with `data_xyz` on the grid of `like` (or on `affine`)."""
    ref = nib.load(str(like))
    img = nib.Nifti1Image(data_xyz, ref.affine if affine is None else affine)
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    path.unlink(missing_ok=True)
    nib.save(img, str(path))


def _data(path: Path) -> np.ndarray:
    return np.asanyarray(nib.load(str(path)).dataobj)


# Each breaker changes case 002 and returns (the file a problem line must name, words it must
# hold). Files are (x, y, z) = (24, 20, 16).
def _missing_modality(root):
    _file(root, "t1ce").unlink()
    return root / CASE, "missing modality t1ce"


def _missing_label(root):
    _file(root, "seg").unlink()
    return root / CASE, "missing label"


def _misnamed_label(root):
    # BraTS 2020 case 355 in some copies: the label is W39_1998.09.19_Segm.nii
    seg = nib.load(str(_file(root, "seg")))
    nib.save(seg, str(root / CASE / "W39_1998.09.19_Segm.nii"))
    _file(root, "seg").unlink()
    return root / CASE, "found unrecognised W39_1998.09.19_Segm.nii (misnamed label?)"


def _truncated(root):
    path = _file(root, "t2")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path, "truncated"


def _truncated_nii(root):
    gz = _file(root, "t2")
    path = gz.with_suffix("")          # .nii: uncompressed, checked against the header's size
    with gzip.open(gz, "rb") as f:
        raw = f.read()
    gz.unlink()
    path.write_bytes(raw[:-100])
    return path, "truncated file"


def _zero_bytes(root):
    _file(root, "flair").write_bytes(b"")
    return _file(root, "flair"), "empty file"


def _not_gzip(root):
    path = _file(root, "t1")
    with gzip.open(path, "rb") as f:
        raw = f.read()
    path.write_bytes(raw)       # an uncompressed NIfTI under a .nii.gz name
    return path, "not gzip"


def _shapes_differ(root):
    path = _file(root, "t2")
    _save_like(path, np.ones((24, 20, 15), np.int16), _file(root, "t1"))
    return path, "24x20x15"


def _affines_differ(root):
    path, like = _file(root, "t2"), _file(root, "t1")
    affine = nib.load(str(like)).affine.copy()
    affine[0, 3] += 0.5
    _save_like(path, _data(path), like, affine)
    return path, "affine differs"


def _nan_inf(root):
    path = _file(root, "t1")
    data = _data(path).astype(np.float32)
    data[3, 4, 5], data[5, 4, 3] = np.nan, np.inf
    _save_like(path, data, path)
    return path, "2 NaN or Inf"


def _four_d(root):
    path = _file(root, "t1")
    _save_like(path, np.stack([_data(path)] * 2, axis=-1), path)
    return path, "4D"


def _two_d(root):
    path = _file(root, "t1")
    _save_like(path, _data(path)[:, :, 8], path)
    return path, "2D"


def _label_values(root):
    path = _file(root, "seg")
    data = _data(path).copy()
    data[10, 10, 8], data[11, 10, 8] = 3, 5
    _save_like(path, data, path)
    return path, "[3, 5]"


def _label_grid(root):
    path = _file(root, "seg")
    _save_like(path, np.zeros((20, 20, 16), np.uint8), path)
    return path, "label shape 20x20x16"


def _duplicate_case(root):
    shutil.copytree(root / CASE, root / "copy" / CASE)
    return root / "copy" / CASE, "duplicate case id"


def _all_zero(root):
    path = _file(root, "t1ce")
    _save_like(path, np.zeros_like(_data(path)), path)
    return path, "all zero"


BREAKERS = [_missing_modality, _missing_label, _misnamed_label, _truncated, _truncated_nii, _zero_bytes,
            _not_gzip,
            _shapes_differ, _affines_differ, _nan_inf, _four_d, _two_d, _label_values, _label_grid,
            _duplicate_case, _all_zero]


@pytest.mark.parametrize("breaker", BREAKERS, ids=[b.__name__.strip("_") for b in BREAKERS])
def test_each_problem_is_reported_naming_the_file(synthetic_copy, breaker):
    named, words = breaker(synthetic_copy)
    report = verify_dataset(synthetic_copy)
    assert report.problems, "the problem went unnoticed"
    assert any(str(named) in p and words in p for p in report.problems), report.problems
    # the good cases still pass, and only the broken one is left out
    assert [c.case_id for c in report.cases] == ["BraTS20_Training_001", "BraTS20_Training_003"]
    with pytest.raises(VerificationError):
        report.raise_for_problems()


def test_modalities_on_different_grids_name_both_files(synthetic_copy):
    _shapes_differ(synthetic_copy)
    (line,) = verify_dataset(synthetic_copy).problems
    assert str(_file(synthetic_copy, "t2")) in line and str(_file(synthetic_copy, "t1")) in line


def test_odd_but_valid_inputs_pass(synthetic_raw, tmp_path):
    root = Path(shutil.copytree(synthetic_raw, tmp_path / "dir with spaces" / "données ünï"))
    # .nii instead of .nii.gz for a whole case
    for path in (root / "BraTS20_Training_001").glob("*.nii.gz"):
        nib.save(nib.load(str(path)), str(path.with_suffix("")))
        path.unlink()
    # int16 with a scale factor, as some scanners write
    t1 = _file(root, "t1", "BraTS20_Training_003")
    scaled = nib.Nifti1Image(_data(t1).astype(np.int16), nib.load(str(t1)).affine)
    scaled.header.set_slope_inter(0.5, 3.0)
    nib.save(scaled, str(t1))
    # a case without tumour (its label map is all zero) and extra files
    images, seg = make_case((16, 20, 24), (0, 2), tumour_probability=0.0)
    assert not seg.any()
    _save_like(_file(root, "seg"), seg.transpose(2, 1, 0), _file(root, "seg"))
    (root / "README.txt").write_text("synthetic data")
    (root / CASE / "notes.json").write_text("{}")
    (root / ".hidden").mkdir()
    report = verify_dataset(root, workers=2)
    assert report.problems == []
    assert len(report.cases) == 3 and report.ok
    assert report.label_scheme.name == "brats2020"
    assert report.geometries[CASE].shape_zyx == (16, 20, 24)


def test_label_scheme_is_honoured_and_hinted(synthetic_copy):
    path = _file(synthetic_copy, "seg")
    data = _data(path).copy()
    data[data == 4] = 3            # BraTS 2023 enhancing label
    _save_like(path, data, path)
    (line,) = verify_dataset(synthetic_copy).problems
    assert str(path) in line and "[3]" in line and "--label-scheme brats2023" in line
    problems = verify_dataset(synthetic_copy, label_scheme="brats2023").problems
    # now the two untouched cases hold the value 4, which brats2023 does not declare
    assert len(problems) == 2 and all("[4]" in p for p in problems)


def test_modality_subset_only_checks_those(synthetic_copy):
    _file(synthetic_copy, "t1").unlink()
    assert verify_dataset(synthetic_copy, modalities=("t2",)).ok
    assert not verify_dataset(synthetic_copy, modalities=MODALITIES).ok


def test_cli_verify_only(synthetic_copy, capsys):
    args = ["-i", str(synthetic_copy), "-d", "Synth", "--verify-only", "-np", "1"]
    assert run(main, args) == 0
    assert "verified 3 cases: OK" in capsys.readouterr().out
    # break two files in case 002: both problems are listed, one line each, exit 2
    _zero_bytes(synthetic_copy)
    _label_values(synthetic_copy)
    assert run(main, args) == 2
    err = capsys.readouterr().err
    assert str(_file(synthetic_copy, "flair")) in err and str(_file(synthetic_copy, "seg")) in err
    assert "2 problem(s) found" in err
    assert "Traceback" not in err
    assert run(main, [*args, "--exclude", CASE]) == 0
    assert "verified 2 cases: OK" in capsys.readouterr().out


def test_cli_rejects_bad_options_and_has_help(synthetic_raw, tmp_path, capsys):
    args = ["-i", str(synthetic_raw), "-d", "Synth", "--workspace", str(tmp_path)]
    assert run(main, [*args, "--verify-only", "--lr-scale", "2", "2"]) == 2
    assert "--lr-scale" in capsys.readouterr().err
    assert not any(tmp_path.iterdir()), "a refused command must leave nothing behind"
    assert run(main, ["--help"]) == 0
