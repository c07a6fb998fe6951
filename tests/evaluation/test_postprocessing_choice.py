"""Choosing the postprocessing on validation predictions: hand-built label maps whose right answer
is known, the folder command, and the fold summary's postprocessed section."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pfseg_pipeline.cli.common import run
from pfseg_pipeline.cli.find_postprocessing import main as find_main
from pfseg_pipeline.data.labels import BRATS2020
from pfseg_pipeline.data.nifti import make_reference, write_label_map
from pfseg_pipeline.errors import UserError
from pfseg_pipeline.evaluation.evaluate import evaluate_folder
from pfseg_pipeline.evaluation.postprocessing import (
    CHOSEN_ON,
    choose_postprocessing,
    find_postprocessing,
    postprocessed_summary,
)
from pfseg_pipeline.fileio import write_json
from pfseg_pipeline.inference.postprocessing import load_postprocessing
from pfseg_pipeline.plans import GuidancePlan, NetworkPlan, PatchPlan, Plans, save_plans

SHAPE = (16, 16, 40)


def lesion(et: tuple[int, int, int] | None = (3, 3, 3), at=(2, 2, 2), size=8) -> np.ndarray:
    """A cube of edema with a core cube inside; an ET block of `et` voxels at the core's corner."""
    seg = np.zeros(SHAPE, np.uint8)
    z, y, x = at
    seg[z:z + size, y:y + size, x:x + size] = 2
    seg[z + 1:z + size - 1, y + 1:y + size - 1, x + 1:x + size - 1] = 1
    if et:
        seg[z + 1:z + 1 + et[0], y + 1:y + 1 + et[1], x + 1:x + 1 + et[2]] = 4
    return seg


def write(folder: Path, case: str, seg: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    affine = np.diag([-spacing[2], -spacing[1], spacing[0], 1.0])
    path = folder / f"{case}.nii.gz"
    write_label_map(seg, make_reference(seg.shape, affine), path)
    return path


def write_pairs(root: Path, pairs: dict[str, tuple[np.ndarray, np.ndarray]], spacing=(1.0, 1.0, 1.0)):
    refs = {c: write(root / "ref", c, r, spacing) for c, (r, _) in pairs.items()}
    preds = {c: write(root / "pred", c, p, spacing) for c, (_, p) in pairs.items()}
    return preds, refs


def far_blob(seg: np.ndarray) -> np.ndarray:
    seg = seg.copy()
    seg[10:14, 10:14, 30:34] = 2                   # 64 voxels of edema, far from the lesion
    return seg


def test_keep_largest_where_a_far_false_positive_goes(tmp_path):
    ref = lesion()
    preds, refs = write_pairs(tmp_path, {f"c{i}": (ref, far_blob(ref)) for i in range(3)})
    choice = choose_postprocessing(preds, refs, BRATS2020, "regions")
    assert choice.postprocessing.keep_largest == ("WT",)     # TC and ET have one component: no gain
    assert choice.postprocessing.small_et_threshold_mm3 == 0.0
    assert choice.raw_dice["WT"] == pytest.approx(2 * 512 / (512 + 576))
    assert choice.postprocessed_dice == {"WT": 1.0, "TC": 1.0, "ET": 1.0}
    wt_step = choice.steps[0]
    assert wt_step["applied"] and wt_step["mean_dice_after"]["WT"] > wt_step["mean_dice_before"]["WT"]
    assert [s["applied"] for s in choice.steps[1:3]] == [False, False]
    assert choice.cases == ["c0", "c1", "c2"]


def test_keep_largest_not_where_it_removes_a_true_lesion(tmp_path):
    two = np.maximum(lesion(), lesion(et=None, at=(6, 6, 28), size=6))   # two true lesions
    pairs = {"c0": (two, two), "c1": (two, two), "c2": (lesion(), far_blob(lesion()))}
    preds, refs = write_pairs(tmp_path, pairs)
    choice = choose_postprocessing(preds, refs, BRATS2020, "regions")
    # WT Dice: on c2 keeping the largest gains 1 - 1024/1088 = 0.059, on c0 and c1 it loses
    # 1 - 1024/1240 = 0.174 each; TC likewise loses the second core on c0 and c1
    before, after = choice.steps[0]["mean_dice_before"]["WT"], choice.steps[0]["mean_dice_after"]["WT"]
    assert after - before == pytest.approx((1 - 1024 / 1088 + 2 * (1024 / 1240 - 1)) / 3)
    assert choice.postprocessing.keep_largest == ()
    assert choice.postprocessed_dice == choice.raw_dice


def _small_et_cases(include_150: bool = True) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    no_et = lesion(et=None)
    pairs = {
        "a_false_80": (no_et, lesion(et=(4, 4, 5))),           # no ET; predicted 80 mm^3
        "b_true_216": (lesion(et=(6, 6, 6)), lesion(et=(6, 6, 6))),   # real ET, predicted exactly
    }
    if include_150:
        pairs["c_false_150"] = (no_et, lesion(et=(5, 5, 6)))   # no ET; predicted 150 mm^3
    return pairs


def test_small_et_threshold_is_the_one_that_maximises_mean_et_dice(tmp_path):
    preds, refs = write_pairs(tmp_path, _small_et_cases())
    choice = choose_postprocessing(preds, refs, BRATS2020, "regions")
    by_threshold = choice.steps[-1]["mean_et_dice_by_threshold_mm3"]
    # 0 and 50 clear nothing (1/3), 100 clears the 80 (2/3), 200 both false ones (1), 500 the true one too
    assert by_threshold == pytest.approx({"0": 1 / 3, "50": 1 / 3, "100": 2 / 3, "200": 1.0, "500": 2 / 3,
                                          "1000": 2 / 3, "2000": 2 / 3, "5000": 2 / 3})
    assert choice.postprocessing.small_et_threshold_mm3 == 200.0
    assert choice.raw_dice["ET"] == pytest.approx(1 / 3) and choice.postprocessed_dice["ET"] == 1.0
    assert choice.postprocessed_dice["TC"] == choice.raw_dice["TC"]   # ET -> necrosis leaves TC alone


def _chosen(pairs, folder, spacing=(1.0, 1.0, 1.0)):
    return choose_postprocessing(*write_pairs(folder, pairs, spacing), BRATS2020, "regions").postprocessing


def test_small_et_threshold_ties_go_to_the_smaller_and_spacing_counts(tmp_path):
    assert _chosen(_small_et_cases(include_150=False), tmp_path / "tie").small_et_threshold_mm3 == 100
    # the same voxels at 2 mm are 8x the volume: 640 and 1728 mm^3; 1000 separates them
    at_2mm = _chosen(_small_et_cases(include_150=False), tmp_path / "2mm", spacing=(2, 2, 2))
    assert at_2mm.small_et_threshold_mm3 == 1000
    # nothing to gain: off
    assert _chosen({"b": _small_et_cases()["b_true_216"]}, tmp_path / "none").is_identity


def test_the_chosen_figures_are_what_applying_it_scores(tmp_path):
    big_et = lesion(et=(6, 6, 6))
    pairs = {**_small_et_cases(), "d_far": (big_et, far_blob(big_et))}
    preds, refs = write_pairs(tmp_path, pairs)
    choice = choose_postprocessing(preds, refs, BRATS2020, "regions", workers=2)
    assert choice.postprocessing.keep_largest == ("WT",)
    assert choice.postprocessing.small_et_threshold_mm3 == 200
    scored = evaluate_folder(None, tmp_path / "pred", scheme=BRATS2020, references=refs, write=False,
                             progress=False, postprocessing=choice.postprocessing)
    for region in ("WT", "TC", "ET"):
        assert scored["summary"][region]["dice"]["mean"] == pytest.approx(choice.postprocessed_dice[region])
    section = postprocessed_summary(tmp_path / "pred", refs, BRATS2020, "regions")
    assert section["note"] == CHOSEN_ON and section["summary"]["ET"]["dice"]["mean"] == 1.0
    assert section["postprocessing"]["keep_largest_component"] == ["WT"]
    assert section["summary"]["WT"]["hd95"]["mean"] == 0.0   # the far blob no longer counts


def test_a_choice_to_change_nothing_reuses_the_raw_figures(tmp_path, monkeypatch):
    import pfseg_pipeline.evaluation.evaluate as evaluate

    preds, refs = write_pairs(tmp_path, {"b": _small_et_cases()["b_true_216"]})   # nothing to gain
    raw = evaluate_folder(None, tmp_path / "pred", scheme=BRATS2020, references=refs, write=False,
                          progress=False)

    def scored_again(*args, **kwargs):
        raise AssertionError("the cases were scored again for an identity postprocessing")

    monkeypatch.setattr(evaluate, "evaluate_folder", scored_again)
    section = postprocessed_summary(tmp_path / "pred", refs, BRATS2020, "regions", raw=raw)
    assert section["postprocessing"]["keep_largest_component"] == []
    assert section["summary"] == raw["summary"] and section["per_case"] == raw["per_case"]
    with pytest.raises(AssertionError, match="scored again"):      # without the raw figures: scored
        postprocessed_summary(tmp_path / "pred", refs, BRATS2020, "regions")


def _plans(target: str = "regions") -> Plans:
    plans = Plans(dataset_name="Tiny", modalities=["t1"], label_scheme=BRATS2020.to_json(),
                  hr_shape_zyx=[16, 16, 16], target_spacing_zyx=[1.0, 1.0, 1.0], target=target,
                  guidance=GuidancePlan([4, 4, 4], "center"), network=NetworkPlan([4, 8, 8], [4, 8], 4),
                  patch_based=PatchPlan([8, 8, 8]))
    plans.validate()
    return plans


@pytest.fixture
def results(tmp_path):
    """results/Tiny/pfseg: folds 0 and 1 with validation predictions, fold_paper with test ones."""
    net = tmp_path / "ws" / "results" / "Tiny" / "pfseg"
    save_plans(_plans(), net / "plans.json")
    big = lesion(et=(6, 6, 6))                     # 216 mm^3 of ET
    folds = {"0": {"a": (big, far_blob(big)), "b": (big, big)},
             "1": {"c": (lesion(et=None), lesion(et=(2, 2, 2)))}, "paper": {"t": (lesion(), lesion())}}
    entries = []
    for fold, pairs in folds.items():
        val = net / f"fold_{fold}" / "validation"
        for case, (ref, pred) in pairs.items():
            entries.append({"case": case, "label": str(write(tmp_path / "raw", case, ref))})
            write(val, case, pred)
        write_json(val / "summary.json", {"per_case": [{"case": c} for c in pairs], "missing": [],
                                          "cases_from": "test" if fold == "paper" else "validation"})
    write_json(net / "dataset.json", {"name": "Tiny", "cases": entries})
    return net


def test_find_postprocessing_pools_the_validation_folds(results):
    assert run(find_main, ["Tiny", "--network", "pfseg", "--workspace", str(results.parents[2]),
                           "--no-progress"]) == 0
    written = json.loads((results / "postprocessing.json").read_text())
    assert written["version"] == 1 and written["network"] == "pfseg" and written["dataset"] == "Tiny"
    assert written["chosen_on"]["folds"] == ["0", "1"] and written["chosen_on"]["n_cases"] == 3
    assert written["chosen_on"]["cases"] == ["a", "b", "c"] and written["chosen_on"]["note"] == CHOSEN_ON
    assert written["keep_largest_component"] == ["WT"]
    assert written["small_et"]["threshold_mm3"] == 50.0  # clears c's 8 mm^3 of false ET (ties: smallest)
    raw, post = written["mean_dice"]["raw"], written["mean_dice"]["postprocessed"]
    assert raw["ET"] == pytest.approx(2 / 3) and post["ET"] == 1.0 and post["WT"] == 1.0 > raw["WT"]
    assert load_postprocessing(results / "postprocessing.json", "regions").keep_largest == ("WT",)


def test_find_postprocessing_refuses_test_cases_and_missing_folds(results, capsys):
    with pytest.raises(UserError, match="fold paper scored test cases; postprocessing is chosen on"):
        find_postprocessing(results, ["paper"])
    choice, _ = find_postprocessing(results, ["1"], progress=False)
    assert choice.cases == ["c"] and choice.folds == ["1"]
    ws = str(results.parents[2])
    assert run(find_main, ["Tiny", "--network", "pfseg", "-f", "3", "--workspace", ws]) == 2
    err = capsys.readouterr().err
    assert "fold_3/validation/summary.json: file not found" in err and len(err.strip().splitlines()) == 1
    assert run(find_main, ["Tiny", "--network", "resunet3d", "--workspace", ws]) == 2
    assert "no such results folder" in capsys.readouterr().err


def test_find_postprocessing_reads_predictions_in_their_own_format(results, tmp_path):
    """A dataset of .mha scans has .mha validation predictions (pfseg_predict writes each case in
    its input's format): they are found and read as the NIfTI ones are, with the same choice."""
    from pfseg_pipeline.data import image_io
    from pfseg_pipeline.fileio import read_json

    expected = find_postprocessing(results, progress=False)[0].to_json()
    for path in [*results.glob("fold_*/validation/*.nii.gz"), *(tmp_path / "raw").glob("*.nii.gz")]:
        mha = path.with_name(path.name[:-len(".nii.gz")] + ".mha")
        image_io.write_label_map(image_io.read_label(path)[0], path, mha)
        path.unlink()
    dataset = read_json(results / "dataset.json")
    for entry in dataset["cases"]:
        entry["label"] = entry["label"][:-len(".nii.gz")] + ".mha"
    write_json(results / "dataset.json", dataset)
    choice, _ = find_postprocessing(results, progress=False)
    assert choice.cases == ["a", "b", "c"] and choice.to_json() == expected
