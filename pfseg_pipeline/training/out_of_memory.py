"""A CUDA out-of-memory error in training, reported as the planner's mistake it is.

The plan (batch, LR scale, shapes) was chosen to fit a memory budget; when the device runs out
anyway, the user needs no traceback but the figures and the way out: the planned peak, the
device's memory, which checkpoint is intact, and the command that plans again for less memory.
It is an internal error (exit 1: the plan was ours), told in one line (`DeviceMemoryError`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shlex
from collections.abc import Iterator
from pathlib import Path

import torch

from pfseg_pipeline.errors import DeviceMemoryError, UserError
from pfseg_pipeline.fileio import read_json
from pfseg_pipeline.plans import Plans

log = logging.getLogger(__name__)

GiB = 2 ** 30
# the budget to plan again with: a fifth under what failed (the smaller of the old budget and the
# device), so that the next plan leaves room for what the memory model did not see
REPLAN_FRACTION = 0.8


def device_memory_bytes(device: torch.device) -> int | None:
    """Total memory of a CUDA device; of the machine for the CPU; None when unknown."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def replan_budget_gb(plans: Plans, device_bytes: int | None) -> float:
    """The --gpu-memory-gb to plan again with, rounded down to 0.5 GiB (at least 0.5)."""
    limits = [b for b in (plans.memory.get("budget_gb"), device_bytes and device_bytes / GiB) if b]
    base = min(limits) if limits else 11.0
    return max(0.5, math.floor(2 * REPLAN_FRACTION * base) / 2)


def replan_command(plans: Plans, dataset_file: Path, budget_gb: float) -> str:
    from pfseg_pipeline.preprocessing.pipeline import default_modalities

    try:
        raw = read_json(dataset_file).get("raw_root") or "RAW"
    except (UserError, AttributeError):
        raw = "RAW"
    words = ["pfseg_plan_and_preprocess", "-i", str(raw), "-d", plans.dataset_name, "--preset", plans.preset]
    if tuple(plans.modalities) != tuple(default_modalities(plans.preset)):
        words += ["--modalities", *plans.modalities]
    return shlex.join(words + ["--gpu-memory-gb", f"{budget_gb:g}"])


def out_of_memory_message(plans: Plans, network: str, batch_size: int, device: torch.device,
                          saved_epoch: int | None, fold_dir: Path, dataset_file: Path) -> str:
    device_bytes = device_memory_bytes(device)
    peak = (plans.memory.get("predicted_peak_bytes") or {}).get(network)
    planned = (f"the plan predicted a peak of {peak / GiB:.1f} GiB for {network} at batch "
               f"{plans.memory.get('batch_size', {}).get(network, batch_size)}" if peak
               else f"plans.json holds no predicted peak for {network}")
    budget = plans.memory.get("budget_gb")
    checkpoint = (f"{fold_dir / 'checkpoint_latest.pt'} ({saved_epoch} epoch(s) done) is intact"
                  if saved_epoch is not None else "no checkpoint had been saved yet")
    command = replan_command(plans, dataset_file, replan_budget_gb(plans, device_bytes))
    where = f"{device} ({device_bytes / GiB:.1f} GiB)" if device_bytes else str(device)
    within = f" within a budget of {budget:g} GiB" if budget else ""
    return (f"out of memory on {where} training {network} at batch {batch_size}: {planned}{within}; "
            f"{checkpoint}; plan again for less memory, then train again (a new plan starts over): {command}")


@contextlib.contextmanager
def out_of_memory_as_plan_error(trainer, dataset_file: Path) -> Iterator[None]:
    """Turn a `torch.OutOfMemoryError` in the block (the trainer's `fit`) into one
    `DeviceMemoryError` line about `trainer`'s plan."""
    try:
        yield
    except torch.OutOfMemoryError as exc:
        log.debug("out of memory: %s", exc)
        info = trainer.run_info
        message = out_of_memory_message(trainer.plans, info["network"], info["batch_size"], trainer.device,
                                        trainer.saved_epoch, trainer.output_dir, dataset_file)
        raise DeviceMemoryError(message) from None
