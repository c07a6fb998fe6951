"""How a training process shares its CPU cores between torch's threads and the loader's workers.

On a CPU the training step (torch's intra-op threads) and the augmentation workers (one process
each, one thread each) compete for the same cores. Sizing them independently (torch's default:
one thread per core, plus cores - 1 workers) put 3 busy threads on 2 cores, and two trainings
side by side 6 on 2: each ran at a fraction of its speed. `cpu_split` gives threads + workers
that add up to the cores this process may use (its affinity mask, divided among the processes
of a DDP run), by the rule measured in bench/loader_speed.py (docs/BENCHMARKS.md).

On a GPU the step runs on the device: the torch threads are left as they are and the cores
left after the training process's own go to the workers, as before. The OpenMP wait the
commands set before torch loads is cli/__init__.py's `OPENMP_ENV` (bench/omp_wait.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from pfseg_pipeline.parallel import available_cores

MAX_LOADER_WORKERS = 8   # background augmentation processes: more rarely feed a step faster


@dataclass(frozen=True)
class CpuSplit:
    """`threads`: torch's intra-op threads in the training process (None: left as they are);
    `workers`: the loader's background processes (0: augmentation runs in the training process)."""

    threads: int | None
    workers: int


def cpu_split(device_type: str, world_size: int = 1, workers: int | None = None,
              cores: int | None = None) -> CpuSplit:
    """Threads and workers for one training process among `world_size` on this machine.

    On a CPU they add up to the process's share of the cores: with the workers given (`--num-
    workers`), the threads take the rest; otherwise no worker (augmentation runs between steps)
    and every core a torch thread. Measured by bench/loader_speed.py on 2 cores at the demo's
    4 mm anatomy plan (docs/BENCHMARKS.md): PFSeg's fed steps/s 1.43x those of 1 thread + 1
    worker with the commands' OpenMP wait (the loader makes ~25-50 PFSeg batches/s in-process,
    the step ~1.2), ResUNet3D's 1.39x (0.86x with the earlier passive wait, when PFSeg's was
    1.27x); PFSeg, the method, decides. The old 2 threads + 1 worker put 3 busy threads on 2
    cores. On a GPU: torch's threads unchanged, the cores but one to the workers.

    >>> cpu_split("cpu", cores=2), cpu_split("cpu", cores=2, workers=0), cpu_split("cpu", cores=1)
    (CpuSplit(threads=2, workers=0), CpuSplit(threads=2, workers=0), CpuSplit(threads=1, workers=0))
    >>> cpu_split("cpu", world_size=2, cores=8), cpu_split("cuda", cores=8)
    (CpuSplit(threads=4, workers=0), CpuSplit(threads=None, workers=7))
    """
    share = max(1, (cores or available_cores()) // max(1, world_size))
    if device_type != "cpu":
        return CpuSplit(None, workers if workers is not None else max(1, min(MAX_LOADER_WORKERS, share - 1)))
    if workers is None:   # in-process augmentation costs a step little; a worker's core costs more
        workers = 0
    return CpuSplit(max(1, share - workers), workers)
