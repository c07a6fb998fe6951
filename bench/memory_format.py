"""The memory layout of a CPU training step: torch's default against channels-last, side by side.

    python -m bench memory_format [--quick]

The trainer keeps the weights and batches in channels-last on a CPU
(`networks.step.step_memory_format`). This measures why: per grid (anatomy cases at 4 and 2 mm,
`--quick`: 4 mm), the demo preset's plan, and for PFSeg (the whole method, the planned batch)
and ResUNet3D (its patch and batch) the seconds of one training step (`networks.step.build_step`,
the trainer's own step, on a random batch) in each layout; every configuration built once, then
`ROUNDS` rounds of `STEPS` steps, the configurations in turns, so that load which comes and goes
falls on all alike. Beside them PFSeg's whole-volume prediction pass (batch 1, no gradient) in
each layout: prediction keeps the default layout, and this row is why. Then each training
step's peak memory in each layout (one step under the CPU allocator's record), beside the
memory model's figure, which traces the default layout.

Both layouts compute the same function (tests/networks/test_step.py: the same loss and
gradients to float32 rounding), so the ratio is all there is to choose on.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)
SPACINGS = (4, 2)
CASES = 3
ROUNDS = 3
STEPS = 3
LAYOUTS = ("default", "channels-last")


def options(argv: list[str]) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench memory_format")
    p.add_argument("--quick", action="store_true", help="4 mm only, 2 cases, 1 round of 1 step")
    return vars(p.parse_args(argv))


def _layout(name: str):
    import torch

    return torch.channels_last_3d if name == "channels-last" else torch.contiguous_format


def _training_step(network: str, plans, layout: str):
    """The trainer's step of `network` at its planned batch, in `layout`, weights seeded alike."""
    import torch

    from pfseg_pipeline.networks.registry import network_spec
    from pfseg_pipeline.networks.step import build_step

    torch.manual_seed(0)
    return build_step(network, plans, network_spec(network).batch_size(plans),
                      memory_format=_layout(layout))


def _prediction_pass(plans, layout: str):
    """PFSeg's whole-volume forward pass (batch 1, inference mode) at the HR shape, in `layout`."""
    import torch

    from pfseg_pipeline.networks.registry import build_network

    torch.manual_seed(0)
    memory_format = _layout(layout)
    net = build_network("pfseg", plans).eval().to(memory_format=memory_format)
    image = torch.randn(1, plans.in_channels, *plans.hr_shape_zyx).contiguous(memory_format=memory_format)

    def run():
        with torch.inference_mode():
            net.forward_infer(image)
    return run


def _peak_row(spacing: int, network: str, plans) -> dict:
    """The peak bytes of one real training step in each layout (the CPU allocator's record,
    `planners.measured_memory`) beside the memory model's tensor-level figure, which it traces
    in the default layout."""
    from pfseg_pipeline.networks.registry import network_spec
    from pfseg_pipeline.planners import memory
    from pfseg_pipeline.planners.measured_memory import measured_cpu_step_bytes

    batch = network_spec(network).batch_size(plans)
    predicted, _ = memory.tracked_step_bytes(network, plans, batch, amp=False)
    measured = {layout: measured_cpu_step_bytes(network, plans, batch, memory_format=_layout(layout))
                for layout in LAYOUTS}
    return {"spacing_mm": spacing, "network": network, "batch": batch, "model_tensor_bytes": int(predicted),
            "measured": {layout: {k: m[k] for k in ("tensor_peak", "allocator_peak")}
                         for layout, m in measured.items()}}


def _timed(fns: dict, rounds: int, steps: int) -> dict[str, list[float]]:
    """Seconds per call of each function: one warm-up call each, then `rounds` rounds of `steps`
    calls, the functions in turns."""
    for fn in fns.values():
        fn()
    seconds: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for key, fn in fns.items():
            for _ in range(steps):
                t0 = time.perf_counter()
                fn()
                seconds[key].append(time.perf_counter() - t0)
    return seconds


def run(quick: bool = False) -> dict:
    import os

    import torch

    from bench.inference_speed import spread
    from bench.lr_scale import _fingerprint, _plan, token_peak
    from pfseg_pipeline.networks.registry import network_spec

    spacings, n_cases, rounds, steps = ((4,), 2, 1, 1) if quick else (SPACINGS, CASES, ROUNDS, STEPS)
    rows, memory_rows = [], []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="pfseg_memory_format_") as tmp:
        for spacing in spacings:
            fingerprint = _fingerprint(Path(tmp) / f"{spacing}mm", spacing, n_cases)
            plans = _plan(fingerprint, "demo", None, token_peak)
            fns = {}
            for network in ("pfseg", "resunet3d"):
                for layout in LAYOUTS:
                    fns[(network, "training step", layout)] = _training_step(network, plans, layout)
            for layout in LAYOUTS:
                fns[("pfseg", "prediction pass", layout)] = _prediction_pass(plans, layout)
            seconds = _timed(fns, rounds, steps)
            memory_rows += [_peak_row(spacing, network, plans) for network in ("pfseg", "resunet3d")]
            for (network, what, layout), values in seconds.items():
                rows.append({"spacing_mm": spacing, "network": network, "what": what, "layout": layout,
                             "hr_shape_zyx": list(plans.hr_shape_zyx),
                             "patch_shape_zyx": list(plans.patch_based.patch_shape_zyx),
                             "batch": network_spec(network).batch_size(plans),
                             "seconds": spread(values)})
                log.info("%d mm %s %s %s: %.3f s", spacing, network, what, layout,
                         statistics.median(values))
    figures = {"title": "Memory layout of a CPU training step: default against channels-last",
               "cases": n_cases, "rounds": rounds, "steps": steps, "torch_threads": torch.get_num_threads(),
               "widths": list(plans.network.widths), "rows": rows, "memory_rows": memory_rows,
               "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)]}
    figures["markdown"] = _markdown(figures)
    return figures


def ratios(rows: list[dict]) -> dict[tuple, float]:
    """(grid, network, what) -> channels-last median seconds / default median seconds."""
    median = {(r["spacing_mm"], r["network"], r["what"], r["layout"]): r["seconds"]["median"] for r in rows}
    return {k[:3]: median[(*k[:3], "channels-last")] / v for k, v in median.items() if k[3] == "default"}


def _markdown(f: dict) -> str:
    from bench.inference_speed import spread_cell

    x = "x".join
    load = f["load_average_1min"]
    lines = [
        f"{f['cases']} anatomy cases per grid (`pfseg_make_synthetic --anatomy mni152 --spacing S`, seed 1), "
        f"the demo preset's plan (widths {'-'.join(map(str, f['widths']))}); float32 on the CPU, "
        f"{f['torch_threads']} torch thread(s). Seconds of one training step (the trainer's, "
        "`networks.step.build_step`, random batch at the planned shape and batch) and of PFSeg's "
        "whole-volume prediction pass (batch 1), with the weights and inputs in torch's default layout and "
        "in channels-last (N, Z, Y, X, C in memory): median (lowest - highest) of "
        f"{f['rounds']} round(s) x {f['steps']} call(s) after a warm-up, the configurations in turns "
        f"(load average {load[0]} before, {load[1]} after). Ratio: channels-last / default (under 1: "
        "channels-last is faster).", "",
        "| grid | network | what | shape (z y x), batch | default s | channels-last s | ratio |",
        "|---|---|---|---|---:|---:|---:|"]
    cells = {(r["spacing_mm"], r["network"], r["what"], r["layout"]): r for r in f["rows"]}
    for key, ratio in ratios(f["rows"]).items():
        r = cells[(*key, "default")]
        shape = x(map(str, r["hr_shape_zyx"] if r["network"] == "pfseg" else r["patch_shape_zyx"]))
        batch = 1 if r["what"] == "prediction pass" else r["batch"]
        lines.append(f"| {key[0]} mm | {key[1]} | {key[2]} | {shape}, {batch} | {spread_cell(r['seconds'])} "
                     f"| {spread_cell(cells[(*key, 'channels-last')]['seconds'])} | {ratio:.2f} |")
    if f.get("memory_rows"):
        lines += ["", *_memory_markdown(f["memory_rows"])]
    return "\n".join(lines) + "\n"


def _memory_markdown(rows: list[dict]) -> list[str]:
    def mib(n: int) -> str:
        return f"{n / 2**20:.1f}"

    lines = ["Peak memory of the same training steps, one step each under the CPU allocator's record "
             "(`planners.measured_memory`: tensors, and with the scratch kernels free inside one "
             "operator), in each layout, beside the memory model's tensor figure (traced in the "
             "default layout, fp32). MiB; ratio: channels-last / default.", "",
             "| grid | network | batch | model's tensors | default: tensors / with scratch "
             "| channels-last: tensors / with scratch | ratio tensors / with scratch |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        d, c = r["measured"]["default"], r["measured"]["channels-last"]
        lines.append(f"| {r['spacing_mm']} mm | {r['network']} | {r['batch']} "
                     f"| {mib(r['model_tensor_bytes'])} "
                     f"| {mib(d['tensor_peak'])} / {mib(d['allocator_peak'])} "
                     f"| {mib(c['tensor_peak'])} / {mib(c['allocator_peak'])} "
                     f"| {c['tensor_peak'] / d['tensor_peak']:.3f} / "
                     f"{c['allocator_peak'] / d['allocator_peak']:.3f} |")
    return lines
