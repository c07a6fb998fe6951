"""An independent measurement of the memory model's subject: one REAL training step on the CPU.

The memory model (planners/memory.py) predicts a step's peak without running it; this module
runs the same step (`networks.step.build_step`, fused optimiser as traced) and reads the peak
from the CPU allocator's own allocation and free events. Tests and bench/memory_model.py set
the two side by side; the planner never calls it.
"""

from __future__ import annotations

from typing import Any

import torch

from pfseg_pipeline.networks.losses import FULL
from pfseg_pipeline.networks.step import build_step


def measured_cpu_step_bytes(network: str, plans, batch_size: int, amp: bool = False,
                            ablation: str = FULL, seed: int = 0,
                            memory_format: torch.memory_format = torch.contiguous_format) -> dict[str, Any]:
    """Peak bytes of one REAL training step on the CPU, read from the allocator's own events.

    The step runs for real under `torch.profiler` with `profile_memory=True`, which records
    every allocation and free of the CPU allocator (c10) with its size. The peak is the bytes
    alive before the step (parameters, Adam's state, the batch: summed from their storages) plus
    the maximum running sum of the recorded allocations. Returned:

    - `allocator_peak`: everything the allocator handed out, including the scratch buffers that
      kernels allocate and free inside one operator (the CPU's im2col/vol2col buffers: on a GPU
      their counterpart is the cuDNN workspace, which `ALLOWANCE_FACTOR` covers);
    - `tensor_peak`: the same without that scratch (allocations freed inside the top-level ATen
      operator that made them): the tensor-level peak the memory model predicts;
    - `channels_last`: whether the step's weights were in channels-last order (`memory_format`,
      the trainer's layout on a CPU; the memory model traces the default one).
    """
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(seed)
    step = build_step(network, plans, batch_size, ablation=ablation, amp=amp, fused=True,  # as traced
                      memory_format=memory_format)
    step()  # warm-up: the optimiser's state now exists, as in the trace
    # the step frees the previous gradients first thing; free them now, since the profiler does
    # not record frees of blocks allocated before it started
    step.optimizer.zero_grad(set_to_none=True)
    tensors = list(step.model.parameters()) + [t for t in step.batch.values() if isinstance(t, torch.Tensor)]
    tensors += [v for state in step.optimizer.state.values() for v in state.values()
                if isinstance(v, torch.Tensor)]
    alive: dict[int, int] = {}
    for t in tensors:
        s = t.untyped_storage()
        if s.nbytes():
            alive[s.data_ptr()] = s.nbytes()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()

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
    weight = next(p for p in step.model.parameters() if p.dim() == 5)   # the first convolution's
    return {"allocator_peak": base + peak, "tensor_peak": base + tensor_peak, "alive_before": base,
            "n_allocations": sum(1 for e in events if e[1] > 0),
            "channels_last": weight.is_contiguous(memory_format=torch.channels_last_3d)
            and not weight.is_contiguous()}
