"""The planner: budget-driven batch and LR scale, the presets, reasons, hand-edited plans."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from pfseg_pipeline.errors import UserError
from pfseg_pipeline.planners import memory
from pfseg_pipeline.planners.budget import GiB
from pfseg_pipeline.planners.planner import DEMO_BATCH_SIZE, plan
from pfseg_pipeline.plans import load_plans, save_plans
from tests.planners.conftest import fake_fingerprint, pfseg_only


def test_default_plan_for_brats_drops_the_branches_before_the_lr_scale_in_11_gb(brats_fingerprint):
    plans = plan(brats_fingerprint, "BraTS", gpu_memory_gb=11)
    peak = plans.memory["predicted_peak_bytes"]["pfseg"]
    print(f"default plan 240x240x155 x4: HR {plans.hr_shape_zyx}, LR scale {plans.lr_scale_zyx}, "
          f"batch {plans.batch_size}, branches {plans.training.pfseg_branches}, guidance "
          f"{plans.guidance.patch_shape_zyx}, baseline patch {plans.patch_based.patch_shape_zyx}, predicted "
          f"PFSeg peak {peak / GiB:.2f} GiB; all: {plans.memory['predicted_peak_gb']}")
    # the whole method is over 11 GiB at scale 1 and 1 mm; the segmentation network alone fits there,
    # so the LR input stays the HR volume
    assert plans.lr_scale_zyx == [1, 1, 1] and plans.batch_size == 1
    assert plans.training.pfseg_branches == "us"
    assert plans.reasons["lr_scale_zyx"].startswith("the whole method's step (SR decoder, SGM) at [1, 1, 1] "
                                                    "needs 14.23 GiB at batch 1, over the 11 GiB budget")
    assert peak <= 11 * GiB
    assert plans.modalities == ["t1", "t1ce", "t2", "flair"] and plans.target == "regions"
    # the brain box of every case fits, and the shape is a multiple of lr_scale * 2**4
    boxes = [c["brain_box_shape_zyx"] for c in brats_fingerprint["cases"]]
    assert all(h >= max(b[i] for b in boxes) for i, h in enumerate(plans.hr_shape_zyx))
    assert all(h % (16 * s) == 0 for h, s in zip(plans.hr_shape_zyx, plans.lr_scale_zyx))
    # the SGM's output (3 poolings) matches the bottleneck (4 poolings of the LR input)
    assert plans.guidance.patch_shape_zyx == [h // (16 * s) * 8 for h, s in zip(plans.hr_shape_zyx,
                                                                                 plans.lr_scale_zyx)]
    assert plans.patch_based.patch_shape_zyx == [h // 2 for h in plans.hr_shape_zyx]
    # the measured recipe (the recipe study's row in the reason), not the paper's Adam 1e-4
    assert plans.training.epochs == 100 and plans.training.lr == 3e-3 and plans.training.optimizer == "adam"
    assert "recipe:c4" in plans.reasons["training.lr"]
    assert plans.training.iterations_per_epoch == 16 // plans.batch_size
    assert "recipe:f1" in plans.reasons["training.iterations_per_epoch"]
    for key in ("target_spacing_zyx", "hr_shape_zyx", "lr_scale_zyx", "batch_size", "guidance",
                "patch_based.patch_shape_zyx", "memory", "small_structures"):
        assert plans.reasons.get(key), key


def test_paper_preset_gives_exactly_the_papers_shapes(brats_fingerprint):
    plans = plan(brats_fingerprint, "Paper", preset="paper", peak_fn=lambda n, p, b: GiB)
    assert plans.modalities == ["t2"] and plans.target == "wt"
    assert plans.hr_shape_zyx == [128, 192, 192]
    assert plans.lr_shape_zyx == [64, 96, 96]
    assert plans.lr_operator == "trilinear" and plans.normalization == "minmax"
    assert plans.guidance.patch_shape_zyx == [32, 48, 48] and plans.guidance.location == "center"
    assert plans.patch_based.patch_shape_zyx == [64, 96, 96] and plans.patch_based.step == 0.5
    assert plans.batch_size == 1 and plans.training.lr == 1e-4     # the paper's, whatever the default's
    assert plans.reasons["training.lr"] == "1e-4, the paper's"
    assert plans.preprocessing["center_crop_zyx"] == [None, 192, 192]
    assert plans.preprocessing["resampled_shape_zyx"] == [128, 192, 192]
    assert plans.target_spacing_zyx == pytest.approx([155 / 128, 1.0, 1.0], rel=1e-5)


def test_smaller_batch_first_then_larger_lr_scale_with_the_real_memory_model():
    """The same, PFSeg's step traced: demo networks on a small dataset; budgets between measured
    peaks (the other networks at a token figure: the rules read PFSeg's)."""
    fp = fake_fingerprint(n_cases=4, shape_zyx=(64, 72, 64), box_zyx=(56, 60, 56), spread=2)
    roomy = plan(fp, "S", preset="demo", gpu_memory_gb=64, peak_fn=pfseg_only)
    assert roomy.lr_scale_zyx == [1, 1, 1] and roomy.batch_size == DEMO_BATCH_SIZE  # the demo's cap
    p1 = memory.predict_peak_bytes("pfseg", roomy, 1).bytes
    p2 = memory.predict_peak_bytes("pfseg", roomy, 2).bytes
    tight = plan(fp, "S", preset="demo", gpu_memory_gb=(p1 + p2) / 2 / GiB, peak_fn=pfseg_only)
    assert tight.batch_size == 1 and tight.lr_scale_zyx == [1, 1, 1]   # the batch goes first
    tighter = plan(fp, "S", preset="demo", gpu_memory_gb=(p1 - 1) / GiB, peak_fn=pfseg_only)
    # then the SR decoder and SGM go, at scale 1
    assert tighter.lr_scale_zyx == [1, 1, 1] and tighter.training.pfseg_branches == "us"
    p1_us = memory.predict_peak_bytes("pfseg", roomy, 1, ablation="us").bytes
    tightest = plan(fp, "S", preset="demo", gpu_memory_gb=(p1_us - 1) / GiB, peak_fn=pfseg_only)
    assert tightest.lr_scale_zyx != [1, 1, 1]  # then the LR input coarsens, axis by axis
    assert tightest.training.pfseg_branches == "us"
    budgets = ((roomy, 64 * GiB), (tight, (p1 + p2) / 2), (tighter, p1 - 1), (tightest, p1_us - 1))
    for plans, budget in budgets:
        assert plans.memory["predicted_peak_bytes"]["pfseg"] <= budget
        assert plans.memory["budget_bytes"] == int(budget) or plans.memory["budget_gb"] == 64
    assert roomy.training.pfseg_branches == tight.training.pfseg_branches == "full"


def test_lr_scale_override_and_small_structure_warning(caplog):
    fp = fake_fingerprint(n_cases=3, et_p5_mm3=20.0)
    with caplog.at_level(logging.WARNING):
        plans = plan(fp, "O", lr_scale=[1, 4, 4], peak_fn=lambda n, p, b: GiB)
    assert plans.lr_scale_zyx == [1, 4, 4]
    assert plans.reasons["lr_scale_zyx"].startswith("as requested (--lr-scale)")
    assert all(h % d == 0 for h, d in zip(plans.hr_shape_zyx, [16, 64, 64]))
    assert "small tumour structures" in caplog.text
    with pytest.raises(UserError, match="lr-scale"):
        plan(fp, "O", lr_scale=[2, 2], peak_fn=lambda n, p, b: GiB)


def test_anisotropic_spacing_is_noted():
    fp = fake_fingerprint(n_cases=3, shape_zyx=(40, 240, 240), spacing_zyx=(4.0, 1.0, 1.0),
                          box_zyx=(36, 172, 140))
    plans = plan(fp, "A", peak_fn=lambda n, p, b: GiB)
    assert plans.target_spacing_zyx == [4.0, 1.0, 1.0]
    assert "anisotropic" in plans.reasons["target_spacing_zyx"]


def test_hand_edited_plans_with_a_bad_field_name_the_field(tmp_path, brats_fingerprint):
    plans = plan(brats_fingerprint, "E", preset="paper", peak_fn=lambda n, p, b: GiB)
    path = tmp_path / "plans.json"
    save_plans(plans, path)
    assert load_plans(path).hr_shape_zyx == [128, 192, 192]
    for field, value, needle in (("batch_size", "four", "'batch_size'"),
                                 ("hr_shape_zyx", [100, 192, 192], "'hr_shape_zyx'"),
                                 ("lr_operator", "bicubic", "'lr_operator'")):
        data = json.loads(path.read_text())
        data[field] = value
        bad = tmp_path / f"bad_{field}.json"
        bad.write_text(json.dumps(data))
        with pytest.raises(UserError, match=needle):
            load_plans(bad)
    data = json.loads(path.read_text())
    data["guidance"]["patch_shape_zyx"] = [32, 48]
    bad = tmp_path / "bad_guidance.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(UserError, match="guidance.patch_shape_zyx"):
        load_plans(bad)


def test_region_prior_is_each_regions_share_of_the_hr_volume():
    fp = fake_fingerprint(n_cases=3)
    fp["cases"][0]["label_voxels"] = {"0": 5, "1": 2000, "2": 60000, "4": 3000}   # WT 65000 TC 5000 ET 3000
    fp["cases"][1]["label_voxels"] = {"0": 5, "2": 10000}                        # edema only
    fp["cases"][2]["label_voxels"] = None                                        # unlabelled: left out
    plans = plan(fp, "BraTS", peak_fn=lambda n, p, b: GiB)
    hr_voxels = plans.hr_shape_zyx[0] * plans.hr_shape_zyx[1] * plans.hr_shape_zyx[2]
    assert plans.target_spacing_zyx == [1.0, 1.0, 1.0]
    wt, tc, et = plans.training.region_prior
    assert wt == pytest.approx(37500 / hr_voxels, rel=1e-3)
    assert tc == pytest.approx(2500 / hr_voxels, rel=1e-3)
    assert et == pytest.approx(max(1e-4, 1500 / hr_voxels), rel=1e-3)
    assert wt > tc > 0 and plans.reasons["training.region_prior"].startswith("each region's")
    # the cases' own spacing counts: the same voxels at 2 mm slices fill twice the volume
    for case in fp["cases"]:
        case["spacing_zyx"] = [2.0, 1.0, 1.0]
    thick = plan(fp, "BraTS", peak_fn=lambda n, p, b: GiB)
    hr_mm3 = float(np.prod(thick.hr_shape_zyx)) * float(np.prod(thick.target_spacing_zyx))
    assert thick.training.region_prior[0] == pytest.approx(2 * 37500 / hr_mm3, rel=1e-3)


def test_region_prior_is_empty_without_labels_and_in_the_paper_preset(brats_fingerprint):
    fp = fake_fingerprint(n_cases=2)
    for case in fp["cases"]:
        case["label_voxels"] = None
    assert plan(fp, "BraTS", peak_fn=lambda n, p, b: GiB).training.region_prior == []
    paper = plan(brats_fingerprint, "Paper", preset="paper", peak_fn=lambda n, p, b: GiB)
    assert paper.training.region_prior == []
    assert "paper" in paper.reasons["training.region_prior"]
    demo = plan(brats_fingerprint, "BraTS", preset="demo", peak_fn=lambda n, p, b: GiB)
    assert len(demo.training.region_prior) == 3 and demo.training.lr == 3e-3


@pytest.mark.parametrize("prior", [[0.1, 0.1], [0.1, 0.0, 0.1], [0.5, 0.2, 1.0]])
def test_hand_edited_region_prior_is_checked(tmp_path, brats_fingerprint, prior):
    plans = plan(brats_fingerprint, "BraTS", peak_fn=lambda n, p, b: GiB)
    data = plans.to_json()
    data["training"]["region_prior"] = prior
    path = tmp_path / "plans.json"
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match=r"plans.json: field 'training.region_prior' must be empty or 3"):
        load_plans(path)


def test_the_planned_aux_intensity_range_is_the_normalised_brain_p05_to_p995():
    """fake_fingerprint's brain: p0.5 10, p99.5 1500, mean 520, std 200 -> z-scores -2.55..4.9."""
    plans = plan(fake_fingerprint(n_cases=6), "X", peak_fn=lambda n, p, b: GiB)
    assert plans.training.aux_intensity == "as_is"     # planned, not used: the study decides
    assert plans.training.aux_intensity_range == {m: [-2.55, 4.9] for m in plans.modalities}
    assert "p0.5 and p99.5" in plans.reasons["training.aux_intensity_range"]
    paper = plan(fake_fingerprint(n_cases=6), "P", preset="paper", peak_fn=lambda n, p, b: GiB)
    assert paper.training.aux_intensity_range == {"t2": [0.0, 1.0]}   # min-max images are [0, 1] already
