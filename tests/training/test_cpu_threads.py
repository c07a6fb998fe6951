"""How a training process splits its cores between torch's threads and the loader's workers,
and the commands' OpenMP wait policy."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pfseg_pipeline.cli import OPENMP_ENV
from pfseg_pipeline.training.cpu_threads import CpuSplit, available_cores, cpu_split


@pytest.mark.parametrize("device, world, workers, cores, expected", [
    ("cpu", 1, None, 2, CpuSplit(2, 0)),        # default: no worker, every core a torch thread
    ("cpu", 1, None, 1, CpuSplit(1, 0)),        # one core: augmentation in the training process
    ("cpu", 1, 0, 2, CpuSplit(2, 0)),           # no workers asked for: every core a torch thread
    ("cpu", 1, 1, 2, CpuSplit(1, 1)),           # workers asked for: the threads take the rest
    ("cpu", 1, 3, 2, CpuSplit(1, 3)),           # never fewer than one thread
    ("cpu", 2, None, 8, CpuSplit(4, 0)),        # DDP: each process its share
    ("cpu", 4, 1, 8, CpuSplit(1, 1)),
    ("cpu", 3, None, 2, CpuSplit(1, 0)),        # fewer cores than processes: one thread each
    ("cuda", 1, None, 8, CpuSplit(None, 7)),    # a GPU: torch's threads as they are, workers as before
    ("cuda", 2, None, 64, CpuSplit(None, 8)),
    ("cuda", 1, 0, 8, CpuSplit(None, 0)),
])
def test_threads_and_workers_add_up_to_the_cores(device, world, workers, cores, expected):
    assert cpu_split(device, world, workers, cores) == expected


def test_the_cores_are_the_affinity_mask():
    assert available_cores() == len(os.sched_getaffinity(0))
    code = ("import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
            "from pfseg_pipeline.training.cpu_threads import cpu_split; print(cpu_split('cpu'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "CpuSplit(threads=1, workers=0)"     # pinned to one core: one thread


@pytest.mark.parametrize("preset", [{}, {"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "0"}])
def test_the_commands_set_the_openmp_wait_before_torch_loads(preset):
    """A bounded spin, then sleep (OPENMP_ENV), each variable only where the environment has none."""
    expected = {**OPENMP_ENV, **preset}
    env = {k: v for k, v in os.environ.items() if k not in OPENMP_ENV}
    env.update(preset)
    show = "print(os.environ['OMP_WAIT_POLICY'], os.environ['GOMP_SPINCOUNT'], 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", f"import sys, os; import pfseg_pipeline.cli.train; {show}"],
                         capture_output=True, text=True, check=True, env=env)
    assert out.stdout.split() == [expected["OMP_WAIT_POLICY"], expected["GOMP_SPINCOUNT"], "True"]
    # ... and the variables are in place before torch is imported by anything of the commands
    out = subprocess.run([sys.executable, "-c", f"import sys, os; import pfseg_pipeline.cli; {show}"],
                         capture_output=True, text=True, check=True, env=env)
    assert out.stdout.split() == [expected["OMP_WAIT_POLICY"], expected["GOMP_SPINCOUNT"], "False"]


def test_a_cpu_fold_run_sets_the_threads_and_records_them(tmp_path, make_workspace, make_plans):
    import torch

    from pfseg_pipeline.fileio import read_json
    from pfseg_pipeline.training.recipe import Overrides, train_fold

    ws = make_workspace(tmp_path / "ws", make_plans(hr=(8, 16, 16)), n_cases=2)
    before = torch.get_num_threads()
    try:
        assert train_fold(ws, "Tiny", "resunet3d", "all", overrides=Overrides(
            epochs=1, iterations_per_epoch=1, num_workers=1, progress_bar=False)) is None
        summary = read_json(ws.root / "results" / "Tiny" / "resunet3d" / "fold_all" / "train_summary.json")
        split = cpu_split("cpu", workers=1)
        assert (summary["torch_threads"], summary["num_workers"]) == (split.threads, 1)
        assert torch.get_num_threads() == split.threads
    finally:
        torch.set_num_threads(before)
