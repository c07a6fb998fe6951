"""bench/memory_model.py at its quick size (a few seconds): the planner's memory model against
the CPU allocator's record of the same real step."""

from __future__ import annotations


def test_memory_model_benchmark_quick():
    from bench.memory_model import run

    figures = run(quick=True)
    assert len(figures["rows"]) == 6 and figures["max_abs_error"] < 0.05
    assert "predicted / measured" in figures["markdown"]
