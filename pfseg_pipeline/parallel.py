"""One way to run a function over cases, in this process or in a pool of processes, how many
such processes the free memory allows, and how a worker process ends with its parent."""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

# A worker process itself (interpreter, numpy, scipy, nibabel) before it reads anything.
WORKER_BASE_BYTES = 250 * 2**20
# Share of the free memory the workers may fill; the rest stays for the parent and the system.
MEMORY_FRACTION = 0.8
# What `available_memory_bytes` says when the system does not tell.
UNKNOWN_FREE_MEMORY_BYTES = 4 * 2**30
PR_SET_PDEATHSIG = 1   # linux/prctl.h


def end_with_parent(parent_pid: int, signum: int = signal.SIGTERM) -> None:
    """Have the kernel send `signum` to this (worker) process when its parent dies, even by
    SIGKILL (Linux; elsewhere nothing happens), and send it now if the parent is already gone.

    A daemonic multiprocessing worker is ended only by a parent that exits normally; one whose
    parent was killed would otherwise wait on its queue forever.
    """
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signum))
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signum)


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask; all of the machine's on macOS
    and Windows, which have no affinity call)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def available_memory_bytes() -> int:
    """Free physical memory (Linux and macOS sysconf)."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return UNKNOWN_FREE_MEMORY_BYTES


def workers_for_memory(case_bytes: int, cap: int, available_bytes: int | None = None) -> int:
    """At most `cap` workers (at least 1), each holding `WORKER_BASE_BYTES` plus `case_bytes`,
    within `MEMORY_FRACTION` of the free memory (read when not given)."""
    available = available_memory_bytes() if available_bytes is None else available_bytes
    return max(1, min(cap, int(available * MEMORY_FRACTION // (WORKER_BASE_BYTES + case_bytes))))


def map_cases(fn: Callable[..., Any], tasks: Sequence[tuple], workers: int, desc: str,
              disable: bool | None = None) -> Iterator[Any]:
    """Yield `fn(*task)` for every task, with a tqdm bar (`disable` as tqdm takes it).

    With `workers <= 1` (or one task) everything runs here, in order; otherwise in a pool of
    at most `workers` processes started with spawn (safe when the caller already runs threads),
    results in the order they finish. `fn` and the tasks must be picklable for the pool: plain
    module-level functions and JSON-like data.
    """
    from tqdm import tqdm

    with tqdm(total=len(tasks), desc=desc, unit="case", leave=False, disable=disable) as bar:
        if workers <= 1 or len(tasks) <= 1:
            for task in tasks:
                yield fn(*task)
                bar.update(1)
            return
        context = multiprocessing.get_context("spawn")
        # a worker of a killed run ends with it instead of waiting for tasks forever
        with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=context,
                                 initializer=end_with_parent, initargs=(os.getpid(), signal.SIGKILL)) as pool:
            for future in as_completed([pool.submit(fn, *task) for task in tasks]):
                yield future.result()
                bar.update(1)
