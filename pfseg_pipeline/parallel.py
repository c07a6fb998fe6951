"""One way to run a function over cases, in this process or in a pool of processes."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any


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
        with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=context) as pool:
            for future in as_completed([pool.submit(fn, *task) for task in tasks]):
                yield future.result()
                bar.update(1)
