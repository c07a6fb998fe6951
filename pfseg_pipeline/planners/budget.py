"""The budget search: what fits a GPU memory budget, by the memory model's figure.

`Budget` answers "does this network's training step fit" for candidate plans (one traced step
per candidate, cached), and searches with it: the largest batch, the smallest LR scale whose
step fits, the largest baseline patch that fits. It writes the reasons and warnings of what it
decided into the planner's, and the predicted peaks into `plans.memory`. The presets
(planners/planner.py, presets.py) decide what to search over; this module only measures.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from pfseg_pipeline.errors import UserError
from pfseg_pipeline.networks.registry import NETWORKS, network_spec, planned_ablation
from pfseg_pipeline.planners.memory import GiB
from pfseg_pipeline.plans import Plans

MAX_LR_SCALE = 8                    # beyond this the LR input no longer shows the tumour
MIN_BOTTLENECK = 2                  # voxels per axis at the deepest level (InstanceNorm statistics)
AMP = True                          # the trainer uses mixed precision on CUDA
# every network, patch-free first (the table order of plans.memory)
TABLE_ORDER = tuple(sorted(NETWORKS, key=lambda n: not NETWORKS[n].patch_free))
PATCH_BASED = tuple(n for n in TABLE_ORDER if not NETWORKS[n].patch_free)

# (network, plans, batch) -> a MemoryEstimate (or plain predicted bytes)
PeakFn = Callable[[str, Plans, int], Any]


def default_peak_fn(network: str, plans: Plans, batch_size: int):
    """The memory model's figure; PFSeg's for the branches the plan trains."""
    from pfseg_pipeline.planners.memory import predict_peak_bytes

    return predict_peak_bytes(network, plans, batch_size, amp=AMP, ablation=planned_ablation(network, plans))


def gib(n: int) -> str:
    return f"{n / GiB:.2f}"


class Budget:
    """The memory budget of one planning run and the searches against it.

    Parameters
    ----------
    gpu_memory_gb : the budget in GiB for one training step.
    peak_fn : (network, plans, batch) -> predicted peak bytes (default: the memory model).
    reasons, warnings : the planner's; the searches add their lines to them.
    """

    def __init__(self, gpu_memory_gb: float, peak_fn: PeakFn | None, reasons: dict[str, str],
                 warnings: list[str]):
        self.gpu_memory_gb = gpu_memory_gb
        self.bytes = int(gpu_memory_gb * GiB)
        self.peak_fn = peak_fn or default_peak_fn
        self.reasons, self.warnings = reasons, warnings
        self.peaks: dict[tuple, tuple[int, int | None]] = {}

    # ---- one candidate ----------------------------------------------------------------------------
    def estimate(self, network: str, plans: Plans, batch: int) -> tuple[int, int | None]:
        """(predicted bytes, batch-independent tensor bytes or None), cached per candidate."""
        if not network_spec(network).patch_free:  # only the patch matters to them
            key = (network, batch, tuple(plans.patch_based.patch_shape_zyx))
        else:
            key = (network, batch, tuple(plans.hr_shape_zyx), tuple(plans.lr_scale_zyx),
                   tuple(plans.guidance.patch_shape_zyx), planned_ablation(network, plans))
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
        return self.peak(network, plans, batch) <= self.bytes

    # ---- searches ---------------------------------------------------------------------------------
    def largest_batch(self, network: str, plans: Plans, cap: int) -> int:
        """The largest batch <= cap that fits (0 when batch 1 does not).

        The peak grows linearly with the batch (activations scale, weights and optimiser state
        do not). From the batch-1 trace, a lower bound of the batch-2 peak rules batch 2 out
        without a second trace when it clearly cannot fit; otherwise batch 2 is traced, the
        slope gives the candidate, and the candidate is checked by its own trace.
        """
        from pfseg_pipeline.planners.memory import with_allowance

        p1, static = self.estimate(network, plans, 1)
        if p1 > self.bytes:
            return 0
        if cap == 1:
            return 1
        if static is not None:
            lower_2 = with_allowance(2 * _tensor_bytes(p1) - static)
            if lower_2 > self.bytes:
                return 1
        p2 = self.peak(network, plans, 2)
        if p2 > self.bytes:
            return 1
        slope = max(p2 - p1, 1)
        batch = min(cap, 1 + int((self.bytes - p1) // slope))
        while batch > 2 and not self.fits(network, plans, batch):
            batch -= 1
        return max(batch, 2)

    def lr_scale(self, network: str, start: list[int], candidate: Callable[[list[int]], Plans],
                 forced: bool, refusal: Callable[[list[int]], str | None] | None = None) -> Plans:
        """The plan of the smallest LR scale from `start` whose `network` step fits at batch 1.

        The LR input is a memory device: the scale is raised only while the step at batch 1 is
        predicted over the budget, one axis by one step at a time, on the axis whose raise gives
        the most memory back. All three raises are traced, since the HR shape is a multiple of
        lr_scale * 2**n_pool and can grow with the scale, so the largest LR axis is not always
        the cheapest. `refusal(lr)` returns why a scale is refused (the small-structure check)
        or None; a refused raise is not taken, and when no admissible raise is left the plan is
        a UserError naming the figures. `forced`: `start` as asked (--lr-scale), with a warning
        when it is over the budget. The reason names every candidate's predicted peak.
        """
        lr = list(start)
        plans = candidate(lr)
        steps = [f"{lr} {gib(self.peak(network, plans, 1))}"]
        while not self.fits(network, plans, 1):
            over = self.peak(network, plans, 1)
            steps[-1] += " (over)"
            if forced:
                self.warnings.append(
                    f"--lr-scale {lr}: the PFSeg step at batch 1 needs {gib(over)} GiB, more than the "
                    f"{self.gpu_memory_gb:g} GiB budget (kept because it was asked for)")
                break
            raises, refused = [], []
            for axis in range(3):
                raised = [s + (a == axis) for a, s in enumerate(lr)]
                why_not = (f"{raised} is over the limit {MAX_LR_SCALE}" if raised[axis] > MAX_LR_SCALE
                           else refusal(raised) if refusal else None)
                if why_not:
                    refused.append(why_not)
                    continue
                option = candidate(raised)
                raises.append((self.peak(network, option, 1), -plans.lr_shape_zyx[axis], raised, option))
            if not raises:
                raise UserError(
                    f"PFSeg does not fit in {self.gpu_memory_gb:g} GiB at LR scale {lr} (batch 1 needs "
                    f"{gib(over)} GiB) and no larger scale is admissible ({'; '.join(refused)}): plan with "
                    "a larger --gpu-memory-gb or the demo preset, or accept a coarser input with --lr-scale")
            # the most memory back; on a tie, the axis whose LR extent is largest
            _, _, lr, plans = min(raises, key=lambda r: r[:2])
            steps.append(", ".join(f"{r[2]} {gib(r[0])}" for r in raises)
                         + (f" (refused: {'; '.join(refused)})" if refused else "") + f" -> {lr}")
        if self.fits(network, plans, 1):
            steps[-1] += " (fits)"
        figures = (f"predicted PFSeg step peak at batch 1 in GiB against the {self.gpu_memory_gb:g} GiB "
                   f"budget: {'; then '.join(steps)}")
        if forced:
            self.reasons["lr_scale_zyx"] = f"as requested (--lr-scale); {figures}"
        elif len(steps) > 1:
            self.reasons["lr_scale_zyx"] = (f"the smallest scale whose step fits, raised one axis at a time "
                                            f"where the raise gives the most memory back; {figures}")
        else:
            self.reasons["lr_scale_zyx"] = f"the smallest scale, {lr}: batch 1 fits; {figures}"
        return plans

    def patch_plan(self, plans: Plans, patch: list[int], batch: int, fixed: bool = False) -> None:
        """The baselines' patch: as planned, shrunk (largest axis first) until every one fits."""
        step = 2 ** plans.network.n_pool
        original = list(patch)
        shrunk = False
        while True:
            plans.patch_based = dataclasses.replace(plans.patch_based, patch_shape_zyx=list(patch),
                                                    batch_size=batch)
            if fixed or all(self.fits(n, plans, batch) for n in PATCH_BASED):
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
            why = (f"HR / 2 per axis (the paper's fraction), rounded up to a multiple of "
                   f"2**{plans.network.n_pool}")
        self.reasons["patch_based.patch_shape_zyx"] = why
        self.reasons["patch_based.batch_size"] = ("the PFSeg batch, so every method sees as many cases "
                                                  "per step")
        self.reasons["patch_based.step"] = (f"sliding-window step {plans.patch_based.step:g} of the patch "
                                            "(the paper's 50 % overlap)")

    def memory_record(self, plans: Plans, warn: bool = True) -> None:
        """`plans.memory`: every network's predicted peak at its planned batch, and the budget."""
        from pfseg_pipeline.planners import memory

        peaks, batches = {}, {}
        for network in TABLE_ORDER:
            batch = network_spec(network).batch_size(plans)
            peaks[network] = self.peak(network, plans, batch)
            batches[network] = batch
        over = [n for n, p in peaks.items() if p > self.bytes]
        if over and warn:
            self.warnings.append(f"predicted peak above the {self.gpu_memory_gb:g} GiB budget for "
                                 f"{', '.join(over)}")
        plans.memory = {
            "budget_gb": float(self.gpu_memory_gb),
            "budget_bytes": self.bytes,
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


def _tensor_bytes(predicted: int) -> int:
    """Invert the allowance: predicted device bytes -> traced tensor bytes."""
    from pfseg_pipeline.planners.memory import ALLOWANCE_CONTEXT_BYTES, ALLOWANCE_FACTOR

    return int((predicted - ALLOWANCE_CONTEXT_BYTES) / ALLOWANCE_FACTOR)


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


def round_up(value: float, multiple: int) -> int:
    return int(math.ceil(value / multiple - 1e-9) * multiple)


def half_patch(hr: Sequence[int], n_pool: int) -> list[int]:
    """HR / 2 per axis, rounded up to a multiple of 2**n_pool (at least MIN_BOTTLENECK of them,
    at most the HR extent). Up, so a baseline never sees less than the paper's half: at LR scale
    2 the HR shape is a multiple of 2 * 2**n_pool and HR / 2 is exact; at scale 1 it need not be
    (HR 40 at 3 poolings: 24, not 16)."""
    step = 2 ** n_pool
    return [min(h, max(MIN_BOTTLENECK * step, round_up(h / 2, step))) for h in hr]
