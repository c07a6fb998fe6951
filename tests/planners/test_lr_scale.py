"""The LR scale as a memory device: the smallest scale per axis whose PFSeg step fits the budget,
after the SR decoder and SGM (the whole method's step over the budget at scale 1: the segmentation
network alone from there).

Anatomy fingerprints: `anatomy_fingerprint` generates three mni152 cases at 4 or 2 mm and
fingerprints them; the hand-written `ANATOMY_2MM` below holds what such cases measure (seed 3, six
cases at 4 mm: grid 39x60x60 z y x, brain boxes up to 37x42x34, 5 % of the ET volume in
components under 1216 mm^3; four at 2 mm: 78x120x120, boxes up to 75x83x65, ET 472 mm^3), for
the tests about the rule. Where a test is about the rule, the memory model prices PFSeg alone
(`pfseg_only`): the other networks' figures do not enter the LR scale.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from pfseg_pipeline.cli.common import run
from pfseg_pipeline.cli.make_synthetic import main as make_synthetic
from pfseg_pipeline.data.labels import BRATS2020
from pfseg_pipeline.data.layouts import MODALITIES, discover
from pfseg_pipeline.errors import UserError
from pfseg_pipeline.planners import memory
from pfseg_pipeline.planners.budget import GiB, half_patch
from pfseg_pipeline.planners.fingerprint import compute_fingerprint
from pfseg_pipeline.planners.planner import SMALL_STRUCTURE_MIN_LR_VOXELS, plan
from tests.planners.conftest import fake_fingerprint, pfseg_only

# what three generated 2 mm anatomy cases look like, as fake_fingerprint arguments
ANATOMY_2MM = dict(shape_zyx=(78, 120, 120), spacing_zyx=(2.0, 2.0, 2.0), box_zyx=(70, 82, 64), spread=4,
                   et_p5_mm3=472.0)


@pytest.fixture(scope="module", params=[4, 2], ids=["4mm", "2mm"])
def anatomy_fingerprint(request, tmp_path_factory):
    spacing = request.param
    raw = tmp_path_factory.mktemp(f"anatomy{spacing}") / "raw"
    assert run(make_synthetic, [str(raw), "--anatomy", "mni152", "--spacing", str(spacing), "--cases", "3",
                                "--seed", "3", "-np", "1"]) == 0
    found = discover(raw, MODALITIES, require_label=True, exclude=())
    return spacing, compute_fingerprint(found.cases, MODALITIES, BRATS2020, workers=1, progress=False)


def _peak_at(fp: dict, lr: list[int], preset: str = "default", batch: int = 1, ablation: str = "full") -> int:
    """The memory model's figure for PFSeg (the whole method, or `ablation`) at LR scale `lr` (the
    HR shape the planner gives it: at a forced scale the shapes do not depend on memory, so that
    plan prices every step with a token figure, and only the step asked for is traced)."""
    forced = plan(fp, "P", preset=preset, gpu_memory_gb=1000, lr_scale=lr, peak_fn=lambda *_: GiB // 10)
    return memory.predict_peak_bytes("pfseg", forced, batch, ablation=ablation).bytes


def test_default_planner_picks_lr_scale_1_for_anatomy_cases_at_11_gb(anatomy_fingerprint):
    spacing, fp = anatomy_fingerprint
    for preset, peak_fn in (("default", None), ("demo", pfseg_only)):   # None: the memory model for all
        plans = plan(fp, "Anatomy", preset=preset, gpu_memory_gb=11, peak_fn=peak_fn)
        assert plans.lr_scale_zyx == [1, 1, 1], (spacing, preset)
        assert plans.lr_shape_zyx == plans.hr_shape_zyx
        # the HR shape is the brain box rounded to 2**n_pool alone (not 2 * 2**n_pool)
        boxes = np.asarray([c["brain_box_shape_zyx"] for c in fp["cases"]])
        step = 2 ** plans.network.n_pool
        assert all(h % step == 0 and h - step < b for h, b in zip(plans.hr_shape_zyx, boxes.max(axis=0)))
        assert plans.memory["predicted_peak_bytes"]["pfseg"] <= 11 * GiB
        reason = plans.reasons["lr_scale_zyx"]
        assert "[1, 1, 1]" in reason and "(fits)" in reason and "11 GiB budget" in reason
        # the budget figure in the reason is the memory model's peak at batch 1
        assert f"{_peak_at(fp, [1, 1, 1], preset) / GiB:.2f}" in reason
        # at scale 1 too PFSeg trains the whole method: the study that decided it is in the reason
        assert plans.training.pfseg_branches == "full"
        assert "bench branches" in plans.reasons["training.pfseg_branches"]


def test_a_larger_scale_exactly_when_scale_1_does_not_fit_real_memory_model():
    """2 mm anatomy shapes, demo widths: budgets either side of the whole method's scale-1 peak at
    batch 1 (under it the segmentation network alone trains at scale 1), either side of the
    segmentation network's (under it the scale is raised), and one small enough that only scale 2
    on every axis fits."""
    fp = fake_fingerprint(n_cases=3, **ANATOMY_2MM)
    one = _peak_at(fp, [1, 1, 1], "demo")
    one_us = _peak_at(fp, [1, 1, 1], "demo", ablation="us")
    assert one_us < one
    just_fits = plan(fp, "A", preset="demo", gpu_memory_gb=(one + 1) / GiB, peak_fn=pfseg_only)
    assert just_fits.lr_scale_zyx == [1, 1, 1] and just_fits.batch_size == 1
    assert just_fits.training.pfseg_branches == "full"
    assert "bench branches" in just_fits.reasons["training.pfseg_branches"]
    # the whole method over the budget at scale 1: its branches go before the LR input coarsens
    branches_dropped = plan(fp, "A", preset="demo", gpu_memory_gb=(one - 1) / GiB, peak_fn=pfseg_only)
    assert branches_dropped.lr_scale_zyx == [1, 1, 1] and branches_dropped.training.pfseg_branches == "us"
    assert branches_dropped.memory["predicted_peak_bytes"]["pfseg"] == _peak_at(
        fp, [1, 1, 1], "demo", branches_dropped.batch_size, ablation="us") <= one - 1
    reason = branches_dropped.reasons["lr_scale_zyx"]
    assert reason.startswith(f"the whole method's step (SR decoder, SGM) at [1, 1, 1] needs {one / GiB:.2f}")
    assert f"{one_us / GiB:.2f} (fits)" in reason
    why = branches_dropped.reasons["training.pfseg_branches"]
    assert why.startswith("us (the segmentation network alone) at LR scale 1")
    assert f"needs {one / GiB:.2f} GiB at batch 1" in why
    just_over = plan(fp, "A", preset="demo", gpu_memory_gb=(one_us - 1) / GiB, peak_fn=pfseg_only)
    assert just_over.lr_scale_zyx != [1, 1, 1] and sorted(just_over.lr_scale_zyx) == [1, 1, 2]
    assert just_over.memory["predicted_peak_bytes"]["pfseg"] <= one_us - 1
    # the chosen raise gives the most memory back of the three, the segmentation network's figures
    raises = {tuple(lr): _peak_at(fp, lr, "demo", ablation="us") for lr in ([2, 1, 1], [1, 2, 1], [1, 1, 2])}
    assert raises[tuple(just_over.lr_scale_zyx)] == min(raises.values())
    assert "(over)" in just_over.reasons["lr_scale_zyx"]
    # above scale 1 the segmentation network alone, for the study's reason
    assert just_over.training.pfseg_branches == "us"
    assert "bench branches_lr2" in just_over.reasons["training.pfseg_branches"]
    # a budget under every scale with a 1 in it, above scale 2: scale 2 per axis, forced by memory
    ones = [_peak_at(fp, lr, "demo", ablation="us") for lr in ([2, 2, 1], [2, 1, 2], [1, 2, 2])]
    two = _peak_at(fp, [2, 2, 2], "demo", ablation="us")
    assert two < min(ones)
    forced = plan(fp, "A", preset="demo", gpu_memory_gb=(two + min(ones)) / 2 / GiB,
                  peak_fn=pfseg_only)
    assert forced.lr_scale_zyx == [2, 2, 2] and forced.batch_size == 1
    assert all(h % 16 == 0 for h in forced.hr_shape_zyx)  # lr_scale 2 x 2**3 demo poolings
    assert forced.reasons["lr_scale_zyx"].count("then") == 3  # three raises, each with its figures


def _stub_peak(static: int, per_lr_voxel: float, per_hr_voxel: float):
    """A stand-in memory model: static + batch x (LR voxels and HR voxels at their own rates)."""
    def peak(network, plans, batch):
        if network in ("pfseg", "hdc", "resunet3d_up"):
            hr = float(np.prod(plans.hr_shape_zyx))
            lr = float(np.prod(plans.lr_shape_zyx))
            return int(static + batch * (per_lr_voxel * lr + per_hr_voxel * hr))
        return int(static + batch * per_hr_voxel * float(np.prod(plans.patch_based.patch_shape_zyx)))
    return peak


def test_batch_is_lowered_before_the_lr_scale_is_raised_stub():
    fp = fake_fingerprint(n_cases=5)                    # 1 mm, HR 160x192x160 at scale 1
    peak = _stub_peak(GiB // 2, 1500.0, 300.0)
    seen = []
    for budget in (40, 20, 12, 9.5, 7, 5, 3.5):
        plans = plan(fp, "B", gpu_memory_gb=budget, peak_fn=peak)
        scale_1_batch_1 = _peak_at_stub(fp, peak, [1, 1, 1])
        assert (plans.lr_scale_zyx == [1, 1, 1]) == (scale_1_batch_1 <= budget * GiB), budget
        assert peak("pfseg", plans, plans.batch_size) <= budget * GiB
        if plans.batch_size < 4:  # the largest batch at that scale
            assert peak("pfseg", plans, plans.batch_size + 1) > budget * GiB
        seen.append((plans.batch_size, int(np.prod(plans.lr_scale_zyx))))
    assert seen[0] == (4, 1) and seen[-1][1] > 1
    # as the budget shrinks the LR input only coarsens, and the scale leaves 1 only at batch 1 of scale 1
    assert [s for _, s in seen] == sorted(s for _, s in seen)
    first_raised = next(i for i, (_, s) in enumerate(seen) if s > 1)
    assert seen[first_raised - 1][0] == 1


def _peak_at_stub(fp, peak, lr):
    return peak("pfseg", plan(fp, "P", gpu_memory_gb=1000, lr_scale=lr, peak_fn=peak), 1)


def test_small_structure_check_steers_and_refuses_a_raise():
    """ET components of 14 mm^3 at 1 mm: a scale whose product exceeds 3.5 leaves them under 4 LR
    voxels. The stub gives most memory back on x first, then on z or y: from [1, 1, 2], over
    budget, raising z or y (product 4) is refused though it would give more back, and x (product
    3) is taken. With no admissible raise left: a UserError."""
    fp = fake_fingerprint(n_cases=3, et_p5_mm3=14.0)
    assert 14.0 / 4 < SMALL_STRUCTURE_MIN_LR_VOXELS <= 14.0 / 3

    def peak(network, plans, batch):
        z, y, x = plans.lr_scale_zyx
        return int(32 * GiB * batch / (z ** 3 * y ** 3 * x ** 4))

    steered = plan(fp, "S", gpu_memory_gb=1, peak_fn=peak)
    assert steered.lr_scale_zyx == [1, 1, 3]
    reason = steered.reasons["lr_scale_zyx"]
    assert "[1, 1, 2] 2.00 -> [1, 1, 2]" in reason and "refused" in reason and "under 4" in reason
    unconstrained = plan(fake_fingerprint(n_cases=3, et_p5_mm3=None), "S", gpu_memory_gb=1, peak_fn=peak)
    assert int(np.prod(unconstrained.lr_scale_zyx)) == 4 and unconstrained.lr_scale_zyx[2] == 2
    with pytest.raises(UserError, match=r"does not fit in 0.3 GiB .*under 4.*--lr-scale"):
        plan(fp, "S", gpu_memory_gb=0.3, peak_fn=peak)


def test_forced_scale_keeps_its_figures_and_warns_when_over(caplog):
    fp = fake_fingerprint(n_cases=3)
    with caplog.at_level(logging.WARNING):
        plans = plan(fp, "F", lr_scale=1, gpu_memory_gb=1, peak_fn=lambda n, p, b: 2 * GiB * b)
    assert plans.lr_scale_zyx == [1, 1, 1]
    assert plans.reasons["lr_scale_zyx"].startswith("as requested (--lr-scale)")
    assert "2.00 (over)" in plans.reasons["lr_scale_zyx"]
    assert "kept because it was asked for" in caplog.text


def test_paper_preset_keeps_its_fixed_scale_2(brats_fingerprint):
    plans = plan(brats_fingerprint, "Paper", preset="paper", gpu_memory_gb=64, peak_fn=lambda n, p, b: GiB)
    assert plans.lr_scale_zyx == [2, 2, 2] and plans.training.pfseg_branches == "full"
    # the paper's method whatever the scale: --lr-scale 1 keeps the SR decoder and SGM
    one = plan(brats_fingerprint, "Paper", preset="paper", gpu_memory_gb=64, lr_scale=1,
               peak_fn=lambda n, p, b: GiB)
    assert one.lr_scale_zyx == [1, 1, 1] and one.training.pfseg_branches == "full"
    assert one.reasons["training.pfseg_branches"].startswith("full")


def test_baseline_patch_is_never_under_half_the_hr_shape():
    """At LR scale 1 the HR shape is a multiple of 2**n_pool only, so HR / 2 need not be one:
    the baselines' patch rounds up (at scale 2 it was always exact)."""
    assert half_patch([40, 48, 40], 3) == [24, 24, 24]
    assert half_patch([128, 208, 176], 4) == [64, 112, 96]
    assert half_patch([128, 192, 192], 4) == [64, 96, 96]        # the paper's grid: exact
    assert half_patch([16, 24, 8], 3) == [16, 16, 8]             # at least 2 bottleneck voxels, at most HR
