"""bench/omp_wait.py in pieces: a timed block in a fresh process with only the named OpenMP
variables, the busy processes of the shared state, the worst-ratio rule and its table."""

from __future__ import annotations

import pytest


def _row(state, network, wait, median):
    return {"state": state, "network": network, "wait": wait,
            "seconds": {"median": median, "min": median, "max": median, "values": [median]}}


ROWS = [_row("idle", "pfseg", "spin", 1.0), _row("idle", "pfseg", "passive", 1.5),
        _row("idle", "pfseg", "short", 1.1), _row("shared", "pfseg", "spin", 3.0),
        _row("shared", "pfseg", "passive", 1.2), _row("shared", "pfseg", "short", 1.44)]


def test_each_wait_is_judged_by_its_worst_ratio_to_the_fastest_wait_of_a_row():
    from bench.omp_wait import worst_ratios

    worst = worst_ratios(ROWS)
    # spin: 1.0 idle (fastest), 3.0 / 1.2 shared; passive: 1.5 idle, fastest shared; short: 1.1, 1.2x
    assert worst == pytest.approx({"spin": 2.5, "passive": 1.5, "short": 1.2})


def test_the_table_names_the_smallest_worst_ratio_and_the_commands_wait():
    from bench.omp_wait import _markdown, worst_ratios
    from pfseg_pipeline.cli import OPENMP_ENV

    waits = {"spin": {}, "passive": {"OMP_WAIT_POLICY": "PASSIVE"}, "short": dict(OPENMP_ENV)}
    f = {"cores": 2, "rounds": 1, "steps": {"pfseg": 1}, "waits": waits, "hr_shape_zyx": [40, 48, 40],
         "patch_shape_zyx": [24, 24, 24], "rows": ROWS, "worst_ratio": worst_ratios(ROWS),
         "load_average_1min": [0.5, 0.7]}
    table = _markdown(f)
    assert "| shared | pfseg | 3.00 (3.00 - 3.00) [2.50x] | 1.20 (1.20 - 1.20) [1.00x] | " \
           "1.44 (1.44 - 1.44) [1.20x] |" in table
    assert "Smallest: short; the commands set short (`cli.OPENMP_ENV`)." in table


def test_busy_processes_run_while_the_block_runs_and_are_gone_after():
    from bench.omp_wait import busy_processes

    with busy_processes(2) as procs:
        assert len(procs) == 2 and all(p.poll() is None for p in procs)
    assert all(p.poll() is not None for p in procs)
    with busy_processes(0) as procs:
        assert procs == []


def test_a_block_times_the_trainers_step_in_a_fresh_process(tmp_path, monkeypatch):
    from bench.omp_wait import OPENMP_VARIABLES, _block
    from pfseg_pipeline.plans import save_plans
    from tests.networks.conftest import tiny_plans

    plans_file = tmp_path / "plans.json"
    save_plans(tiny_plans(), plans_file)
    monkeypatch.setenv("GOMP_SPINCOUNT", "1")   # the caller's variables do not reach the block
    seconds = _block({"plans": str(plans_file), "network": "resunet3d", "threads": 1, "steps": 2},
                     {"OMP_WAIT_POLICY": "PASSIVE"})
    assert len(seconds) == 2 and all(s > 0 for s in seconds)
    assert "GOMP_SPINCOUNT" in OPENMP_VARIABLES and "OMP_WAIT_POLICY" in OPENMP_VARIABLES
