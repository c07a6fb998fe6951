"""The MSD BrainTumour task in both forms trains and scores with its labels read by name.

The MSD's labels are 1 edema, 2 non-enhancing tumour, 3 enhancing tumour: TC must be 2 + 3 and WT
1 + 2 + 3 (read by their numbers alone they would look like BraTS 2023's, where 1 is the core).
Both forms are built from the tiny synthetic BraTS cases (tests/msd_data.py): the MSD's v1 with
4D images, and nnU-Net v2's conversion with 3D channel files.
"""

import json

import numpy as np
import pytest

from pfseg_pipeline.cli.common import run
from pfseg_pipeline.cli.evaluate import main as evaluate_main
from pfseg_pipeline.cli.plan_and_preprocess import main as plan_main
from pfseg_pipeline.cli.predict import main as predict_main
from pfseg_pipeline.cli.train import main as train_main
from pfseg_pipeline.data.labels import BRATS2020, MSD, labels_to_regions
from pfseg_pipeline.data.layouts import discover
from pfseg_pipeline.data.nifti import read_label, write_label_map
from pfseg_pipeline.fileio import load_npz
from tests.msd_data import write_msd_dataset


def _cli(main, *args):
    return run(main, [str(a) for a in args])


@pytest.mark.slow
@pytest.mark.parametrize("form", ["v1", "v2"])
def test_msd_trains_and_scores_with_tc_core_plus_enhancing(synthetic_raw, tmp_path, form):
    raw, ws = tmp_path / "Task01_BrainTumour", tmp_path / "ws"
    ids = write_msd_dataset(synthetic_raw, raw, form)
    assert _cli(plan_main, "-i", raw, "-d", "MSD", "--preset", "demo", "-np", "1", "--workspace", ws) == 0
    preprocessed = ws / "preprocessed" / "MSD"
    assert json.loads((preprocessed / "dataset.json").read_text())["label_scheme"]["name"] == "msd"
    # the training targets: each cached case's regions hold as many voxels as the BraTS source's
    brats = {c.case_id: c for c in discover(synthetic_raw, require_label=True).cases}
    for case_id in ids:
        cached = labels_to_regions(load_npz(preprocessed / "cases" / f"{case_id}.npz")["seg"], MSD)
        source = labels_to_regions(read_label(brats[case_id].label)[0], BRATS2020)
        assert cached.reshape(3, -1).sum(axis=1).tolist() == source.reshape(3, -1).sum(axis=1).tolist()

    assert _cli(train_main, "MSD", "0", "--epochs", "1", "--iterations-per-epoch", "2", "--num-workers", "0",
                "--device", "cpu", "--no-progress", "--workspace", ws) == 0
    validation = ws / "results" / "MSD" / "pfseg" / "fold_0" / "validation"
    summary = json.loads((validation / "summary.json").read_text())
    assert summary["label_scheme"] == "msd" and summary["region_keys"] == {"WT": "(1, 2, 3)", "TC": "(2, 3)",
                                                                           "ET": "(3,)"}
    assert json.loads((validation / "label_scheme.json").read_text())["label_scheme"]["name"] == "msd"

    # predicting the MSD folder itself, and scoring it against its own labels
    pred = tmp_path / "pred"
    assert _cli(predict_main, "-i", raw, "-o", pred, "-d", "MSD", "--workspace", ws, "--device", "cpu",
                "--no-progress") == 0
    assert sorted(p.name for p in pred.glob("*.nii.gz")) == [f"{c}.nii.gz" for c in ids]
    assert _cli(evaluate_main, "-r", raw, "-p", pred, "-np", "1") == 0

    # non-enhancing tumour predicted as edema: WT and ET untouched, TC loses exactly the label 2 voxels
    crafted = tmp_path / "crafted"
    for case_id in ids:
        seg, _ = read_label(raw / "labelsTr" / f"{case_id}.nii.gz")
        write_label_map(np.where(seg == 2, 1, seg), raw / "labelsTr" / f"{case_id}.nii.gz",
                        crafted / f"{case_id}.nii.gz")
    assert _cli(evaluate_main, "-r", raw, "-p", crafted, "-np", "1") == 0
    scores = {c["case"]: c for c in json.loads((crafted / "summary.json").read_text())["per_case"]}
    cores = []
    for case_id in ids:
        seg, _ = read_label(raw / "labelsTr" / f"{case_id}.nii.gz")
        core, enhancing = np.count_nonzero(seg == 2), np.count_nonzero(seg == 3)
        cores.append(core)
        assert scores[case_id]["WT"]["dice"] == 1.0 and scores[case_id]["ET"]["dice"] == 1.0
        assert scores[case_id]["TC"]["dice"] == pytest.approx(2 * enhancing / (core + 2 * enhancing))
    assert max(cores) > 0     # at least one case with a non-enhancing core, so TC is put to the test


def test_a_label_name_it_cannot_place_is_refused(synthetic_raw, tmp_path, capsys):
    raw = tmp_path / "Task01_BrainTumour"
    write_msd_dataset(synthetic_raw, raw, "v1")
    dataset = json.loads((raw / "dataset.json").read_text())
    dataset["labels"]["3"] = "resection cavity"
    (raw / "dataset.json").write_text(json.dumps(dataset))
    argv = ["-i", raw, "-d", "MSD", "--verify-only", "--workspace", tmp_path / "ws"]
    assert _cli(plan_main, *argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"{raw / 'dataset.json'}: 'labels': cannot tell which tumour class label 3 'resection cavity' is" \
        in line
    assert "--label-scheme brats2020|brats2023|msd" in line
    assert _cli(plan_main, *argv, "--label-scheme", "msd") == 0
    # numbers that contradict a declared scheme: the names say 1 is edema, brats2023 says core
    assert _cli(plan_main, *argv[:-2], "--workspace", tmp_path / "ws", "--label-scheme", "brats2023") == 2
    assert "but --label-scheme brats2023 makes 1 necrotic / non-enhancing core" in capsys.readouterr().err
