"""The LR scale as a memory device, on 1, 2 and 4 mm anatomy cases: what each scale saves.

    python -m bench lr_scale [--quick]

Data: `CASES` anatomy cases per grid (`pfseg_make_synthetic --anatomy mni152 --spacing S`,
seed 1), fingerprinted as `pfseg_plan_and_preprocess` does. Per grid and LR scale 1, 2, 4 (all
axes), one run:

- the default preset's plan at that scale (`--lr-scale S`, full widths, the 11 GiB budget):
  HR and LR shapes, the memory model's predicted GPU peak of a PFSeg training step at batch 1
  (float16 autocast, allowance included) and the batch the planner would take; and which scale
  the planner chooses by itself;
- the small ET components (the size under which 5 % of the ET volume lies) in LR voxels at
  that scale: the planner refuses a scale that leaves them under 4;
- the seconds of one PFSeg training step on this CPU at batch 1 (the demo preset's narrow
  widths at that scale, float32), the full network and the segmentation-only one (`--ablation
  us`), the median (lowest-highest) of `STEPS` steps after a warm-up one, every configuration in
  the same run.

The planner's LR-scale and batch rules read PFSeg's step alone, so the plans here trace only
that step (`pfseg_peak`: the other networks at a token figure; their peaks are not in this
table), and the demo plans, wanted for their shapes at a scale given, trace nothing.

What each scale costs in Dice is the recipe study's (`python -m bench recipe`, rows lr1 to
lr4-us on 4 mm cases: training runs, hours): this table holds the shapes, memory and time.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)
SPACINGS = (4, 2, 1)
SCALES = (1, 2, 4)
CASES = 3
STEPS = 3
GiB = 2 ** 30
MODALITIES = ("t1", "t1ce", "t2", "flair")


def options(argv: list[str]) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench lr_scale")
    p.add_argument("--quick", action="store_true", help="4 mm only, 2 cases, 1 timed step")
    return vars(p.parse_args(argv))


def run(quick: bool = False) -> dict:
    import torch

    from pfseg_pipeline.planners.planner import DEFAULT_GPU_MEMORY_GB

    spacings, n_cases, steps = ((4,), 2, 1) if quick else (SPACINGS, CASES, STEPS)
    rows, chosen = [], {}
    with tempfile.TemporaryDirectory(prefix="pfseg_lr_scale_") as tmp:
        for spacing in spacings:
            fingerprint = _fingerprint(Path(tmp) / f"{spacing}mm", spacing, n_cases)
            chosen[spacing] = _plan(fingerprint, "default", None, pfseg_peak).lr_scale_zyx
            for scale in SCALES:
                rows.append(_row(fingerprint, spacing, scale, steps))
    figures = {"title": "LR scale: memory and time per scale on 1, 2 and 4 mm anatomy cases",
               "cases": n_cases, "steps": steps, "budget_gb": DEFAULT_GPU_MEMORY_GB,
               "torch_threads": torch.get_num_threads(), "rows": rows,
               "planner_choice": {str(k): v for k, v in chosen.items()}}
    figures["markdown"] = _markdown(figures)
    return figures


def _fingerprint(root: Path, spacing: int, n_cases: int) -> dict:
    from pfseg_pipeline.data.labels import BRATS2020
    from pfseg_pipeline.data.layouts import discover
    from pfseg_pipeline.data.synthetic import write_dataset
    from pfseg_pipeline.planners.fingerprint import compute_fingerprint

    write_dataset(root, n_cases, None, seed=1, anatomy="mni152", spacing_mm=spacing, workers=2)
    cases = discover(root, MODALITIES, require_label=True).cases
    return compute_fingerprint(cases, MODALITIES, BRATS2020, workers=2, progress=False)


def _plan(fingerprint: dict, preset: str, scale: int | None, peak_fn):
    from pfseg_pipeline.planners.planner import plan

    return plan(fingerprint, "LRScale", preset=preset, lr_scale=scale, peak_fn=peak_fn)


def pfseg_peak(network: str, plans, batch: int) -> int:
    """The planner's own memory model for PFSeg's step (the branches the plan trains); a token
    0.1 GiB for every other network."""
    from pfseg_pipeline.planners.budget import default_peak_fn

    return default_peak_fn(network, plans, batch).bytes if network == "pfseg" else GiB // 10


def token_peak(network: str, plans, batch: int) -> int:
    """0.1 GiB for every step: a plan at a given scale wanted for its shapes only."""
    return GiB // 10


def _row(fingerprint: dict, spacing: int, scale: int, steps: int) -> dict:
    from pfseg_pipeline.planners import memory
    from pfseg_pipeline.planners.planner import small_et_lr_voxels

    gpu = _plan(fingerprint, "default", scale, pfseg_peak)
    peak = memory.predict_peak_bytes("pfseg", gpu, 1).bytes
    peak_us = memory.predict_peak_bytes("pfseg", gpu, 1, ablation="us").bytes
    cpu = _plan(fingerprint, "demo", scale, token_peak)
    seconds = {ablation: _step_seconds(cpu, ablation, steps) for ablation in ("full", "us")}
    row = {"spacing_mm": spacing, "lr_scale": scale, "hr_shape_zyx": gpu.hr_shape_zyx,
           "lr_shape_zyx": gpu.lr_shape_zyx, "peak_bytes_batch1": peak, "peak_bytes_batch1_us": peak_us,
           "planned_batch": gpu.batch_size, "planned_branches": gpu.training.pfseg_branches,
           "small_et_lr_voxels": small_et_lr_voxels(fingerprint, gpu.lr_scale_zyx, gpu.target_spacing_zyx),
           "cpu_hr_shape_zyx": cpu.hr_shape_zyx, "cpu_step_seconds": seconds}
    log.info("%d mm, scale %d: HR %s, LR %s, %.2f GiB at batch 1, step %.2f s (US %.2f s)", spacing, scale,
             gpu.hr_shape_zyx, gpu.lr_shape_zyx, peak / GiB, seconds["full"]["median"],
             seconds["us"]["median"])
    return row


def _step_seconds(plans, ablation: str, steps: int) -> dict:
    """The seconds of `steps` PFSeg training steps at batch 1 after a warm-up step: their median,
    lowest and highest."""
    import torch

    from bench.inference_speed import spread
    from pfseg_pipeline.networks.step import build_step

    torch.manual_seed(0)
    step = build_step("pfseg", plans, 1, ablation=ablation)
    step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return spread(times)


def _x(shape) -> str:
    return "x".join(map(str, shape))


def _markdown(f: dict) -> str:
    from bench.inference_speed import spread_cell

    lines = [
        f"{f['cases']} anatomy cases per grid (`pfseg_make_synthetic --anatomy mni152 --spacing S`, seed 1), "
        "fingerprinted; per LR scale (all axes) the default preset's plan at that scale (`--lr-scale`, full "
        f"widths, {f['budget_gb']:g} GiB budget): the memory model's predicted GPU peak of a PFSeg training "
        "step at batch 1 (float16, allowance included), the whole method's and the segmentation network's "
        "alone (US), and what the planner would train at that scale (its branches: the whole method at scale "
        "1 where it fits, else US) at which batch; the small ET "
        "components (5 % of the ET volume lies in smaller ones) in LR voxels (the planner refuses a raise "
        "that leaves them under 4); and one PFSeg training step on this CPU at batch 1 with the demo "
        f"preset's narrow widths, full network and segmentation-only (US), the median (lowest - highest) "
        f"of {f['steps']} steps after a warm-up, {f['torch_threads']} torch thread(s), all in one run. "
        "The planner's own choice: " + ", ".join(f"{_x(v)} at {k} mm" for k, v in f["planner_choice"].items())
        + ". What each scale costs in Dice: the recipe study's LR table (4 mm).", "",
        "| grid | LR scale | HR (z y x) | LR | GiB, batch 1 (model), full | GiB, US | planned | small ET, "
        "LR voxels | CPU step s, full | CPU step s, US | full / scale 1 |",
        "|---|---:|---|---|---:|---:|---|---:|---:|---:|---:|"]
    first = {}
    for r in f["rows"]:
        full, us = r["cpu_step_seconds"]["full"], r["cpu_step_seconds"]["us"]
        first.setdefault(r["spacing_mm"], full["median"])
        et = "-" if r["small_et_lr_voxels"] is None else f"{r['small_et_lr_voxels']:.1f}"
        lines.append(f"| {r['spacing_mm']} mm | {r['lr_scale']} | {_x(r['hr_shape_zyx'])} "
                     f"| {_x(r['lr_shape_zyx'])} | {r['peak_bytes_batch1'] / GiB:.2f} "
                     f"| {r['peak_bytes_batch1_us'] / GiB:.2f} "
                     f"| {r['planned_branches']}, batch {r['planned_batch']} "
                     f"| {et} | {spread_cell(full)} | {spread_cell(us)} "
                     f"| {full['median'] / first[r['spacing_mm']]:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(run(**options(argv))["markdown"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
