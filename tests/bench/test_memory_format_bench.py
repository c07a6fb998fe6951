"""bench/memory_format.py at its quick size (4 mm anatomy, two cases): the trainer's step of each
network and PFSeg's prediction pass, timed in both layouts, the table's ratios, and each training
step's peak memory in both layouts beside the memory model's figure."""

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
    # peak memory: channels-last moves a step's peak by a few per cent at most (PFSeg's tensors
    # +1 % here: InstanceNorm's default-layout copies), and the model (traced in the default
    # layout) predicts the real step's tensor peak
    memory = {r["network"]: r for r in figures["memory_rows"]}
    assert set(memory) == {"pfseg", "resunet3d"}
    for network, r in memory.items():
        default, last = r["measured"]["default"], r["measured"]["channels-last"]
        assert abs(last["tensor_peak"] / default["tensor_peak"] - 1) < 0.03, r
        assert last["allocator_peak"] < 1.03 * default["allocator_peak"], r
        assert abs(r["model_tensor_bytes"] / default["tensor_peak"] - 1) < 0.05, r
        assert f"| 4 mm | {network} | {r['batch']} | {r['model_tensor_bytes'] / 2**20:.1f} |" in table


def test_ratios_divide_channels_last_by_default():
    from bench.memory_format import ratios

    def row(layout, median):
        return {"spacing_mm": 2, "network": "pfseg", "what": "training step", "layout": layout,
                "seconds": {"median": median}}
    assert ratios([row("default", 2.0), row("channels-last", 1.5)]) == {(2, "pfseg", "training step"): 0.75}
