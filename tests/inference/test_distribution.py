"""The distribution check at prediction time, on 4 mm anatomy cases (MNI152-based synthetic data).

Untouched held-out cases must pass; T1 and FLAIR swapped, a CT-like image and a 5 mm scan must be
flagged, with one warning line and a flag in the prediction summary.
"""

import json
import logging
import shutil

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from pfseg_pipeline.cli.common import run
from pfseg_pipeline.cli.make_synthetic import main as make_synthetic
from pfseg_pipeline.cli.predict import main as predict_main
from pfseg_pipeline.data.appearance import case_appearance
from pfseg_pipeline.data.case_reader import read_case
from pfseg_pipeline.data.labels import BRATS2020
from pfseg_pipeline.data.layouts import MODALITIES, discover
from pfseg_pipeline.fileio import write_json
from pfseg_pipeline.inference.distribution import TrainingDistribution
from pfseg_pipeline.planners.fingerprint import compute_fingerprint

from .conftest import tiny_plans, write_model_dir

TRAINING_CASES, HELD_OUT_CASES = 6, 4


@pytest.fixture(scope="module")
def anatomy(tmp_path_factory):
    """Training cases (seed 21), held-out cases (seed 22) and the training fingerprint."""
    root = tmp_path_factory.mktemp("anatomy")
    for name, seed, n in (("train", 21, TRAINING_CASES), ("held", 22, HELD_OUT_CASES)):
        assert run(make_synthetic, [str(root / name), "--anatomy", "mni152", "--spacing", "4", "--cases",
                                    str(n), "--seed", str(seed), "-np", "1"]) == 0
    cases = discover(root / "train", require_label=True).cases
    fingerprint = compute_fingerprint(cases, MODALITIES, BRATS2020, workers=1, progress=False)
    return root, fingerprint


def _appearances(root):
    for case in discover(root, require_label=True).cases:
        images, _, geometry = read_case(case, list(MODALITIES))
        yield case.case_id, images, geometry


def test_held_out_cases_pass_and_altered_ones_are_flagged(anatomy):
    root, fingerprint = anatomy
    reference = TrainingDistribution.from_fingerprint(fingerprint)
    assert reference.n_cases == TRAINING_CASES and len(reference.correlation) == 6
    flair, t1 = MODALITIES.index("flair"), MODALITIES.index("t1")
    swap = list(range(4))
    swap[t1], swap[flair] = flair, t1
    for case_id, images, geometry in _appearances(root / "held"):
        spacing = geometry.spacing_zyx
        assert reference.check(case_appearance(images, MODALITIES, spacing)) == [], case_id
        swapped = reference.check(case_appearance(images[swap], MODALITIES, spacing))
        assert swapped and all("contrast" in r for r in swapped), (case_id, swapped)
        # a CT: Hounsfield units, air -1000 around the head, brain 20-45 HU, in every channel
        brain = images[t1] != 0
        tissue = (images[t1] - images[t1][brain].mean()) / images[t1][brain].std()
        hu = np.where(brain, 25 + 10 * tissue, -1000)
        ct = reference.check(case_appearance(np.stack([hu] * 4), MODALITIES, spacing))
        assert any("negative intensities" in r for r in ct) and any("median intensity" in r for r in ct)
        # a 5 mm scan of the same head (nearest neighbour: the same contrasts, another resolution)
        coarse = np.stack([ndimage.zoom(v, 0.8, order=0) for v in images])
        five_mm = [s * n / m for s, n, m in zip(spacing, images.shape[1:], coarse.shape[1:])]
        assert [r.split(" mm")[0] for r in reference.check(case_appearance(coarse, MODALITIES, five_mm))] == \
            [f"spacing {axis} {s:.3g}" for axis, s in zip("zyx", five_mm)]


def test_predict_warns_once_for_the_swapped_case_and_flags_it(anatomy, tmp_path, caplog):
    root, fingerprint = anatomy
    model = tmp_path / "model"
    write_model_dir(model, tiny_plans(modalities=MODALITIES, spacing=(4.0, 4.0, 4.0)), "pfseg")
    write_json(model / "fingerprint.json", fingerprint)
    inputs = tmp_path / "in"
    shutil.copytree(root / "held", inputs)
    swapped = sorted(p.name for p in inputs.iterdir())[1]
    t1, flair = (inputs / swapped / f"{swapped}_{m}.nii.gz" for m in ("t1", "flair"))
    t1.rename(inputs / "tmp.nii.gz")
    flair.rename(t1)
    (inputs / "tmp.nii.gz").rename(flair)
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        assert run(predict_main, ["-i", str(inputs), "-o", str(out), "--model-dir", str(model),
                                  "--device", "cpu", "--no-progress"]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"case {swapped}: unlike the {TRAINING_CASES} training cases (")
    summary = json.loads((out / "timings.json").read_text())
    assert list(summary["out_of_distribution"]) == [swapped]
    flags = {e["case"]: e["out_of_distribution"] for e in summary["per_case"]}
    assert all(bool(reasons) == (case == swapped) for case, reasons in flags.items()) and len(flags) == 4
    assert len(list(out.glob("*.nii.gz"))) == HELD_OUT_CASES      # flagged, still predicted
    assert nib.load(out / f"{swapped}.nii.gz").shape == nib.load(t1).shape
