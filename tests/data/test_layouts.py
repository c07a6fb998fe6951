"""Finding cases: BraTS folders at any depth, flat folders, nnU-Net raw; pairing by case id."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from pfseg_pipeline.data.labels import BRATS2023
from pfseg_pipeline.data.layouts import MODALITIES, discover
from pfseg_pipeline.errors import UserError


def _nifti(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), np.int16), np.eye(4)), str(path))
    return path


def _brats_case(folder: Path, case_id: str, ext: str = ".nii.gz", label: bool = True,
                modalities=MODALITIES) -> None:
    for i, modality in enumerate(modalities):
        # mix the two endings inside one case when asked for "mixed"
        e = (".nii" if i % 2 else ".nii.gz") if ext == "mixed" else ext
        _nifti(folder / case_id / f"{case_id}_{modality}{e}")
    if label:
        _nifti(folder / case_id / f"{case_id}_seg{'.nii' if ext == 'mixed' else ext}")


def test_brats_layout_at_depth_with_odd_paths_and_extra_files(tmp_path):
    root = tmp_path / "dir with spaces" / "Ünïcødé données"
    _brats_case(root / "MICCAI_BraTS2020" / "train" / "HGG", "BraTS20_Training_001", ext="mixed")
    _brats_case(root / "MICCAI_BraTS2020" / "LGG", "BraTS20_Training_002", ext=".nii")
    _brats_case(root, "Patient é 3")
    (root / "README.txt").write_text("notes")
    (root / ".DS_Store").write_bytes(b"\0")
    (root / "MICCAI_BraTS2020" / "name_mapping.csv").write_text("a,b\n")
    (root / "Patient é 3" / "thumbnail.png").write_bytes(b"\x89PNG")
    found = discover(root, require_label=True)
    assert found.problems == []
    assert found.layout == "brats"
    assert [c.case_id for c in found.cases] == ["BraTS20_Training_001", "BraTS20_Training_002", "Patient é 3"]
    for case in found.cases:
        assert list(case.images) == list(MODALITIES)
        for modality, path in case.images.items():
            assert path.is_file() and path.name.startswith(f"{case.case_id}_{modality}.nii")
        assert case.label.name.startswith(f"{case.case_id}_seg.nii")
    assert found.cases[0].images["t1ce"].suffix == ".nii"


def test_flat_folder_named_and_numbered(tmp_path):
    for modality in MODALITIES:
        _nifti(tmp_path / "flat" / f"caseA_{modality}.nii.gz")
    for k in range(4):
        _nifti(tmp_path / "flat" / f"caseB_{k:04d}.nii")
    found = discover(tmp_path / "flat")
    assert found.problems == []
    assert [c.case_id for c in found.cases] == ["caseA", "caseB"]
    assert found.cases[1].images["flair"].name == "caseB_0003.nii"
    assert all(c.label is None for c in found.cases)


def test_brats2023_names(tmp_path):
    case = "BraTS-GLI-00000-000"
    for suffix in ("t1n", "t1c", "t2w", "t2f", "seg"):
        _nifti(tmp_path / case / f"{case}-{suffix}.nii.gz")
    found = discover(tmp_path, require_label=True)
    assert found.problems == []
    (c,) = found.cases
    assert c.images["t1ce"].name == f"{case}-t1c.nii.gz" and c.images["flair"].name == f"{case}-t2f.nii.gz"


def test_pairing_by_case_id_not_sorted_position(tmp_path):
    # case 1 has no label, case 2 has one: pairing by position would give case 1 the label of 2
    _brats_case(tmp_path, "BraTS20_Training_001", label=False)
    _brats_case(tmp_path, "BraTS20_Training_002")
    found = discover(tmp_path, require_label=False)
    by_id = {c.case_id: c for c in found.cases}
    assert by_id["BraTS20_Training_001"].label is None
    assert by_id["BraTS20_Training_002"].label.name == "BraTS20_Training_002_seg.nii.gz"
    strict = discover(tmp_path, require_label=True)
    assert [c.case_id for c in strict.cases] == ["BraTS20_Training_002"]
    assert len(strict.problems) == 1 and "BraTS20_Training_001" in strict.problems[0]
    assert "missing label" in strict.problems[0]


def _nnunet(root: Path, labels: dict | None = None, label_cases=("case_002",)) -> None:
    dataset = {"channel_names": {"0": "T1", "1": "T1ce", "2": "T2", "3": "FLAIR"},
               "labels": labels or {"background": 0, "NCR": 1, "ED": 2, "ET": 4},
               "numTraining": 2, "file_ending": ".nii.gz"}
    root.mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps(dataset))
    for case in ("case_001", "case_002"):
        for k in range(4):
            _nifti(root / "imagesTr" / f"{case}_{k:04d}.nii.gz")
    for case in label_cases:
        _nifti(root / "labelsTr" / f"{case}.nii.gz")


def test_nnunet_raw_layout_pairs_by_id(tmp_path):
    _nnunet(tmp_path / "Dataset001")
    found = discover(tmp_path / "Dataset001", require_label=True)
    assert found.layout == "nnunet"
    assert [c.case_id for c in found.cases] == ["case_002"]
    (case,) = found.cases
    assert case.label.name == "case_002.nii.gz"
    assert case.images["t2"].name == "case_002_0002.nii.gz"
    assert len(found.problems) == 1 and "case_001" in found.problems[0]
    assert found.label_scheme.values == (0, 1, 2, 4)


def test_nnunet_dataset_json_declares_2023_labels(tmp_path):
    _nnunet(tmp_path / "D", labels={"background": 0, "NETC": 1, "SNFH": 2, "ET": 3},
            label_cases=("case_001", "case_002"))
    found = discover(tmp_path / "D", require_label=True)
    assert found.problems == [] and found.label_scheme == BRATS2023


def test_exclude_removes_case_and_its_problems(tmp_path):
    _brats_case(tmp_path, "BraTS20_Training_001")
    _brats_case(tmp_path, "BraTS20_Training_355", label=False)
    _nifti(tmp_path / "BraTS20_Training_355" / "W39_1998.09.19_Segm.nii")
    bad = discover(tmp_path, require_label=True)
    assert len(bad.problems) == 1 and "W39_1998.09.19_Segm.nii" in bad.problems[0]
    found = discover(tmp_path, require_label=True, exclude=("BraTS20_Training_355",))
    assert found.problems == []
    assert [c.case_id for c in found.cases] == ["BraTS20_Training_001"]
    typo = discover(tmp_path, require_label=True, exclude=("BraTS20_Training_999",))
    assert any("BraTS20_Training_999" in p and "not there" in p for p in typo.problems)


def test_exclude_of_label_without_images(tmp_path):
    _brats_case(tmp_path, "BraTS20_Training_001")
    _nifti(tmp_path / "stray" / "BraTS20_Training_002_seg.nii.gz")
    assert len(discover(tmp_path, require_label=True).problems) == 1
    found = discover(tmp_path, require_label=True, exclude=("BraTS20_Training_002",))
    assert found.problems == []


def test_duplicate_case_ids_are_reported_with_both_paths(tmp_path):
    _brats_case(tmp_path / "a", "BraTS20_Training_001")
    _brats_case(tmp_path / "b", "BraTS20_Training_001")
    found = discover(tmp_path, require_label=True)
    assert found.cases == []
    assert found.problems and all("duplicate case id" in p for p in found.problems)
    assert str(tmp_path / "a") in found.problems[0] and str(tmp_path / "b") in found.problems[0]


def test_bad_roots_and_options(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        discover(tmp_path / "nope")
    with pytest.raises(UserError, match="unknown modality"):
        discover(tmp_path, modalities=("t1", "dwi"))
    found = discover(tmp_path)
    assert found.cases == [] and "no cases found" in found.problems[0]


def test_exclude_matches_whole_case_ids_only(tmp_path):
    _brats_case(tmp_path, "case1")
    _brats_case(tmp_path, "case1_b", label=False)
    _nifti(tmp_path / "strays" / "case1_c_seg.nii.gz")   # a label without images
    found = discover(tmp_path, require_label=True, exclude=("case1",))
    assert found.cases == []
    assert len(found.problems) == 2
    assert any("case1_b" in p for p in found.problems) and any("case1_c" in p for p in found.problems)


def test_two_files_of_one_kind_in_one_folder(tmp_path):
    _brats_case(tmp_path, "case1")
    _nifti(tmp_path / "case1" / "case1_t2.nii")
    (line,) = discover(tmp_path, require_label=True).problems
    assert "case1_t2.nii and case1_t2.nii.gz" in line


# ---- the MSD BrainTumour task: 4D images, labels by name --------------------------------------------
@pytest.mark.parametrize("form", ["v1", "v2"])
def test_msd_data_reads_like_the_brats_cases_it_came_from(synthetic_raw, tmp_path, form):
    from pfseg_pipeline.data.case_reader import read_case
    from pfseg_pipeline.data.labels import BRATS2020, MSD, labels_to_regions
    from pfseg_pipeline.data.verify import verify_dataset
    from tests.msd_data import write_msd_dataset

    ids = write_msd_dataset(synthetic_raw, tmp_path / "Task01_BrainTumour", form)
    found = discover(tmp_path / "Task01_BrainTumour", require_label=True)
    assert [c.case_id for c in found.cases] == ids and found.problems == [] and found.label_scheme is MSD
    if form == "v1":
        assert found.cases[0].channels == {"t1": 1, "t1ce": 2, "t2": 3, "flair": 0}
        assert len({p for p in found.cases[0].images.values()}) == 1
    brats = {c.case_id: c for c in discover(synthetic_raw, require_label=True).cases}
    for case in found.cases:
        images, seg, _ = read_case(case, list(MODALITIES))
        brats_images, brats_seg, _ = read_case(brats[case.case_id], list(MODALITIES))
        assert np.array_equal(images, brats_images)     # channels in our order, whatever the file's
        assert np.array_equal(labels_to_regions(seg, MSD), labels_to_regions(brats_seg, BRATS2020))
    report = verify_dataset(tmp_path / "Task01_BrainTumour")
    assert report.ok and report.label_scheme is MSD


def test_a_4d_file_without_the_channel_dataset_json_names_is_one_problem(tmp_path):
    from pfseg_pipeline.data.verify import verify_dataset

    root = tmp_path / "msd"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    nib.save(nib.Nifti1Image(np.ones((4, 5, 6, 3), np.int16), np.eye(4)), root / "imagesTr" / "c1.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6), np.uint8), np.eye(4)), root / "labelsTr" / "c1.nii.gz")
    (root / "dataset.json").write_text(json.dumps({
        "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
        "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"}}))
    (line,) = verify_dataset(root).problems
    assert line == f"{root / 'imagesTr' / 'c1.nii.gz'}: has 3 volume(s), no channel 3 (t2)"
