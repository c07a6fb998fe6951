"""Distributed data parallel training: one code path for 1 or K processes.

The command line reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK) and passes the
numbers in; the library never reads the environment. A single process gets a `DistContext`
with `world_size == 1`, and every helper below is then a no-op, so the trainer never branches
on "distributed or not" except through these functions.

Rules: gloo on CPU, NCCL on GPU; DDP broadcasts rank 0's weights when it wraps the model; each
rank's loader is seeded with its rank; only rank 0 writes files; barriers around checkpoints.
The networks' `forward(batch_dict)` dispatches to `forward_train`, so `ddp_model(batch)` runs
the training forward through DDP's hooks (gradient all-reduce).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    # a gloo group for small host-side messages (stop flags, validation Dice), so checking them
    # never waits for the GPU; None: the default group (already gloo on CPU)
    control_group: Any = field(default=None, compare=False, repr=False)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(rank: int, world_size: int, local_rank: int, device_type: str,
                     init_method: str = "env://", timeout_minutes: float = 60) -> DistContext:
    """Join the process group (gloo on CPU, NCCL on CUDA); a no-op for one process."""
    ctx = DistContext(int(rank), int(world_size), int(local_rank))
    if not ctx.enabled:
        return ctx
    timeout = datetime.timedelta(minutes=timeout_minutes)
    if not dist.is_initialized():
        if device_type == "cuda":
            torch.cuda.set_device(ctx.local_rank)
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo", init_method=init_method,
                                rank=ctx.rank, world_size=ctx.world_size, timeout=timeout)
    control = dist.new_group(backend="gloo", timeout=timeout) if dist.get_backend() != "gloo" else None
    return DistContext(ctx.rank, ctx.world_size, ctx.local_rank, control)


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(model: nn.Module, ctx: DistContext, device: torch.device) -> nn.Module:
    """DistributedDataParallel around `model` when several processes train, else `model`."""
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier(group=ctx.control_group)


def all_mean(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """The mean of a tensor over ranks (returned on the tensor's device)."""
    if not ctx.enabled:
        return values
    device = values.device if dist.get_backend() == "nccl" else torch.device("cpu")
    buf = values.detach().to(device, torch.float64).clone()
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return (buf / ctx.world_size).to(values.device)


def any_rank(flag: bool, ctx: DistContext) -> bool:
    """True on every rank when it is True on any (e.g. a stop signal seen by one rank)."""
    if not ctx.enabled:
        return bool(flag)
    buf = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(buf, op=dist.ReduceOp.MAX, group=ctx.control_group)
    return bool(buf.item() > 0)


def broadcast_floats(values: list[float] | None, length: int, ctx: DistContext) -> list[float]:
    """Rank 0's list of `length` floats on every rank (e.g. validation Dice computed on rank 0)."""
    if not ctx.enabled:
        return list(values or [])
    buf = torch.zeros(length, dtype=torch.float64)
    if ctx.is_main:
        buf[:] = torch.tensor(values, dtype=torch.float64)
    dist.broadcast(buf, src=0, group=ctx.control_group)
    return buf.tolist()


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside a DDP wrapper (what checkpoints and validation use)."""
    return model.module if hasattr(model, "module") else model
