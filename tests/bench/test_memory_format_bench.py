"""bench/memory_format.py at its quick size (4 mm anatomy, two cases): the trainer's step of each
network and PFSeg's prediction pass, timed in both layouts, and the table's ratios."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_memory_format_benchmark_quick():
    from bench.memory_format import ratios, run

    figures = run(quick=True)
    rows = figures["rows"]
    assert {(r["network"], r["what"], r["layout"]) for r in rows} == {
        (n, w, layout) for n, w in (("pfseg", "training step"), ("resunet3d", "training step"),
                                    ("pfseg", "prediction pass")) for layout in ("default", "channels-last")}
    for r in rows:
        assert r["spacing_mm"] == 4 and len(r["seconds"]["values"]) == 1 and r["seconds"]["median"] > 0
    pfseg = next(r for r in rows if r["network"] == "pfseg")
    resunet = next(r for r in rows if r["network"] == "resunet3d")
    assert pfseg["hr_shape_zyx"] == [40, 48, 40] and resunet["patch_shape_zyx"] == [24, 24, 24]
    table = figures["markdown"]
    for (grid, network, what), ratio in ratios(rows).items():
        line = next(x for x in table.splitlines() if x.startswith(f"| {grid} mm | {network} | {what} |"))
        assert line.endswith(f"| {ratio:.2f} |")


def test_ratios_divide_channels_last_by_default():
    from bench.memory_format import ratios

    def row(layout, median):
        return {"spacing_mm": 2, "network": "pfseg", "what": "training step", "layout": layout,
                "seconds": {"median": median}}
    assert ratios([row("default", 2.0), row("channels-last", 1.5)]) == {(2, "pfseg", "training step"): 0.75}
