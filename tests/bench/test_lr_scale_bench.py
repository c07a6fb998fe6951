"""bench/lr_scale.py at its quick size (4 mm anatomy, two cases): per LR scale the default plan's
shapes, the memory model's peak and the small ET in LR voxels, and a CPU step of each network."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_lr_scale_benchmark_quick():
    from bench.lr_scale import run

    figures = run(quick=True)
    rows = {r["lr_scale"]: r for r in figures["rows"]}
    assert sorted(rows) == [1, 2, 4] and figures["planner_choice"] == {"4": [1, 1, 1]}
    for scale, r in rows.items():
        # the default plan's HR shape is a multiple of scale * 2**4 (four poolings at full width)
        assert all(h % (scale * 16) == 0 for h in r["hr_shape_zyx"]), r
        assert r["lr_shape_zyx"] == [h // scale for h in r["hr_shape_zyx"]]
        assert r["peak_bytes_batch1"] > r["peak_bytes_batch1_us"] > 0 and r["planned_batch"] >= 1
        # what the planner trains at the scale: the whole method at scale 1 (it fits), else US
        assert r["planned_branches"] == ("full" if scale == 1 else "us")
        for step in r["cpu_step_seconds"].values():       # full and US: median, lowest, highest
            assert 0 < step["min"] <= step["median"] <= step["max"] and len(step["values"]) == 1
    # the small ET's volume is the data's: in LR voxels it falls with the cube of the scale
    assert rows[2]["small_et_lr_voxels"] == pytest.approx(rows[1]["small_et_lr_voxels"] / 8)
    assert rows[4]["small_et_lr_voxels"] == pytest.approx(rows[1]["small_et_lr_voxels"] / 64)
    table = figures["markdown"]
    assert "| 4 mm | 1 |" in table and "| 4 mm | 4 |" in table and "1x1x1 at 4 mm" in table
    line = next(x for x in table.splitlines() if x.startswith("| 4 mm | 1 |"))
    assert line.rstrip().endswith("| 1.00 |")          # each grid's scale 1 is its own time reference
    assert "| full, batch " in line and "| us, batch " in next(x for x in table.splitlines()
                                                          if x.startswith("| 4 mm | 2 |"))
