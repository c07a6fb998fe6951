"""The planner: from a dataset fingerprint and a GPU memory budget to `Plans`.

Every decision is written to `plans.reasons` with one line of why. What fits the budget is the
budget search's to say (planners/budget.py: the memory model's traced step per candidate,
cached), so the planner never plans a network step above the budget. What each preset fixes
(the paper's protocol, the demo's sizes, every preset's training recipe) is data in presets.py.

Presets:
- `default`: all four modalities, z-score in the brain, regions WT/TC/ET, HR = the brain box.
- `paper`: the paper's protocol (t2 only, WT, centre crop 240 -> 192 in-plane, z 155 -> 128,
  min-max, HR 128x192x192, LR 64x96x96, trilinear LR operator, centre guidance 32x48x48,
  baseline patch 64x96x96, batch 1, Adam 1e-4).
- `demo`: like `default` with narrow networks and a short training (presets.py DEMO_*).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from pfseg_pipeline import presets
from pfseg_pipeline.data.labels import BRATS2020, LabelScheme, region_names
from pfseg_pipeline.data.layouts import MODALITIES
from pfseg_pipeline.errors import UserError
from pfseg_pipeline.networks.registry import DEFAULT_NETWORK
from pfseg_pipeline.planners.budget import (
    MIN_BOTTLENECK,
    Budget,
    PeakFn,
    gib,
    half_patch,
    round_up,
)
from pfseg_pipeline.planners.intensity_range import REASON as INTENSITY_RANGE_REASON
from pfseg_pipeline.planners.intensity_range import normalised_brain_range
from pfseg_pipeline.plans import GuidancePlan, NetworkPlan, Plans, preset_training

log = logging.getLogger(__name__)

DEFAULT_GPU_MEMORY_GB = 11.0        # a GTX 1080 Ti / RTX 2080 Ti, the paper's card (GiB)
MAX_BATCH_SIZE = 4                  # whole volumes: more adds little and costs memory
HR_BOX_PERCENTILE = 99              # the HR shape holds the brain box of (nearly) every case
FOLD_TRAIN_FRACTION = 0.8           # 5-fold cross-validation trains on 4/5 of the cases
# A compact structure of 4 LR voxels' volume fills at least half of one LR voxel wherever it
# falls on the LR grid (a cube of side a, split evenly over two cells per axis, fills (a/2)**3
# of each), so area down-sampling keeps at least half its contrast; the planner refuses to raise
# the LR scale past the point where the small ET components fall under it.
SMALL_STRUCTURE_MIN_LR_VOXELS = 4.0
SMALL_STRUCTURE_PERCENTILE = 5      # ... measured as the voxel-weighted 5th percentile size
ANISOTROPY_RATIO = 3.0              # max/min spacing above this counts as anisotropic
DEMO_BATCH_SIZE = presets.DEMO_BATCH_SIZE
# the plan is sized for the method itself: its step decides the LR scale and the batch
METHOD = DEFAULT_NETWORK


def plan(fingerprint: dict, dataset_info: dict | str, preset: str = "default",
         modalities: Sequence[str] | None = None, gpu_memory_gb: float = DEFAULT_GPU_MEMORY_GB,
         lr_scale: Sequence[int] | int | None = None, target: str | None = None,
         label_scheme: LabelScheme | None = None, peak_fn: PeakFn | None = None) -> Plans:
    """Plan a dataset.

    Parameters
    ----------
    fingerprint : `compute_fingerprint`'s result (fingerprint.json).
    dataset_info : {"name": NAME, "n_training_cases": N (default: 4/5 of the labelled cases)}
        or just the name.
    preset : "default", "paper" or "demo".
    modalities : the input channels (default: all four; paper: t2).
    gpu_memory_gb : the budget in GiB for one training step.
    lr_scale : per-axis LR scale (one int or three), overriding the automatic choice.
    target : "regions" (WT, TC, ET) or "wt" (default: regions; paper: wt).
    label_scheme : the dataset's label scheme (default: the fingerprint's, else BraTS 2020).
    peak_fn : (network, plans, batch) -> predicted peak bytes; default the memory model.
    """
    if preset not in presets.PRESETS:
        raise UserError(f"unknown preset {preset!r} (choose from {', '.join(presets.PRESETS)})")
    if not gpu_memory_gb or gpu_memory_gb <= 0:
        raise UserError(f"--gpu-memory-gb must be positive, got {gpu_memory_gb}")
    info = {"name": dataset_info} if isinstance(dataset_info, str) else dict(dataset_info)
    cases = fingerprint.get("cases") or []
    if not cases:
        raise UserError("fingerprint.json: field 'cases' is empty")
    planner = _Planner(fingerprint, info, preset, modalities, gpu_memory_gb, _lr_override(lr_scale),
                       target, label_scheme, peak_fn)
    return planner.run()


def small_et_size_mm3(fingerprint: dict) -> float | None:
    """The voxel-weighted 5th-percentile ET component size (mm^3): 5 % of the ET volume lies in
    smaller components. None without ET."""
    comps = fingerprint.get("dataset", {}).get("components", {}).get("ET", {})
    return comps.get("size_mm3_voxel_weighted_p5") or None


def small_et_lr_voxels(fingerprint: dict, lr_scale: Sequence[int], spacing: Sequence[float]) -> float | None:
    """How many LR voxels (target `spacing` times `lr_scale`, z y x) the small ET components fill."""
    size_mm3 = small_et_size_mm3(fingerprint)
    if size_mm3 is None:
        return None
    return size_mm3 / float(np.prod([t * s for t, s in zip(spacing, lr_scale)]))


def _lr_override(lr_scale) -> list[int] | None:
    if lr_scale is None:
        return None
    values = [int(lr_scale)] * 3 if isinstance(lr_scale, (int, np.integer)) else [int(v) for v in lr_scale]
    if len(values) == 1:
        values = values * 3
    if len(values) != 3 or any(v < 1 for v in values):
        raise UserError(f"--lr-scale must be one or three positive integers (z y x), got {lr_scale}")
    return values


class _Planner:
    def __init__(self, fingerprint, info, preset, modalities, gpu_memory_gb, lr_override, target,
                 label_scheme, peak_fn):
        self.fp = fingerprint
        self.cases = fingerprint["cases"]
        self.info = info
        self.preset = preset
        self.gpu_memory_gb = gpu_memory_gb
        self.lr_override = lr_override
        self.target_spacing_zyx: list[float] = []   # automatic_plans sets it; the small-ET check reads it
        self.reasons: dict[str, str] = {}
        self.warnings: list[str] = []
        self.budget = Budget(gpu_memory_gb, peak_fn, self.reasons, self.warnings)
        # automatic_plans: why the whole method's step does not fit at LR scale 1 (None: it fits)
        self.full_over_budget: str | None = None
        available = fingerprint.get("modalities") or list(MODALITIES)
        if modalities:
            chosen = list(modalities)
            why = "as requested (--modalities)"
        elif preset == "paper":
            chosen, why = list(presets.PAPER_MODALITIES), "the paper's protocol: T2 alone"
        else:
            chosen, why = [m for m in MODALITIES if m in available], "every modality the dataset has"
        missing = [m for m in chosen if m not in available]
        if missing:
            raise UserError(f"modality {missing[0]!r} is not in the dataset (it has {', '.join(available)})")
        self.modalities = chosen
        self.reasons["modalities"] = why
        self.target = target or (presets.PAPER_TARGET if preset == "paper" else "regions")
        region_names(self.target)  # validates
        self.reasons["target"] = ("as requested" if target else
                                  "the paper's binary whole tumour" if preset == "paper" else
                                  "the BraTS regions WT, TC, ET as sigmoid channels")
        if label_scheme is None:
            label_scheme = (LabelScheme.from_json(fingerprint["label_scheme"])
                            if fingerprint.get("label_scheme") else BRATS2020)
        self.scheme = label_scheme
        labelled = sum(1 for c in self.cases if c.get("label_voxels") is not None) or len(self.cases)
        self.n_train = int(info.get("n_training_cases") or max(1, round(labelled * FOLD_TRAIN_FRACTION)))

    # ---- the plan --------------------------------------------------------------------------------
    def run(self) -> Plans:
        if self.preset == "paper":
            plans = self.paper_plans()
        else:
            plans = self.automatic_plans()
        plans.reasons.update(self.reasons)
        plans.validate("plans")
        for w in self.warnings:
            log.warning("%s", w)
        return plans

    def base_plans(self, hr_shape, spacing, network_plan: NetworkPlan) -> Plans:
        return Plans(
            dataset_name=str(self.info.get("name", "dataset")),
            modalities=list(self.modalities),
            label_scheme=self.scheme.to_json(),
            hr_shape_zyx=list(hr_shape),
            target_spacing_zyx=[float(s) for s in spacing],
            preset=self.preset,
            target=self.target,
            network=network_plan,
        )

    def network_plan(self) -> NetworkPlan:
        if self.preset == "demo":
            self.reasons["network"] = (f"demo preset: narrow widths {list(presets.DEMO_WIDTHS)} so a CPU "
                                       "trains it in minutes (presets.py DEMO_*)")
            return NetworkPlan(widths=list(presets.DEMO_WIDTHS), sgm_widths=list(presets.DEMO_SGM_WIDTHS),
                               head_width=presets.DEMO_HEAD_WIDTH)
        self.reasons["network"] = ("the paper's widths 32-32-64-128-256 (4 poolings), SGM 16-32-64-64, "
                                   "head 16, InstanceNorm without affine")
        return NetworkPlan()

    def target_spacing(self) -> list[float]:
        spacings = np.asarray([c["spacing_zyx"] for c in self.cases], dtype=np.float64)
        median = np.median(spacings, axis=0)
        ratio = float(median.max() / median.min())
        why = f"median spacing of {len(self.cases)} case(s)"
        if ratio > ANISOTROPY_RATIO:
            coarse = "zyx"[int(np.argmax(median))]
            why += (f"; anisotropic (ratio {ratio:.1f}, coarse axis {coarse}): kept at its median so no "
                    "case is up-sampled much along it; the LR scale stays per-axis")
        self.reasons["target_spacing_zyx"] = why
        return [round(float(s), 6) for s in median]

    def brain_box_at(self, spacing: Sequence[float]) -> list[float]:
        boxes = [[n * s / t for n, s, t in zip(c["brain_box_shape_zyx"], c["spacing_zyx"], spacing)]
                 for c in self.cases]
        return np.percentile(np.asarray(boxes), HR_BOX_PERCENTILE, axis=0).tolist()

    def automatic_plans(self) -> Plans:
        spacing = self.target_spacing_zyx = self.target_spacing()
        network_plan = self.network_plan()
        box = self.brain_box_at(spacing)
        n_pool = network_plan.n_pool

        def candidate(lr: list[int]) -> Plans:
            divisor = [s * 2 ** n_pool for s in lr]
            # at least 2 bottleneck voxels per axis: InstanceNorm needs more than one voxel
            hr = [max(round_up(b, d), MIN_BOTTLENECK * d) for b, d in zip(box, divisor)]
            plans = self.base_plans(hr, spacing, network_plan)
            plans.lr_scale_zyx = list(lr)
            plans.guidance = GuidancePlan(_guidance(hr, lr, network_plan), "center")
            # the PFSeg branches planned at this scale: the memory model prices what will train
            plans.training.pfseg_branches = presets.pfseg_branches(lr, self.full_over_budget is None)[0]
            return plans

        # The order of decisions when memory is short: the resolution first, then the batch. The
        # LR scale is the smallest whose step fits at batch 1, and only then is the batch the
        # largest that fits at that scale, so memory is found by lowering the batch before the
        # LR input is coarsened: a coarser LR input loses the small structures for good (issue
        # 14: ET Dice 0.79 at LR scale 2 against 0.96 at scale 1 on 4 mm cases), while a smaller
        # batch of whole volumes (each already thousands of tumour voxels; InstanceNorm needs no
        # batch statistics; the paper trains at batch 1) only makes the gradient noisier. Before
        # the LR input, the SR decoder and SGM go: at LR scale 1 they add little (bench branches)
        # and a coarser input costs much more (presets.pfseg_branches), so where the whole
        # method's step does not fit at scale 1 the search goes on with the segmentation network
        # alone, from scale 1.
        start = list(self.lr_override or [1, 1, 1])
        if self.lr_override is None and start == [1, 1, 1]:
            whole = candidate(start)
            if not self.budget.fits(METHOD, whole, 1):
                self.full_over_budget = (
                    f"the whole method's step (SR decoder, SGM) at [1, 1, 1] needs "
                    f"{gib(self.budget.peak(METHOD, whole, 1))} GiB at batch 1, over the "
                    f"{self.gpu_memory_gb:g} GiB budget")
        plans = self.budget.lr_scale(METHOD, start, candidate, forced=self.lr_override is not None,
                                     refusal=self.small_structure_refusal)
        if self.full_over_budget:
            self.reasons["lr_scale_zyx"] = (
                f"{self.full_over_budget}, so the segmentation network alone from there "
                f"(training.pfseg_branches); {self.reasons['lr_scale_zyx']}")
        hr_why = (f"the brain box of {HR_BOX_PERCENTILE}th-percentile size at the target spacing "
                  f"({' x '.join(f'{b:.0f}' for b in box)}), rounded up to a multiple of lr_scale * "
                  f"2**{n_pool} = {plans.hr_divisor_zyx}")
        self.reasons["hr_shape_zyx"] = hr_why
        self.reasons["lr_operator"] = "area down-sampling (average pooling), anti-aliased"
        sgm_pools = len(network_plan.sgm_widths) - 1
        self.reasons["guidance"] = (f"{plans.guidance.patch_shape_zyx} = bottleneck x 2**{sgm_pools}"
                                    " so the SGM output matches the bottleneck (HR / 4 at LR scale 2); "
                                    "centred as in the paper")
        self.reasons["normalization"] = "z-score inside the brain per modality; background stays 0"
        plans.preprocessing = {"crop": "nonzero", "resample": "spacing", "image_order": 3}
        self.reasons["preprocessing"] = ("crop to the union non-zero box; images cubic, labels one-hot "
                                         "linear + argmax when the spacing differs")
        self.small_structure_check(plans)

        cap = DEMO_BATCH_SIZE if self.preset == "demo" else MAX_BATCH_SIZE
        batch = max(1, self.budget.largest_batch(METHOD, plans, cap))
        plans.batch_size = batch
        if self.preset == "demo":
            self.reasons["batch_size"] = f"demo preset: at most {DEMO_BATCH_SIZE}, as fits the budget"
        elif self.budget.fits(METHOD, plans, batch):
            self.reasons["batch_size"] = (f"the largest batch (cap {MAX_BATCH_SIZE}) whose PFSeg step "
                                          f"fits the {self.gpu_memory_gb:g} GiB budget at the LR scale above "
                                          f"({gib(self.budget.peak(METHOD, plans, batch))} GiB)")
        else:
            self.reasons["batch_size"] = "1: the PFSeg step exceeds the budget (--lr-scale was forced)"
        self.budget.patch_plan(plans, patch=half_patch(plans.hr_shape_zyx, n_pool), batch=batch)
        self.training_plan(plans)
        self.budget.memory_record(plans)
        return plans

    def small_et_size_mm3(self) -> float | None:
        return small_et_size_mm3(self.fp)

    def small_et_lr_voxels(self, lr_scale: Sequence[int], spacing: Sequence[float]) -> float | None:
        return small_et_lr_voxels(self.fp, lr_scale, spacing)

    def small_structure_refusal(self, lr_scale: list[int]) -> str | None:
        """Why the budget search may not raise the LR scale to `lr_scale` (None: it may)."""
        lr_voxels = self.small_et_lr_voxels(lr_scale, self.target_spacing_zyx)
        if lr_voxels is None or lr_voxels >= SMALL_STRUCTURE_MIN_LR_VOXELS:
            return None
        return (f"at {lr_scale} the small ET components ({self.small_et_size_mm3():.1f} mm^3) would be "
                f"{lr_voxels:.1f} LR voxels, under {SMALL_STRUCTURE_MIN_LR_VOXELS:g}")

    def small_structure_check(self, plans: Plans) -> None:
        lr_voxels = self.small_et_lr_voxels(plans.lr_scale_zyx, plans.target_spacing_zyx)
        if lr_voxels is None:
            self.reasons["small_structures"] = "no enhancing-tumour components in the labels"
            return
        text = (f"5 % of the ET volume lies in components under {self.small_et_size_mm3():.1f} mm^3 = "
                f"{lr_voxels:.1f} LR voxels at LR scale {plans.lr_scale_zyx} (the search refuses a scale "
                f"that leaves them under {SMALL_STRUCTURE_MIN_LR_VOXELS:g}: half of one LR voxel's contrast "
                "at worst)")
        if lr_voxels < SMALL_STRUCTURE_MIN_LR_VOXELS:
            self.warnings.append(f"small tumour structures: {text}; the LR input may miss them (consider "
                                 "--lr-scale 1 on some axes)")
            text += f" (warning: under {SMALL_STRUCTURE_MIN_LR_VOXELS:g} LR voxels)"
        self.reasons["small_structures"] = text

    def training_plan(self, plans: Plans) -> None:
        """The preset's training recipe (presets.py, with its reasons), the iterations per epoch
        where the preset leaves them to the data, and the region prior."""
        training = preset_training(self.preset)
        self.reasons.update(presets.training_reasons(self.preset))
        if "iterations_per_epoch" not in presets.training_overrides(self.preset):
            training.iterations_per_epoch = max(1, math.ceil(self.n_train / plans.batch_size))
            self.reasons["training.iterations_per_epoch"] = (
                f"one pass over the ~{self.n_train} training cases of a fold at batch {plans.batch_size}"
                + presets.ITERATIONS_PER_EPOCH_NOTE.get(self.preset, ""))
        plans.training = training
        if self.preset != "paper":
            training.pfseg_branches, self.reasons["training.pfseg_branches"] = presets.pfseg_branches(
                plans.lr_scale_zyx, self.full_over_budget is None)
            if self.full_over_budget:
                self.reasons["training.pfseg_branches"] += f" (here {self.full_over_budget})"
        training.aux_intensity_range = normalised_brain_range(self.fp, plans.modalities, plans.normalization)
        self.reasons["training.aux_intensity_range"] = INTENSITY_RANGE_REASON
        if self.preset == "paper":
            self.reasons["training.region_prior"] = ("empty: the seg head keeps PyTorch's default init, as "
                                                     "the paper's code")
            return
        training.region_prior = region_prior(self.cases, plans)
        self.reasons["training.region_prior"] = (
            "each region's mean share of the HR volume in the labelled cases (clamped to "
            f"[{PRIOR_MIN:g}, {PRIOR_MAX:g}]): the seg head's bias starts at its logit, so the first steps "
            "do not spend themselves learning that tumour is rare" if training.region_prior
            else "empty: no labelled case in the fingerprint")

    # ---- the paper's protocol ----------------------------------------------------------------------
    def paper_plans(self) -> Plans:
        median_shape = np.median(np.asarray([c["shape_zyx"] for c in self.cases], float), axis=0)
        median_spacing = np.median(np.asarray([c["spacing_zyx"] for c in self.cases], float), axis=0)
        paper_z, paper_in_plane = presets.PAPER_GRID_ZYX[0], presets.PAPER_GRID_ZYX[1]
        spacing = [float(median_spacing[0] * median_shape[0] / paper_z), float(median_spacing[1]),
                   float(median_spacing[2])]
        network_plan = NetworkPlan()
        self.reasons["network"] = "the paper's widths 32-32-64-128-256, SGM 16-32-64-64, head 16"
        plans = self.base_plans(list(presets.PAPER_GRID_ZYX), [round(s, 6) for s in spacing], network_plan)
        plans.normalization = "minmax"
        plans.lr_operator = "trilinear"
        plans.lr_scale_zyx = list(self.lr_override or [2, 2, 2])
        plans.guidance = GuidancePlan(list(presets.PAPER_GUIDANCE_ZYX), "center")
        plans.preprocessing = {"crop": "center", "center_crop_zyx": [None, paper_in_plane, paper_in_plane],
                               "resample": "shape", "resampled_shape_zyx": list(presets.PAPER_GRID_ZYX),
                               "image_order": 1}
        self.reasons.update({
            "target_spacing_zyx": (f"what the paper's grid gives: z {median_shape[0]:.0f} -> {paper_z} "
                                   "slices, in-plane unchanged"),
            "hr_shape_zyx": "the paper's HR grid 128x192x192 (z y x)",
            "lr_scale_zyx": "the paper's LR input 64x96x96 = HR / 2" if self.lr_override is None
            else "as requested (--lr-scale)",
            "lr_operator": "the paper's linear (trilinear) resampling",
            "guidance": "the paper's fixed centre patch 32x48x48 = HR / 4",
            "normalization": "the paper's per-volume min-max to [0, 1]",
            "preprocessing": f"the paper's fixed centred in-plane crop to {paper_in_plane} and z resampled "
                             f"to {paper_z} slices linearly (no brain-box crop)",
            "batch_size": "the paper's batch 1",
        })
        plans.batch_size = presets.PAPER_BATCH_SIZE
        if not self.budget.fits(METHOD, plans, plans.batch_size):
            need = gib(self.budget.peak(METHOD, plans, plans.batch_size))
            self.warnings.append(f"paper preset: the PFSeg step needs {need} GiB, more than the "
                                 f"{self.gpu_memory_gb:g} GiB budget")
        self.budget.patch_plan(plans, patch=list(presets.PAPER_PATCH_ZYX), batch=presets.PAPER_BATCH_SIZE,
                               fixed=True)
        self.reasons["patch_based.batch_size"] = "the paper's batch 1"
        self.training_plan(plans)
        self.budget.memory_record(plans, warn=False)  # the paper's fixed sizes: the warning above says it
        return plans


PRIOR_MIN, PRIOR_MAX = 1e-4, 0.5


def region_prior(cases: Sequence[dict], plans: Plans) -> list[float]:
    """Per output region, the mean over labelled cases of (region volume in mm^3) / (HR volume in
    mm^3: hr_shape x target spacing), clamped to [PRIOR_MIN, PRIOR_MAX]; [] without labels."""
    labelled = [c for c in cases if c.get("label_voxels")]
    if not labelled:
        return []
    hr_mm3 = float(np.prod(plans.hr_shape_zyx)) * float(np.prod(plans.target_spacing_zyx))
    scheme = plans.scheme
    priors = []
    for region in region_names(plans.target):
        values = {str(v) for v in scheme.regions[region]}
        shares = [sum(n for v, n in c["label_voxels"].items() if v in values)
                  * float(np.prod(c["spacing_zyx"])) / hr_mm3 for c in labelled]
        priors.append(float(f"{min(PRIOR_MAX, max(PRIOR_MIN, float(np.mean(shares)))):.4g}"))
    return priors


def _guidance(hr: Sequence[int], lr: Sequence[int], network_plan: NetworkPlan) -> list[int]:
    from pfseg_pipeline.planners.memory import guidance_patch_for

    return guidance_patch_for(hr, lr, network_plan)


def plan_summary(plans: Plans) -> dict[str, Any]:
    """The highlights a user wants to see at the end of planning."""
    return {
        "preset": plans.preset,
        "modalities": plans.modalities,
        "target": plans.target,
        "target_spacing_zyx": plans.target_spacing_zyx,
        "hr_shape_zyx": plans.hr_shape_zyx,
        "lr_scale_zyx": plans.lr_scale_zyx,
        "lr_shape_zyx": plans.lr_shape_zyx,
        "guidance_patch_zyx": plans.guidance.patch_shape_zyx,
        "batch_size": plans.batch_size,
        "pfseg_branches": plans.training.pfseg_branches,
        "baseline_patch_zyx": plans.patch_based.patch_shape_zyx,
        "predicted_peak_gb": plans.memory.get("predicted_peak_gb", {}),
        "budget_gb": plans.memory.get("budget_gb"),
    }
