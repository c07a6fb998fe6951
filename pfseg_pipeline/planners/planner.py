"""The planner: from a dataset fingerprint and a GPU memory budget to `Plans`.

Every decision is written to `plans.reasons` with one line of why. The budget is checked with
the memory model (planners/memory.py: one traced training step per candidate, cached), so the
planner never plans a network step above the budget.

Presets:
- `default`: all four modalities, z-score in the brain, regions WT/TC/ET, HR = the brain box.
- `paper`: the paper's protocol (t2 only, WT, centre crop 240 -> 192 in-plane, z 155 -> 128,
  min-max, HR 128x192x192, LR 64x96x96, trilinear LR operator, centre guidance 32x48x48,
  baseline patch 64x96x96, batch 1, Adam 1e-4).
- `demo`: like `default` with narrow networks and a short training (DEMO_* below).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from pfseg_pipeline.data.labels import BRATS2020, LabelScheme, region_names
from pfseg_pipeline.data.layouts import MODALITIES
from pfseg_pipeline.errors import UserError
from pfseg_pipeline.plans import (
    PRESETS,
    GuidancePlan,
    NetworkPlan,
    Plans,
    TrainingPlan,
)

log = logging.getLogger(__name__)

GiB = 2**30
DEFAULT_GPU_MEMORY_GB = 11.0        # a GTX 1080 Ti / RTX 2080 Ti, the paper's card (GiB)
MAX_BATCH_SIZE = 4                  # whole volumes: more adds little and costs memory
MAX_LR_SCALE = 8                    # beyond this the LR input no longer shows the tumour
HR_BOX_PERCENTILE = 99              # the HR shape holds the brain box of (nearly) every case
FOLD_TRAIN_FRACTION = 0.8           # 5-fold cross-validation trains on 4/5 of the cases
SMALL_STRUCTURE_MIN_LR_VOXELS = 2.0  # warn when the small ET structures fall under this at LR
SMALL_STRUCTURE_PERCENTILE = 5      # ... measured as the voxel-weighted 5th percentile size
MIN_BOTTLENECK = 2                  # voxels per axis at the deepest level (InstanceNorm statistics)
ANISOTROPY_RATIO = 3.0              # max/min spacing above this counts as anisotropic
SLIDING_WINDOW_STEP = 0.5           # the baselines' window step, as in the paper and nnU-Net
PATCH_FREE_NETWORKS = ("pfseg", "resunet3d_up", "hdc")
PATCH_BASED_NETWORKS = ("unet3d", "resunet3d", "vnet")
AMP = True                          # the trainer uses mixed precision on CUDA

# The demo preset: small widths and a short training so `make demo` runs on a CPU. Tune here.
DEMO_WIDTHS = [8, 16, 32, 64]
DEMO_SGM_WIDTHS = [8, 16, 32]       # 2 poolings: guidance = HR / 4 matches the bottleneck
DEMO_HEAD_WIDTH = 8
DEMO_EPOCHS = 50
DEMO_ITERATIONS_PER_EPOCH = 10
DEMO_BATCH_SIZE = 2                 # a CPU step costs time in proportion to the batch
DEMO_LR = 3e-3                      # a few hundred steps need a faster start than the paper's 1e-4

# The paper preset (PFSEG_METHOD.md, "Data protocol").
PAPER_MODALITIES = ["t2"]
PAPER_IN_PLANE = 192
PAPER_Z = 128
PAPER_HR = [128, 192, 192]
PAPER_GUIDANCE = [32, 48, 48]
PAPER_PATCH = [64, 96, 96]

# (network, plans, batch) -> a MemoryEstimate (or plain predicted bytes)
PeakFn = Callable[[str, Plans, int], Any]


def _default_peak_fn(network: str, plans: Plans, batch_size: int):
    from pfseg_pipeline.planners.memory import predict_peak_bytes

    return predict_peak_bytes(network, plans, batch_size, amp=AMP)


def round_up(value: float, multiple: int) -> int:
    return int(math.ceil(value / multiple - 1e-9) * multiple)


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
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r} (choose from {', '.join(PRESETS)})")
    if not gpu_memory_gb or gpu_memory_gb <= 0:
        raise UserError(f"--gpu-memory-gb must be positive, got {gpu_memory_gb}")
    info = {"name": dataset_info} if isinstance(dataset_info, str) else dict(dataset_info)
    cases = fingerprint.get("cases") or []
    if not cases:
        raise UserError("fingerprint.json: field 'cases' is empty")
    planner = _Planner(fingerprint, info, preset, modalities, gpu_memory_gb, _lr_override(lr_scale),
                       target, label_scheme, peak_fn or _default_peak_fn)
    return planner.run()


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
        self.budget = int(gpu_memory_gb * GiB)
        self.gpu_memory_gb = gpu_memory_gb
        self.lr_override = lr_override
        self.peak_fn = peak_fn
        self.reasons: dict[str, str] = {}
        self.peaks: dict[tuple, int] = {}
        self.warnings: list[str] = []
        available = fingerprint.get("modalities") or list(MODALITIES)
        if modalities:
            chosen = list(modalities)
            why = "as requested (--modalities)"
        elif preset == "paper":
            chosen, why = list(PAPER_MODALITIES), "the paper's protocol: T2 alone"
        else:
            chosen, why = [m for m in MODALITIES if m in available], "every modality the dataset has"
        missing = [m for m in chosen if m not in available]
        if missing:
            raise UserError(f"modality {missing[0]!r} is not in the dataset (it has {', '.join(available)})")
        self.modalities = chosen
        self.reasons["modalities"] = why
        self.target = target or ("wt" if preset == "paper" else "regions")
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

    # ---- helpers ---------------------------------------------------------------------------------
    def estimate(self, network: str, plans: Plans, batch: int) -> tuple[int, int | None]:
        """(predicted bytes, batch-independent tensor bytes or None), cached per candidate."""
        if network in PATCH_BASED_NETWORKS:  # only the patch matters to them
            key = (network, batch, tuple(plans.patch_based.patch_shape_zyx))
        else:
            key = (network, batch, tuple(plans.hr_shape_zyx), tuple(plans.lr_scale_zyx),
                   tuple(plans.guidance.patch_shape_zyx))
        if key not in self.peaks:
            result = self.peak_fn(network, plans, batch)
            if isinstance(result, (int, np.integer)):
                self.peaks[key] = (int(result), None)
            else:
                self.peaks[key] = (int(result.bytes), _static_bytes(result.detail))
        return self.peaks[key]

    def peak(self, network: str, plans: Plans, batch: int) -> int:
        return self.estimate(network, plans, batch)[0]

    def fits(self, network: str, plans: Plans, batch: int) -> bool:
        return self.peak(network, plans, batch) <= self.budget

    def largest_batch(self, network: str, plans: Plans, cap: int = MAX_BATCH_SIZE) -> int:
        """The largest batch <= cap that fits (0 when batch 1 does not).

        The peak grows linearly with the batch (activations scale, weights and optimiser state
        do not). From the batch-1 trace, a lower bound of the batch-2 peak rules batch 2 out
        without a second trace when it clearly cannot fit; otherwise batch 2 is traced, the
        slope gives the candidate, and the candidate is checked by its own trace.
        """
        from pfseg_pipeline.planners.memory import with_allowance

        p1, static = self.estimate(network, plans, 1)
        if p1 > self.budget:
            return 0
        if cap == 1:
            return 1
        if static is not None:
            tensor_1 = self.peaks_tensor(p1)
            lower_2 = with_allowance(2 * tensor_1 - static)
            if lower_2 > self.budget:
                return 1
        p2 = self.peak(network, plans, 2)
        if p2 > self.budget:
            return 1
        slope = max(p2 - p1, 1)
        batch = min(cap, 1 + int((self.budget - p1) // slope))
        while batch > 2 and not self.fits(network, plans, batch):
            batch -= 1
        return max(batch, 2)

    @staticmethod
    def peaks_tensor(predicted: int) -> int:
        """Invert the allowance: predicted device bytes -> traced tensor bytes."""
        from pfseg_pipeline.planners.memory import ALLOWANCE_CONTEXT_BYTES, ALLOWANCE_FACTOR

        return int((predicted - ALLOWANCE_CONTEXT_BYTES) / ALLOWANCE_FACTOR)

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
            self.reasons["network"] = (f"demo preset: narrow widths {DEMO_WIDTHS} so a CPU trains it in "
                                       "minutes (planners/planner.py DEMO_*)")
            return NetworkPlan(widths=list(DEMO_WIDTHS), sgm_widths=list(DEMO_SGM_WIDTHS),
                               head_width=DEMO_HEAD_WIDTH)
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
        spacing = self.target_spacing()
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
            return plans

        lr = list(self.lr_override or [2, 2, 2])
        plans = candidate(lr)
        tried = []
        while not self.fits("pfseg", plans, 1):
            tried.append((list(lr), self.peak("pfseg", plans, 1)))
            if self.lr_override is not None:
                self.warnings.append(
                    f"--lr-scale {lr}: the PFSeg step at batch 1 needs {_gib(tried[-1][1])} GiB, more "
                    f"than the {self.gpu_memory_gb:g} GiB budget (kept because it was asked for)")
                break
            lr_shape = [h / s for h, s in zip(plans.hr_shape_zyx, lr)]
            axis = int(np.argmax(lr_shape))  # the largest LR axis gives the most memory back
            if lr[axis] >= MAX_LR_SCALE:
                raise UserError(
                    f"PFSeg does not fit in {self.gpu_memory_gb:g} GiB even at LR scale {lr} (batch 1 needs "
                    f"{_gib(tried[-1][1])} GiB): use --gpu-memory-gb with a larger card or the demo preset")
            lr[axis] += 1
            plans = candidate(lr)

        hr_why = (f"the brain box of {HR_BOX_PERCENTILE}th-percentile size at the target spacing "
                  f"({' x '.join(f'{b:.0f}' for b in box)}), rounded up to a multiple of lr_scale * "
                  f"2**{n_pool} = {plans.hr_divisor_zyx}")
        self.reasons["hr_shape_zyx"] = hr_why
        if self.lr_override is not None:
            self.reasons["lr_scale_zyx"] = "as requested (--lr-scale)"
        elif tried:
            steps = "; ".join(f"{t[0]} needs {_gib(t[1])} GiB" for t in tried)
            self.reasons["lr_scale_zyx"] = (f"raised on the largest LR axis until batch 1 fits the "
                                            f"{self.gpu_memory_gb:g} GiB budget ({steps})")
        else:
            self.reasons["lr_scale_zyx"] = (f"2 per axis (the method's point): batch 1 fits the "
                                            f"{self.gpu_memory_gb:g} GiB budget")
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
        batch = max(1, self.largest_batch("pfseg", plans, cap))
        plans.batch_size = batch
        if self.preset == "demo":
            self.reasons["batch_size"] = f"demo preset: at most {DEMO_BATCH_SIZE}, as fits the budget"
        elif self.fits("pfseg", plans, batch):
            self.reasons["batch_size"] = (f"the largest batch (cap {MAX_BATCH_SIZE}) whose PFSeg step "
                                          f"fits the {self.gpu_memory_gb:g} GiB budget")
        else:
            self.reasons["batch_size"] = "1: the PFSeg step exceeds the budget (--lr-scale was forced)"
        self.patch_plan(plans, patch=_half_patch(plans.hr_shape_zyx, n_pool), batch=batch)
        self.training_plan(plans)
        self.memory_record(plans)
        return plans

    def small_structure_check(self, plans: Plans) -> None:
        comps = self.fp.get("dataset", {}).get("components", {}).get("ET", {})
        size_mm3 = comps.get("size_mm3_voxel_weighted_p5")
        if not size_mm3:
            self.reasons["small_structures"] = "no enhancing-tumour components in the labels"
            return
        lr_voxel_mm3 = float(np.prod([t * s for t, s in zip(plans.target_spacing_zyx, plans.lr_scale_zyx)]))
        lr_voxels = size_mm3 / lr_voxel_mm3
        text = (f"5 % of the ET volume lies in components under {size_mm3:.1f} mm^3 = {lr_voxels:.1f} LR "
                f"voxels at LR scale {plans.lr_scale_zyx}")
        if lr_voxels < SMALL_STRUCTURE_MIN_LR_VOXELS:
            self.warnings.append(f"small tumour structures: {text}, under {SMALL_STRUCTURE_MIN_LR_VOXELS:g} "
                                 "LR voxels; the LR input may miss them (consider --lr-scale 1 on some axes)")
            text += " (warning: under 2 LR voxels)"
        self.reasons["small_structures"] = text

    def patch_plan(self, plans: Plans, patch: list[int], batch: int, fixed: bool = False) -> None:
        """The baselines' patch: as planned, shrunk (largest axis first) until every one fits."""
        step = 2 ** plans.network.n_pool
        original = list(patch)
        shrunk = False
        while True:
            plans.patch_based = dataclasses.replace(plans.patch_based, patch_shape_zyx=list(patch),
                                                    batch_size=batch, step=SLIDING_WINDOW_STEP)
            if fixed or all(self.fits(n, plans, batch) for n in PATCH_BASED_NETWORKS):
                break
            axis = int(np.argmax(patch))
            if patch[axis] <= MIN_BOTTLENECK * step:
                if batch > 1:
                    batch -= 1
                    patch = list(original)
                    continue
                self.warnings.append("the patch-based baselines do not fit the budget even at the "
                                     f"smallest patch {patch}")
                break
            patch[axis] -= step
            shrunk = True
        if fixed:
            why = "the paper's baseline patch (HR / 2 per axis; 27 windows at step 0.5)"
        elif shrunk:
            why = (f"HR / 2 per axis ({original}) shrunk, largest axis first, until the baselines fit "
                   "the budget")
        else:
            why = f"HR / 2 per axis (the paper's fraction), a multiple of 2**{plans.network.n_pool}"
        self.reasons["patch_based.patch_shape_zyx"] = why
        self.reasons["patch_based.batch_size"] = ("the PFSeg batch, so every method sees as many cases "
                                                  "per step")
        self.reasons["patch_based.step"] = "sliding-window step 0.5 of the patch (the paper's 50 % overlap)"

    def training_plan(self, plans: Plans) -> None:
        iterations = max(1, math.ceil(self.n_train / plans.batch_size))
        training = TrainingPlan(iterations_per_epoch=iterations)
        why_epochs = "100 epochs, as in the paper"
        if self.preset == "demo":
            training.epochs = DEMO_EPOCHS
            training.iterations_per_epoch = DEMO_ITERATIONS_PER_EPOCH
            why_epochs = f"demo preset: {DEMO_EPOCHS} epochs of {DEMO_ITERATIONS_PER_EPOCH} iterations"
            training.lr = DEMO_LR
        plans.training = training
        self.reasons["training.epochs"] = why_epochs
        if self.preset != "demo":
            self.reasons["training.iterations_per_epoch"] = (
                f"one pass over the ~{self.n_train} training cases of a fold at batch {plans.batch_size}")
        self.reasons["training.optimizer"] = (
            "Adam, lr 1e-4, as in the paper" if self.preset != "demo"
            else f"Adam, lr {DEMO_LR:g}: the demo's short run needs a faster start")
        self.reasons["training.scheduler"] = ("ReduceLROnPlateau on validation Dice (the paper); the "
                                              "trainer uses poly decay when a split has no validation cases")
        self.reasons["training.ssl_pool"] = "the paper's SSL pooling factor k = 10"
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

    def memory_record(self, plans: Plans) -> None:
        from pfseg_pipeline.planners import memory

        peaks, batches = {}, {}
        for network in PATCH_FREE_NETWORKS + PATCH_BASED_NETWORKS:
            batch = plans.patch_based.batch_size if network in PATCH_BASED_NETWORKS else plans.batch_size
            peaks[network] = self.peak(network, plans, batch)
            batches[network] = batch
        over = [n for n, p in peaks.items() if p > self.budget]
        if over and self.preset != "paper":
            self.warnings.append(f"predicted peak above the {self.gpu_memory_gb:g} GiB budget for "
                                 f"{', '.join(over)}")
        plans.memory = {
            "budget_gb": float(self.gpu_memory_gb),
            "budget_bytes": self.budget,
            "amp": AMP,
            "allowance": {"factor": memory.ALLOWANCE_FACTOR, "context_bytes": memory.ALLOWANCE_CONTEXT_BYTES},
            "predicted_peak_bytes": peaks,
            "predicted_peak_gb": {n: round(p / GiB, 3) for n, p in peaks.items()},
            "batch_size": batches,
            "over_budget": over,
        }
        self.reasons["memory"] = ("predicted peak of one training step per network (memory model: traced "
                                  "step under FakeTensorMode, mixed precision, plus the allocator/cuDNN/"
                                  "context allowance)")

    # ---- the paper's protocol ----------------------------------------------------------------------
    def paper_plans(self) -> Plans:
        median_shape = np.median(np.asarray([c["shape_zyx"] for c in self.cases], float), axis=0)
        median_spacing = np.median(np.asarray([c["spacing_zyx"] for c in self.cases], float), axis=0)
        spacing = [float(median_spacing[0] * median_shape[0] / PAPER_Z), float(median_spacing[1]),
                   float(median_spacing[2])]
        network_plan = NetworkPlan()
        self.reasons["network"] = "the paper's widths 32-32-64-128-256, SGM 16-32-64-64, head 16"
        plans = self.base_plans(PAPER_HR, [round(s, 6) for s in spacing], network_plan)
        plans.normalization = "minmax"
        plans.lr_operator = "trilinear"
        plans.lr_scale_zyx = list(self.lr_override or [2, 2, 2])
        plans.guidance = GuidancePlan(list(PAPER_GUIDANCE), "center")
        plans.preprocessing = {"crop": "center", "center_crop_zyx": [None, PAPER_IN_PLANE, PAPER_IN_PLANE],
                               "resample": "shape", "resampled_shape_zyx": list(PAPER_HR), "image_order": 1}
        self.reasons.update({
            "target_spacing_zyx": (f"what the paper's grid gives: z {median_shape[0]:.0f} -> {PAPER_Z} "
                                   "slices, in-plane unchanged"),
            "hr_shape_zyx": "the paper's HR grid 128x192x192 (z y x)",
            "lr_scale_zyx": "the paper's LR input 64x96x96 = HR / 2" if self.lr_override is None
            else "as requested (--lr-scale)",
            "lr_operator": "the paper's linear (trilinear) resampling",
            "guidance": "the paper's fixed centre patch 32x48x48 = HR / 4",
            "normalization": "the paper's per-volume min-max to [0, 1]",
            "preprocessing": f"the paper's fixed centred in-plane crop to {PAPER_IN_PLANE} and z resampled "
                             f"to {PAPER_Z} slices linearly (no brain-box crop)",
            "batch_size": "the paper's batch 1",
        })
        plans.batch_size = 1
        if not self.fits("pfseg", plans, 1):
            need = _gib(self.peak("pfseg", plans, 1))
            self.warnings.append(f"paper preset: the PFSeg step needs {need} GiB, more than the "
                                 f"{self.gpu_memory_gb:g} GiB budget")
        self.patch_plan(plans, patch=list(PAPER_PATCH), batch=1, fixed=True)
        self.reasons["patch_based.batch_size"] = "the paper's batch 1"
        self.training_plan(plans)
        self.memory_record(plans)
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


def _static_bytes(detail: dict) -> int | None:
    """Upper bound of the batch-independent bytes of a traced step: parameters, buffers, Adam's
    state and one full set of gradients (the breakdown is taken at the peak, where gradients
    may be partly allocated, so the parameters' size stands in for them)."""
    breakdown = (detail or {}).get("breakdown") or {}
    try:
        params = breakdown["Parameter"]
        return int(params + breakdown.get("Buffer", 0) + breakdown.get("Optstate", 0) + params)
    except KeyError:
        return None


def _guidance(hr: Sequence[int], lr: Sequence[int], network_plan: NetworkPlan) -> list[int]:
    from pfseg_pipeline.planners.memory import guidance_patch_for

    return guidance_patch_for(hr, lr, network_plan)


def _half_patch(hr: Sequence[int], n_pool: int) -> list[int]:
    """HR / 2 per axis, rounded down to a multiple of 2**n_pool (at least MIN_BOTTLENECK of them)."""
    step = 2 ** n_pool
    return [max(MIN_BOTTLENECK * step, (h // 2) // step * step) for h in hr]


def _gib(n: int) -> str:
    return f"{n / GiB:.2f}"


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
        "baseline_patch_zyx": plans.patch_based.patch_shape_zyx,
        "predicted_peak_gb": plans.memory.get("predicted_peak_gb", {}),
        "budget_gb": plans.memory.get("budget_gb"),
    }
