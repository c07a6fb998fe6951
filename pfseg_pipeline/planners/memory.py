"""The memory model: the peak GPU memory of one training step, predicted without a GPU.

Preferred method (`mem_tracker`): build the trainer's step (`networks.step.build_step`: the
network, its loss, the plans' optimiser, a GradScaler and a training batch) inside
`torch._subclasses.fake_tensor.FakeTensorMode` (tensors carry shapes and dtypes but no storage),
create the optimiser's state (what a first step leaves behind), then run the one training step
(`networks.step.train_step`: forward_train under autocast, the loss, scaled backward, gradient
clipping, optimiser step, scaler update) under PyTorch's own
`torch.distributed._tools.mem_tracker.MemTracker`. The tracker follows every tensor storage
created and freed, so its peak is the step's peak of parameters, gradients, optimiser state,
activations and temporaries, at the planned shape and batch, in a fraction of a second, with
nothing allocated. `MemTracker` is a private API: tests/planners/test_memory.py pins it.

Mixed precision is traced as CUDA runs it, with CPU autocast's float16 policy and an enabled
GradScaler. The scaler runs under FakeTensorMode only beside a fused optimiser, which is why the
trace builds one: with torch's default implementation `scaler.step` reads the overflow flag
with `.item()`, which a fake tensor cannot answer (DataDependentOutputException); a fused
optimiser takes the flag as a tensor. The peak is the same (the default's per-tensor
temporaries come after backward has freed the activations), and the update differs from the
default's only in the last bits.

Fallback (`saved_tensors`, when the private API fails): run the forward pass for real at two
small shapes, count the bytes autograd saves for backward (`saved_tensors_hooks`), extrapolate
linearly in voxels (slope + constant), and add parameters, gradients and Adam's two moments.

An independent check of both, a real CPU step measured from the allocator's own events, is
planners/measured_memory.py (tests and benchmarks).

Neither sees what a GPU adds beyond the tensors; `ALLOWANCE_*` below states that part.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from pfseg_pipeline.networks.losses import FULL
from pfseg_pipeline.networks.step import TrainingStep, build_step

log = logging.getLogger(__name__)

GiB = 2**30
# --- The stated allowance for what the tensor-level trace does not see (to be calibrated on a
# GPU by bench/gpu_check against torch.cuda.max_memory_reserved + the context). -------------------
# The caching allocator rounds blocks up and fragments (reserved > allocated), and cuDNN picks
# convolution algorithms with workspaces of their own: a proportional margin on the traced peak.
ALLOWANCE_FACTOR = 1.15
# The CUDA context, cuDNN/cuBLAS handles and kernels loaded on the device: a fixed amount that
# never shows up in max_memory_allocated but does occupy the card.
ALLOWANCE_CONTEXT_BYTES = int(0.5 * GiB)
# Fallback only: with mixed precision, convolution outputs (most of the saved activations) are
# kept in float16 while norms, losses and master weights stay float32: about 0.6x activations.
AMP_ACTIVATION_FACTOR = 0.6
# Fallback only: temporaries alive at the backward peak (gradients of the activations being
# processed) on top of the saved activations; the tracker's breakdown shows about 20-30 %.
FALLBACK_TEMP_FACTOR = 1.3


@dataclass(frozen=True)
class MemoryEstimate:
    """Predicted peak of one training step on a GPU, in bytes (allowance included)."""

    bytes: int
    method: str                       # "mem_tracker" | "saved_tensors"
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def gib(self) -> float:
        return self.bytes / GiB


def with_allowance(tensor_bytes: int) -> int:
    """Traced tensor bytes -> predicted device bytes (allocator margin + context)."""
    return int(tensor_bytes * ALLOWANCE_FACTOR + ALLOWANCE_CONTEXT_BYTES)


_CACHE: dict[str, MemoryEstimate] = {}


def clear_cache() -> None:
    _CACHE.clear()


def plans_at_shape(network: str, plans, shape_zyx: Sequence[int] | None):
    """A copy of `plans` whose training input for `network` is `shape_zyx` (no validation).

    Patch-free networks: the HR shape (and the guidance patch that matches its bottleneck);
    patch-based ones: the patch shape.
    """
    if shape_zyx is None:
        return plans
    from pfseg_pipeline.networks.registry import network_spec

    shape = [int(s) for s in shape_zyx]
    out = copy.deepcopy(plans)
    if network_spec(network).patch_free:
        out.hr_shape_zyx = shape
        out.guidance = dataclasses.replace(
            out.guidance, patch_shape_zyx=guidance_patch_for(shape, out.lr_scale_zyx, out.network))
    else:
        out.patch_based = dataclasses.replace(out.patch_based, patch_shape_zyx=shape)
    return out


def guidance_patch_for(hr_shape_zyx: Sequence[int], lr_scale_zyx: Sequence[int], network_plan) -> list[int]:
    """The SGM patch whose encoder output matches the bottleneck: bottleneck x 2**(SGM poolings).

    At LR scale 2 and 4 poolings this is HR / 4 per axis (the paper's 32x48x48 for 128x192x192).
    """
    sgm_pools = len(network_plan.sgm_widths) - 1
    return [max(1, h // (s * 2 ** network_plan.n_pool)) * 2 ** sgm_pools
            for h, s in zip(hr_shape_zyx, lr_scale_zyx)]


def _cache_key(network: str, plans, batch_size: int, amp: bool, ablation: str, method: str) -> str:
    """What the traced step depends on: the network's input shape and build, the loss, the
    optimiser and the clipping."""
    from pfseg_pipeline.networks.registry import network_spec

    d = plans.to_json()
    relevant = {k: d[k] for k in ("modalities", "target", "normalization", "lr_operator", "network")}
    relevant["step"] = {k: d["training"][k] for k in ("loss_weights", "ssl_pool", "optimizer", "grad_clip")}
    if network_spec(network).patch_free:
        relevant.update({k: d[k] for k in ("hr_shape_zyx", "lr_scale_zyx", "guidance")})
    else:
        relevant["patch_shape_zyx"] = d["patch_based"]["patch_shape_zyx"]
    return json.dumps([network, relevant, batch_size, amp, ablation, method], sort_keys=True, default=str)


def predict_peak_bytes(network: str, plans, batch_size: int, shape_zyx: Sequence[int] | None = None,
                       amp: bool = True, ablation: str = FULL, method: str = "auto") -> MemoryEstimate:
    """Predicted GPU peak of one training step of `network` built from `plans`.

    Parameters
    ----------
    network : a registry name (pfseg, unet3d, ...).
    plans : the plans the network is built from.
    batch_size : samples per step.
    shape_zyx : the training input shape; default the planned one (HR shape for patch-free
        networks, `patch_based.patch_shape_zyx` for the others).
    amp : mixed precision (float16 autocast and the GradScaler, traced with CPU autocast's
        float16 policy).
    ablation : the ablation row (its builder options and loss terms; pfseg only).
    method : "auto" (tracker, falling back), "mem_tracker" or "saved_tensors".

    Results are cached per (network, plans, shape, batch, amp, ablation) within the process.
    """
    plans = plans_at_shape(network, plans, shape_zyx)
    key = _cache_key(network, plans, batch_size, amp, ablation, method)
    if key in _CACHE:
        return _CACHE[key]
    t0 = time.perf_counter()
    estimate = None
    if method in ("auto", "mem_tracker"):
        try:
            traced, breakdown = tracked_step_bytes(network, plans, batch_size, amp, ablation)
            estimate = MemoryEstimate(with_allowance(traced), "mem_tracker",
                                      {"tensor_bytes": traced, "breakdown": breakdown})
        except Exception as exc:  # a private API: any change in it must not stop planning
            if method == "mem_tracker":
                raise
            log.warning("memory tracker unavailable (%s: %s); using the saved-tensor estimate",
                        type(exc).__name__, exc)
    if estimate is None:
        traced, breakdown = saved_tensor_step_bytes(network, plans, batch_size, amp, ablation)
        estimate = MemoryEstimate(with_allowance(traced), "saved_tensors",
                                  {"tensor_bytes": traced, "breakdown": breakdown})
    from pfseg_pipeline.networks.registry import network_spec

    estimate.detail.update({
        "network": network, "batch_size": batch_size, "shape_zyx": network_spec(network).input_shape(plans),
        "amp": amp, "allowance": {"factor": ALLOWANCE_FACTOR, "context_bytes": ALLOWANCE_CONTEXT_BYTES},
        "seconds": round(time.perf_counter() - t0, 3)})
    _CACHE[key] = estimate
    return estimate


# ---- the traced step -------------------------------------------------------------------------
def init_optimizer_state(model, optimizer) -> None:
    """Create Adam's state (what a first step leaves behind) without running the network."""
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def traced_step(network: str, plans, batch_size: int, amp: bool = True, ablation: str = FULL,
                fused: bool = True) -> TrainingStep:
    """The step the tracker follows: the trainer's (`networks.step.build_step`), with the
    optimiser's state already created. `fused` (see the module docstring): True for the trace;
    False gives the trainer's optimiser implementation, bit for bit (tests compare the updates)."""
    step = build_step(network, plans, batch_size, ablation=ablation, amp=amp, fused=fused)
    init_optimizer_state(step.model, step.optimizer)  # the warm-up: Adam's state now exists
    return step


def tracked_step_bytes(network: str, plans, batch_size: int, amp: bool = True,
                       ablation: str = FULL) -> tuple[int, dict[str, int]]:
    """Peak tensor bytes of one training step, traced by MemTracker under FakeTensorMode."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.distributed._tools.mem_tracker import MemTracker

    with FakeTensorMode():
        step = traced_step(network, plans, batch_size, amp, ablation)
        tracker = _tracker_class(MemTracker)()  # one per step: it refuses to track a second one
        tracker.track_external(step.model, step.optimizer,
                               *[t for t in step.batch.values() if isinstance(t, torch.Tensor)])
        with tracker:
            step()
        snapshot = tracker.get_tracker_snapshot("peak")
    total = 0
    breakdown: dict[str, int] = {}
    for per_device in snapshot.values():
        for kind, value in per_device.items():
            name = kind if isinstance(kind, str) else str(getattr(kind, "value", kind))
            breakdown[name] = breakdown.get(name, 0) + int(value)
        total += int(per_device.get("Total", 0))
    if total <= 0:
        raise RuntimeError(f"MemTracker reported a peak of {total} bytes")
    return total, breakdown


def _tracker_class(base):
    """MemTracker, minus its per-module peak bookkeeping when the internals allow it.

    MemTracker updates the peak of every module seen so far after every operator (cost:
    operators x modules, 10-20x the traced step itself for PFSeg's ~250 modules). The planner
    needs the global peak only, so this subclass keeps just that part of `_update_peak_stats`.
    When the private attributes it relies on are missing (a newer torch), the stock class is used.
    """
    probe = base()
    if not all(hasattr(probe, a) for a in ("_update_peak_stats", "_curr_mem_snap", "_peak_mem",
                                            "_peak_mem_snap")):
        return base

    class GlobalPeakMemTracker(base):
        def _update_peak_stats(self, peak_state) -> None:
            for dev, dev_snap in self._curr_mem_snap.items():
                total = dev_snap.get("Total", 0)
                if self._peak_mem.get(dev, 0) < total:
                    self._peak_mem[dev] = total
                    self._peak_mem_snap[dev] = dict(dev_snap)

    return GlobalPeakMemTracker


def _small_shapes(network: str, plans) -> list[list[int]]:
    from pfseg_pipeline.networks.registry import network_spec

    if network_spec(network).patch_free:
        divisor = list(plans.hr_divisor_zyx)
    else:
        divisor = [2 ** plans.network.n_pool] * 3
    base = [2 * d for d in divisor]  # a 2x2x2 bottleneck: instance norm needs more than one voxel
    return [base, [2 * base[0], *base[1:]]]


def saved_tensor_step_bytes(network: str, plans, batch_size: int, amp: bool = True,
                            ablation: str = FULL) -> tuple[int, dict[str, int]]:
    """The fallback: saved-for-backward bytes at two small real shapes, extrapolated linearly."""
    from pfseg_pipeline.networks.registry import network_spec

    target_voxels = 1
    for n in network_spec(network).input_shape(plans):
        target_voxels *= int(n)
    points = []
    params = 0
    for shape in _small_shapes(network, plans):
        small = plans_at_shape(network, plans, shape)
        torch.manual_seed(0)
        step = build_step(network, small, 1, ablation=ablation)
        params = sum(p.numel() * p.element_size() for p in step.model.parameters())
        saved = _saved_bytes(step.model, step.batch, step.loss)
        voxels = 1
        for n in shape:
            voxels *= n
        points.append((voxels, saved))
    (v1, b1), (v2, b2) = points
    slope = (b2 - b1) / (v2 - v1)
    per_sample = max(0.0, b1 + slope * (target_voxels - v1))
    activations = per_sample * batch_size * FALLBACK_TEMP_FACTOR
    if amp:
        activations *= AMP_ACTIVATION_FACTOR
    batch_bytes = 0
    with torch.device("meta"):
        batch = _build_batch_meta(network, plans, batch_size, ablation)
    batch_bytes = sum(t.numel() * t.element_size() for t in batch.values() if isinstance(t, torch.Tensor))
    state = 4 * params  # parameters + gradients + Adam's two moments, float32
    total = int(activations + state + batch_bytes)
    return total, {"activations": int(activations), "params_grads_adam": state, "batch": batch_bytes,
                   "saved_bytes_per_voxel": slope}


def _build_batch_meta(network: str, plans, batch_size: int, ablation: str) -> dict:
    from pfseg_pipeline.networks.registry import example_batch, network_spec

    spec = network_spec(network)
    try:
        return example_batch(network, plans, batch_size, device="meta", options=spec.options(ablation))
    except Exception:  # a meta tensor cannot run every operation; count image + target only
        shape = spec.input_shape(plans)
        return {"image": torch.empty(batch_size, plans.in_channels, *shape, device="meta"),
                "target": torch.empty(batch_size, plans.out_channels, *shape, device="meta")}


def _saved_bytes(model, batch: dict, loss) -> int:
    """Bytes of the distinct storages autograd keeps for backward during one forward + loss."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor):
        if isinstance(t, torch.nn.Parameter):
            return t
        try:
            s = t.untyped_storage()
            storages[s.data_ptr()] = s.nbytes()
        except (RuntimeError, NotImplementedError):
            storages[id(t)] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        outputs = model.forward_train(batch)
        total, _ = loss.compute(outputs, batch)
    del outputs, total
    return int(sum(storages.values()))
