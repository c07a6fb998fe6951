"""The memory model: the peak GPU memory of one training step, predicted without a GPU.

Preferred method (`mem_tracker`): build the network, a training batch and Adam inside
`torch._subclasses.fake_tensor.FakeTensorMode` (tensors carry shapes and dtypes but no storage),
run one warm-up step (it creates Adam's state), then one step under PyTorch's own
`torch.distributed._tools.mem_tracker.MemTracker`: forward (`model.forward_train`), the real
loss, backward, `optimizer.step()`, `zero_grad()`. The tracker follows every tensor storage
created and freed, so its peak is the step's peak of parameters, gradients, optimiser state,
activations and temporaries, at the planned shape and batch, in a fraction of a second, with
nothing allocated. `MemTracker` is a private API: tests/planners/test_memory.py pins it.

Fallback (`saved_tensors`, when the private API fails): run the forward pass for real at two
small shapes, count the bytes autograd saves for backward (`saved_tensors_hooks`), extrapolate
linearly in voxels (slope + constant), and add parameters, gradients and Adam's two moments.

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
    from pfseg_pipeline.networks.registry import PATCH_FREE

    shape = [int(s) for s in shape_zyx]
    out = copy.deepcopy(plans)
    if network in PATCH_FREE:
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


def _cache_key(network: str, plans, batch_size: int, amp: bool, options: dict, method: str) -> str:
    """What the traced step depends on: the network's input shape and build, the loss settings."""
    from pfseg_pipeline.networks.registry import PATCH_FREE

    d = plans.to_json()
    relevant = {k: d[k] for k in ("modalities", "target", "normalization", "lr_operator", "network")}
    relevant["loss"] = {k: d["training"][k] for k in ("loss_weights", "ssl_pool")}
    if network in PATCH_FREE:
        relevant.update({k: d[k] for k in ("hr_shape_zyx", "lr_scale_zyx", "guidance")})
    else:
        relevant["patch_shape_zyx"] = d["patch_based"]["patch_shape_zyx"]
    return json.dumps([network, relevant, batch_size, amp, options, method], sort_keys=True, default=str)


def predict_peak_bytes(network: str, plans, batch_size: int, shape_zyx: Sequence[int] | None = None,
                       amp: bool = True, options: dict[str, Any] | None = None,
                       method: str = "auto") -> MemoryEstimate:
    """Predicted GPU peak of one training step of `network` built from `plans`.

    Parameters
    ----------
    network : a registry name (pfseg, unet3d, ...).
    plans : the plans the network is built from.
    batch_size : samples per step.
    shape_zyx : the training input shape; default the planned one (HR shape for patch-free
        networks, `patch_based.patch_shape_zyx` for the others).
    amp : mixed precision (float16 autocast, traced with CPU autocast's float16 policy).
    options : builder options (pfseg: use_sr, use_sgm).
    method : "auto" (tracker, falling back), "mem_tracker" or "saved_tensors".

    Results are cached per (network, plans, shape, batch, amp, options) within the process.
    """
    options = dict(options or {})
    plans = plans_at_shape(network, plans, shape_zyx)
    key = _cache_key(network, plans, batch_size, amp, options, method)
    if key in _CACHE:
        return _CACHE[key]
    t0 = time.perf_counter()
    estimate = None
    if method in ("auto", "mem_tracker"):
        try:
            traced, breakdown = tracked_step_bytes(network, plans, batch_size, amp, options)
            estimate = MemoryEstimate(with_allowance(traced), "mem_tracker",
                                      {"tensor_bytes": traced, "breakdown": breakdown})
        except Exception as exc:  # a private API: any change in it must not stop planning
            if method == "mem_tracker":
                raise
            log.warning("memory tracker unavailable (%s: %s); using the saved-tensor estimate",
                        type(exc).__name__, exc)
    if estimate is None:
        traced, breakdown = saved_tensor_step_bytes(network, plans, batch_size, amp, options)
        estimate = MemoryEstimate(with_allowance(traced), "saved_tensors",
                                  {"tensor_bytes": traced, "breakdown": breakdown})
    from pfseg_pipeline.networks.registry import input_shape

    estimate.detail.update({
        "network": network, "batch_size": batch_size, "shape_zyx": input_shape(network, plans),
        "amp": amp, "allowance": {"factor": ALLOWANCE_FACTOR, "context_bytes": ALLOWANCE_CONTEXT_BYTES},
        "seconds": round(time.perf_counter() - t0, 3)})
    _CACHE[key] = estimate
    return estimate


# ---- the training step both methods run ---------------------------------------------------------
def loss_for(network: str, plans, options: dict[str, Any]):
    """The training loss of `network` (the real one), with `compute(outputs, batch)`."""
    from pfseg_pipeline.training.losses import PFSegLoss, SegmentationLoss

    if network == "pfseg":
        return PFSegLoss(plans.training.loss_weights, ssl_pool=plans.training.ssl_pool)
    return SegmentationLoss()


def training_step(model, optimizer, batch: dict, loss, amp: bool) -> None:
    """forward_train, loss, backward, Adam step, zero_grad (CPU autocast float16 when `amp`)."""
    with torch.autocast("cpu", dtype=torch.float16, enabled=amp):
        outputs = model.forward_train(batch)
    total, _ = loss.compute(outputs, batch)
    total.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _build(network: str, plans, batch_size: int, options: dict[str, Any]):
    from pfseg_pipeline.networks.registry import build_network, example_batch

    model = build_network(network, plans, **options)
    model.train()
    # fused: one operator per step instead of one per tensor (the tracker's cost is per
    # operator); CUDA's default (foreach) adds temporaries of about the parameters' size at the
    # optimiser step, after backward has freed the activations, so the peak is the same.
    optimizer = torch.optim.Adam(model.parameters(), lr=plans.training.lr, fused=True)
    batch = example_batch(network, plans, batch_size)
    return model, optimizer, batch


def init_optimizer_state(model, optimizer) -> None:
    """Create Adam's state (what a first step leaves behind) without running the network."""
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def tracked_step_bytes(network: str, plans, batch_size: int, amp: bool = True,
                       options: dict[str, Any] | None = None) -> tuple[int, dict[str, int]]:
    """Peak tensor bytes of one training step, traced by MemTracker under FakeTensorMode."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.distributed._tools.mem_tracker import MemTracker

    options = dict(options or {})
    with FakeTensorMode():
        model, optimizer, batch = _build(network, plans, batch_size, options)
        loss = loss_for(network, plans, options)
        init_optimizer_state(model, optimizer)  # the warm-up: Adam's state now exists
        tracker = _tracker_class(MemTracker)()  # one per step: it refuses to track a second one
        tracker.track_external(model, optimizer, *[t for t in batch.values() if isinstance(t, torch.Tensor)])
        with tracker:
            training_step(model, optimizer, batch, loss, amp)
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
    from pfseg_pipeline.networks.registry import PATCH_FREE

    if network in PATCH_FREE:
        divisor = list(plans.hr_divisor_zyx)
    else:
        divisor = [2 ** plans.network.n_pool] * 3
    base = [2 * d for d in divisor]  # a 2x2x2 bottleneck: instance norm needs more than one voxel
    return [base, [2 * base[0], *base[1:]]]


def saved_tensor_step_bytes(network: str, plans, batch_size: int, amp: bool = True,
                            options: dict[str, Any] | None = None) -> tuple[int, dict[str, int]]:
    """The fallback: saved-for-backward bytes at two small real shapes, extrapolated linearly."""
    from pfseg_pipeline.networks.registry import input_shape

    options = dict(options or {})
    target_voxels = 1
    for n in input_shape(network, plans):
        target_voxels *= int(n)
    points = []
    params = 0
    for shape in _small_shapes(network, plans):
        small = plans_at_shape(network, plans, shape)
        torch.manual_seed(0)
        model, _, batch = _build(network, small, 1, options)
        loss = loss_for(network, small, options)
        params = sum(p.numel() * p.element_size() for p in model.parameters())
        saved = _saved_bytes(model, batch, loss)
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
        batch = _build_batch_meta(network, plans, batch_size)
    batch_bytes = sum(t.numel() * t.element_size() for t in batch.values() if isinstance(t, torch.Tensor))
    state = 4 * params  # parameters + gradients + Adam's two moments, float32
    total = int(activations + state + batch_bytes)
    return total, {"activations": int(activations), "params_grads_adam": state, "batch": batch_bytes,
                   "saved_bytes_per_voxel": slope}


def _build_batch_meta(network: str, plans, batch_size: int) -> dict:
    from pfseg_pipeline.networks.registry import example_batch

    try:
        return example_batch(network, plans, batch_size, device="meta")
    except Exception:  # a meta tensor cannot run every operation; count image + target only
        from pfseg_pipeline.networks.registry import input_shape

        shape = input_shape(network, plans)
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


# ---- an independent measurement of a real CPU step (for tests and benchmarks) -------------------
def measured_cpu_step_bytes(network: str, plans, batch_size: int, amp: bool = False,
                            options: dict[str, Any] | None = None, seed: int = 0) -> dict[str, int]:
    """Peak bytes of one REAL training step on the CPU, read from the allocator's own events.

    The step runs for real under `torch.profiler` with `profile_memory=True`, which records
    every allocation and free of the CPU allocator (c10) with its size. The peak is the bytes
    alive before the step (parameters, Adam's state, the batch: summed from their storages) plus
    the maximum running sum of the recorded allocations. Returned:

    - `allocator_peak`: everything the allocator handed out, including the scratch buffers that
      kernels allocate and free inside one operator (the CPU's im2col/vol2col buffers: on a GPU
      their counterpart is the cuDNN workspace, which `ALLOWANCE_FACTOR` covers);
    - `tensor_peak`: the same without that scratch (allocations freed inside the top-level ATen
      operator that made them): the tensor-level peak the memory model predicts.
    """
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    options = dict(options or {})
    torch.manual_seed(seed)
    model, optimizer, batch = _build(network, plans, batch_size, options)
    loss = loss_for(network, plans, options)
    training_step(model, optimizer, batch, loss, amp)  # warm-up, as the tracker's
    tensors = list(model.parameters()) + [t for t in batch.values() if isinstance(t, torch.Tensor)]
    tensors += [v for state in optimizer.state.values() for v in state.values()
                if isinstance(v, torch.Tensor)]
    alive: dict[int, int] = {}
    for t in tensors:
        s = t.untyped_storage()
        if s.nbytes():
            alive[s.data_ptr()] = s.nbytes()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        training_step(model, optimizer, batch, loss, amp)

    events: list[tuple[int, int, int, Any]] = []  # (time, bytes, ptr, the top-level ATen op node)

    def walk(node, top):
        if node.typed[0] == _EventType.Allocation:
            a = node.typed[1]
            events.append((node.start_time_ns, int(a.alloc_size), int(a.ptr), top))
            return
        if top is None and node.name.startswith("aten::"):
            top = node  # kept alive in `events`, compared by identity
        for child in node.children:
            walk(child, top)

    roots = prof.profiler.kineto_results.experimental_event_tree()
    for root in roots:
        walk(root, None)
    events.sort(key=lambda e: e[0])
    open_at: dict[int, tuple[int, Any]] = {}
    scratch: set[int] = set()
    for i, (_, size, ptr, top) in enumerate(events):
        if size > 0:
            open_at[ptr] = (i, top)
        else:
            j, top_alloc = open_at.pop(ptr, (None, None))
            if j is not None and top is not None and top_alloc is top:
                scratch.update((i, j))
    base = sum(alive.values())
    running = tensor_running = peak = tensor_peak = 0
    for i, (_, size, _, _) in enumerate(events):
        running += size
        peak = max(peak, running)
        if i not in scratch:
            tensor_running += size
            tensor_peak = max(tensor_peak, tensor_running)
    return {"allocator_peak": base + peak, "tensor_peak": base + tensor_peak, "alive_before": base,
            "n_allocations": sum(1 for e in events if e[1] > 0)}
