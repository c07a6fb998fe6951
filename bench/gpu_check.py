"""The GPU check: one prepared run (about 5 minutes on one H100-class GPU) that measures

(a) the memory model (planners/memory.py) against a real CUDA training step: the predicted
    peak with and without the allowance vs `torch.cuda.max_memory_allocated` and
    `max_memory_reserved` (and the device's own count from `torch.cuda.mem_get_info`, which
    includes the CUDA context), for PFSeg and two baselines (ResUNet3D, HDC) at three
    shapes/batches each (PFSeg's whole method, and once more the branches the default plan
    trains), and the allowance those figures call for;
(b) training steps per second with mixed precision (fp16 autocast + GradScaler, as the trainer
    runs on CUDA; PFSeg's branches those the plan trains) at the default BraTS plan (the real
    planner on a BraTS-like fingerprint: 240x240x155, four modalities, 11 GiB budget) and at the
    paper preset (128x192x192, T2, WT);
(c) per-case prediction time at 240x240x155 (and on the paper's 128x192x192 grid): PFSeg whole
    volume vs the ResUNet3D Gaussian sliding window (the plan's patch, step 0.5), network only
    and end to end (a float32 numpy (C, Z, Y, X) array on the host -> the device -> padding ->
    prediction -> probabilities back on the host -> threshold 0.5). NIfTI reading and writing
    are NOT included: nibabel is absent on the GPU machine.

Run it (on the GPU machine, from the repository root; nothing to install):

    bash bench/gpu_check.sh                      # writes $OUT/gpu_check.json (OUT default ./gpu_check_out)
    PYTHONPATH=. python -m bench.gpu_check --dry-run   # the same code on the CPU at tiny shapes (seconds)

then, here, turn the JSON into the `gpu_check` section of docs/BENCHMARKS.md:

    python -m bench.gpu_report gpu_check_out/gpu_check.json

Only torch and numpy are needed: this module imports nothing else at module level, and the
project modules it uses (plans, planners.planner/memory, networks with their losses and the
one training step, inference.predictor/sliding_window/whole_volume) import only torch and numpy
(tests/bench/test_gpu_check.py runs the dry run with nibabel, SimpleITK, batchgenerators and MedPy,
absent there, blocked from import). Each measurement is independent: one
that fails (an out-of-memory, say) is recorded under `errors` and the rest go on; the JSON is
rewritten after every section, so a run cut short still leaves what it measured.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pfseg_pipeline import presets

GiB = 2**30
MiB = 2**20
BASELINES = ("resunet3d", "hdc")
NETWORKS = ("pfseg", *BASELINES)
BRATS_SHAPE_ZYX = (155, 240, 240)        # a BraTS volume as (z, y, x); the NIfTI stores 240 240 155
BRATS_BRAIN_BOX_ZYX = (140, 172, 140)    # typical brain box of BraTS 2020 at 1 mm
PAPER_GRID_ZYX = presets.PAPER_GRID_ZYX

# The sizes of a full run (GPU) and of the dry run (CPU, seconds).
FULL = {
    "fingerprint_shape_zyx": BRATS_SHAPE_ZYX, "brain_box_zyx": BRATS_BRAIN_BOX_ZYX, "preset": "default",
    # (network, training input shape z y x, batch): patch-free networks get the HR shape,
    # the patch-based ResUNet3D its patch.
    # (network, shape, batch, PFSeg's row): the whole method, and the default plan's own branches
    "memory": [("pfseg", (64, 96, 96), 1, "full"), ("pfseg", (128, 192, 192), 1, "full"),
               ("pfseg", (160, 192, 160), 2, "full"), ("pfseg", (160, 192, 160), 1, None),
               ("resunet3d", (64, 96, 96), 2), ("resunet3d", (80, 96, 80), 1),
               ("resunet3d", (128, 128, 128), 2),
               ("hdc", (64, 96, 96), 1), ("hdc", (128, 192, 192), 1), ("hdc", (160, 192, 160), 2)],
    "memory_steps": 2, "speed_warmup": 3, "speed_steps": 10,
    "inference_shape_zyx": BRATS_SHAPE_ZYX, "paper_inference_shape_zyx": PAPER_GRID_ZYX,
    "inference_repeats": 3,
}
DRY = {
    "fingerprint_shape_zyx": (40, 48, 48), "brain_box_zyx": (24, 28, 24), "preset": "demo",
    "memory": [("pfseg", (32, 32, 32), 1), ("pfseg", (32, 32, 32), 2, "us"), ("resunet3d", (16, 16, 16), 1),
               ("resunet3d", (16, 16, 16), 2), ("hdc", (32, 32, 32), 1), ("hdc", (32, 32, 32), 2)],
    "memory_steps": 1, "speed_warmup": 1, "speed_steps": 1,
    "inference_shape_zyx": (30, 40, 36), "paper_inference_shape_zyx": (32, 32, 32),
    "inference_repeats": 1,
}


# ---- plans --------------------------------------------------------------------------------------
def fake_fingerprint(shape_zyx, box_zyx, n_cases: int = 20, seed: int = 0) -> dict:
    """A BraTS-like dataset fingerprint (what `planners.fingerprint` writes, the fields the
    planner reads): 1 mm, four modalities, brain boxes spread +-8 voxels around `box_zyx`."""
    from pfseg_pipeline.data.labels import BRATS2020

    rng = np.random.default_rng(seed)
    cases = []
    for i in range(n_cases):
        box = [int(min(n, b + rng.integers(-8, 9))) for b, n in zip(box_zyx, shape_zyx)]
        start = [(n - b) // 2 for n, b in zip(shape_zyx, box)]
        cases.append({"case": f"case_{i:03d}", "shape_zyx": list(shape_zyx), "spacing_zyx": [1.0, 1.0, 1.0],
                      "orientation": "LPS", "brain_box_zyx": [[s, s + b] for s, b in zip(start, box)],
                      "brain_box_shape_zyx": box, "label_voxels": {"0": 1000, "1": 10, "2": 100, "4": 20}})
    return {"modalities": ["t1", "t1ce", "t2", "flair"], "label_scheme": BRATS2020.to_json(), "cases": cases,
            "dataset": {"components": {"ET": {"size_mm3_voxel_weighted_p5": 300.0}}}}


def build_plans(cfg: dict) -> dict[str, Any]:
    """The default BraTS plan and the paper preset, from the real planner (11 GiB budget).

    The dry run plans with the demo preset (narrow widths) at a tiny fingerprint, with a stub
    memory model and batch 1, and makes its 'paper' plan the same way with the paper's input
    (T2), target (WT), LR operator and normalisation.
    """
    from pfseg_pipeline.planners.planner import plan

    fp = fake_fingerprint(cfg["fingerprint_shape_zyx"], cfg["brain_box_zyx"])
    t0 = time.perf_counter()
    if cfg["preset"] == "demo":  # the dry run: a stub memory model (1 GiB), batch 1, to take seconds
        def stub(network, plans, batch):
            return GiB

        default = plan(fp, "BraTS", preset="demo", peak_fn=stub)
        t1 = time.perf_counter()
        paper = plan(fp, "Paper", preset="demo", modalities=["t2"], target="wt", peak_fn=stub)
        paper.lr_operator, paper.normalization = "trilinear", "minmax"
        for p in (default, paper):
            p.batch_size = p.patch_based.batch_size = 1
    else:
        default = plan(fp, "BraTS", preset=cfg["preset"])
        t1 = time.perf_counter()
        paper = plan(fp, "Paper", preset="paper")
    t2 = time.perf_counter()
    return {"default": default, "paper": paper,
            "planning_seconds": {"default": round(t1 - t0, 2), "paper": round(t2 - t1, 2)}}


def plan_summary(plans) -> dict:
    return {"preset": plans.preset, "modalities": plans.modalities, "target": plans.target,
            "hr_shape_zyx": plans.hr_shape_zyx, "lr_scale_zyx": plans.lr_scale_zyx,
            "lr_operator": plans.lr_operator, "guidance_patch_zyx": plans.guidance.patch_shape_zyx,
            "batch_size": plans.batch_size, "pfseg_branches": plans.training.pfseg_branches,
            "widths": plans.network.widths,
            "baseline_patch_zyx": plans.patch_based.patch_shape_zyx,
            "baseline_batch_size": plans.patch_based.batch_size, "step": plans.patch_based.step,
            "budget_gb": plans.memory.get("budget_gb"),
            "predicted_peak_gb": plans.memory.get("predicted_peak_gb", {})}


# ---- one training step, as the trainer runs it on CUDA -------------------------------------------
def training_step(network: str, plans, batch_size: int, device: torch.device, amp: bool, seed: int = 0,
                  memory_format: torch.memory_format = torch.contiguous_format, ablation: str | None = None):
    """The trainer's own step (`networks.step`: fp16 autocast when `amp`, the network's loss,
    scaled backward, unscale + gradient clipping, the plans' optimiser, scaler update) with its
    model, optimiser, GradScaler and a random batch on `device`, weights and batch in
    `memory_format`, PFSeg's `ablation` row (None: the branches the plan trains,
    `training.pfseg_branches`); call it to run one step.
    The module it comes from imports only torch, so it runs on the GPU machine as it is."""
    from pfseg_pipeline.networks.registry import planned_ablation
    from pfseg_pipeline.networks.step import build_step

    torch.manual_seed(seed)
    return build_step(network, plans, batch_size, ablation=planned_ablation(network, plans, ablation),
                      amp=amp, device=device, memory_format=memory_format)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


# ---- (a) the memory model vs a real step ---------------------------------------------------------
def measure_memory_row(network: str, plans, shape_zyx, batch: int, device: torch.device, amp: bool,
                       steps: int, ablation: str | None = None) -> dict:
    """The memory model's figure and a real step's, `network` at `shape_zyx` and `batch` (PFSeg's
    `ablation` row: the plan's own branches when None)."""
    from pfseg_pipeline.networks.registry import planned_ablation
    from pfseg_pipeline.planners import memory

    ablation = planned_ablation(network, plans, ablation)
    estimate = memory.predict_peak_bytes(network, plans, batch, shape_zyx=shape_zyx, amp=amp,
                                         ablation=ablation)
    tensor_pred = int(estimate.detail["tensor_bytes"])
    row = {"network": network, "ablation": ablation, "shape_zyx": list(shape_zyx), "batch": batch, "amp": amp,
           "method": estimate.method, "predicted_tensor_bytes": tensor_pred,
           "predicted_bytes": int(estimate.bytes), "predict_seconds": estimate.detail.get("seconds")}
    at_shape = memory.plans_at_shape(network, plans, shape_zyx)
    if device.type == "cuda":
        _free(device)
        step = training_step(network, at_shape, batch, device, amp, ablation=ablation)
        step()                              # first step: cuDNN's algorithm search, Adam's state
        _sync(device)
        row["first_step_allocated_bytes"] = int(torch.cuda.max_memory_allocated(device))
        row["first_step_reserved_bytes"] = int(torch.cuda.max_memory_reserved(device))
        torch.cuda.reset_peak_memory_stats(device)
        for _ in range(steps):
            step()
        _sync(device)
        row["allocated_bytes"] = int(torch.cuda.max_memory_allocated(device))
        row["reserved_bytes"] = int(torch.cuda.max_memory_reserved(device))
        free, total = torch.cuda.mem_get_info(device)
        row["device_used_bytes"] = int(total - free)      # context + reserved (+ anything else)
        row["context_bytes"] = int(total - free - torch.cuda.memory_reserved(device))
        row["measured_by"] = "torch.cuda.max_memory_allocated / max_memory_reserved (steady steps)"
        del step
        _free(device)
    else:  # the dry run: the CPU allocator's record of a real fp32 step (measured_cpu_step_bytes)
        from pfseg_pipeline.planners.measured_memory import measured_cpu_step_bytes

        measured = measured_cpu_step_bytes(network, at_shape, batch, amp=False, ablation=ablation)
        row.update(allocated_bytes=measured["tensor_peak"], reserved_bytes=measured["allocator_peak"],
                   device_used_bytes=None, context_bytes=None,
                   measured_by="CPU allocator via torch.profiler (dry run)")
    row["ratio_allocated"] = row["allocated_bytes"] / tensor_pred
    row["ratio_reserved"] = row["reserved_bytes"] / tensor_pred
    if row.get("device_used_bytes"):
        row["ratio_device_vs_allowance"] = row["device_used_bytes"] / row["predicted_bytes"]
    return row


def calibrate(rows: list[dict]) -> dict:
    """The allowance these rows call for: factor = max reserved / traced, context = max seen."""
    from pfseg_pipeline.planners import memory

    ok = [r for r in rows if "ratio_reserved" in r]
    if not ok:
        return {}
    factor = max(r["ratio_reserved"] for r in ok)
    contexts = [r["context_bytes"] for r in ok if r.get("context_bytes") is not None]
    context = max(contexts) if contexts else None
    covered = [r["predicted_bytes"] >= (r["reserved_bytes"] + (r.get("context_bytes") or 0)) for r in ok]
    return {
        "current_factor": memory.ALLOWANCE_FACTOR, "current_context_bytes": memory.ALLOWANCE_CONTEXT_BYTES,
        "measured_factor_max": factor,
        "measured_factor_allocated_max": max(r["ratio_allocated"] for r in ok),
        "measured_factor_allocated_median": float(np.median([r["ratio_allocated"] for r in ok])),
        "measured_context_bytes_max": context,
        "suggested_factor": float(np.ceil(factor * 100) / 100),
        "suggested_context_bytes": int(np.ceil(context / (64 * MiB)) * 64 * MiB) if context else None,
        "current_allowance_covers": f"{sum(covered)}/{len(covered)}",
    }


# ---- (b) training speed ---------------------------------------------------------------------------
def measure_speed_row(label: str, network: str, plans, device: torch.device, amp: bool, warmup: int,
                      steps: int, channels_last: bool = False) -> dict:
    """Steps per second of the trainer's step; `channels_last`: weights and batch in
    channels-last order, the trainer's layout on a CPU (`step_memory_format`), timed here beside
    the contiguous one so the layout a GPU trains in can rest on a measurement."""
    from pfseg_pipeline.networks.registry import network_spec

    spec = network_spec(network)
    batch = spec.batch_size(plans)
    _free(device)
    layout = torch.channels_last_3d if channels_last else torch.contiguous_format
    step = training_step(network, plans, batch, device, amp, memory_format=layout)
    for _ in range(warmup):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        loss, _ = step()
    _sync(device)
    seconds = (time.perf_counter() - t0) / steps
    row = {"plan": label, "network": network, "shape_zyx": spec.input_shape(plans), "batch": batch,
           "amp": amp, "channels_last": channels_last, "steps": steps, "seconds_per_step": seconds,
           "steps_per_second": 1 / seconds,
           "samples_per_second": batch / seconds, "final_loss": float(loss)}
    if device.type == "cuda":
        row["peak_allocated_bytes"] = int(torch.cuda.max_memory_allocated(device))
    del step
    _free(device)
    return row


# ---- (c) inference --------------------------------------------------------------------------------
def measure_inference_row(label: str, network: str, plans, shape_zyx, device: torch.device,
                          repeats: int, seed: int = 0) -> dict:
    from pfseg_pipeline.inference.predictor import Predictor
    from pfseg_pipeline.inference.sliding_window import window_starts
    from pfseg_pipeline.networks.registry import build_network, inference_parameter_count

    _free(device)
    torch.manual_seed(seed)
    model = build_network(network, plans).eval()
    predictor = Predictor([model], plans, network, device=device)  # fp16 autocast on CUDA
    rng = np.random.default_rng(seed)
    host = rng.standard_normal((plans.in_channels, *shape_zyx), dtype=np.float32)
    on_device = torch.from_numpy(host)[None].to(device)

    def network_only():
        with torch.no_grad():
            out = predictor._forward(predictor.models[0], on_device)
        _sync(device)
        return out

    def end_to_end():
        probabilities = predictor.predict_preprocessed(host)   # host -> device -> pad -> net -> host
        return (probabilities > 0.5).astype(np.uint8)

    timings = {}
    for name, fn in (("network", network_only), ("end_to_end", end_to_end)):
        fn()  # warm-up: cuDNN autotuning, allocator
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        timings[name] = times
    if predictor.patch_free:
        kind, passes = "whole volume", 1
    else:
        patch = plans.patch_based.patch_shape_zyx
        kind = f"sliding window {'x'.join(map(str, patch))}, step {plans.patch_based.step}"
        passes = int(np.prod([len(window_starts(max(s, p), p, plans.patch_based.step))
                              for s, p in zip(shape_zyx, patch)]))
    row = {"case": label, "network": network, "input_shape_czyx": [plans.in_channels, *shape_zyx],
           "inference": kind, "forward_passes": passes, "amp": predictor.amp,
           "parameters_inference": inference_parameter_count(model),
           "network_seconds": float(np.median(timings["network"])),
           "end_to_end_seconds": float(np.median(timings["end_to_end"])),
           "network_seconds_all": timings["network"], "end_to_end_seconds_all": timings["end_to_end"]}
    if device.type == "cuda":
        row["peak_allocated_bytes"] = int(torch.cuda.max_memory_allocated(device))
    return row


# ---- the run --------------------------------------------------------------------------------------
def environment(device: torch.device, dry_run: bool) -> dict:
    env = {"date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "dry_run": dry_run, "device": str(device), "python": platform.python_version(),
           "torch": torch.__version__, "numpy": np.__version__, "cpu_threads": os.cpu_count(),
           "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, gpu_memory_bytes=int(props.total_memory), cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version(), cudnn_benchmark=torch.backends.cudnn.benchmark)
    return env


SECTIONS = ("memory", "speed", "inference")


def run_check(out_dir: Path, dry_run: bool = False, sections: tuple[str, ...] = SECTIONS,
              log=print) -> dict:
    """Run the check, writing `out_dir/gpu_check.json` after every section; returns the results."""
    cfg = DRY if dry_run else FULL
    if dry_run:
        device = torch.device("cpu")
        torch.set_num_threads(1)   # tiny shapes: one thread is fastest, and CI machines are shared
    elif torch.cuda.is_available():
        device = torch.device("cuda")
        torch.backends.cudnn.benchmark = True   # as the trainer does on CUDA
    else:
        raise SystemExit("gpu_check: no CUDA device visible to torch (use --dry-run for the CPU smoke run)")
    amp = device.type == "cuda"
    from pfseg_pipeline.planners import memory

    out_dir.mkdir(parents=True, exist_ok=True)
    out_file = out_dir / "gpu_check.json"
    results: dict[str, Any] = {
        "environment": environment(device, dry_run),
        "allowance": {"factor": memory.ALLOWANCE_FACTOR, "context_bytes": memory.ALLOWANCE_CONTEXT_BYTES},
        "notes": ["NIfTI reading/writing is not included in the end-to-end times: nibabel is absent on "
                  "the GPU machine; end to end = host float32 array -> device -> padding -> prediction -> "
                  "probabilities on the host -> threshold 0.5.",
                  "Random weights and random inputs: speed and memory do not depend on training."],
        "errors": [], "seconds": {}}

    def save():
        tmp = out_file.with_name(out_file.name + ".tmp")
        tmp.write_text(json.dumps(results, indent=1, default=str))
        os.replace(tmp, out_file)

    def attempt(what: str, fn):
        try:
            return fn()
        except Exception as exc:  # one failure (e.g. out of memory) must not lose the rest
            results["errors"].append({"what": what, "error": f"{type(exc).__name__}: {exc}"[:2000],
                                      "traceback": traceback.format_exc()[-4000:]})
            log(f"  FAILED {what}: {type(exc).__name__}: {str(exc)[:300]}")
            if device.type == "cuda":
                _free(device)
            return None

    start = time.perf_counter()
    log(f"gpu_check on {results['environment'].get('gpu', device)} (dry run: {dry_run})")
    plans = build_plans(cfg)
    results["plans"] = {k: plan_summary(plans[k]) for k in ("default", "paper")}
    results["plans"]["planning_seconds"] = plans["planning_seconds"]
    save()

    if "memory" in sections:
        t0 = time.perf_counter()
        rows = []
        for network, shape, batch, *row_of in cfg["memory"]:
            ablation = row_of[0] if row_of else None
            log(f"memory: {network} {'x'.join(map(str, shape))} batch {batch}"
                + (f" ({ablation})" if ablation else ""))
            row = attempt(f"memory {network} {shape} b{batch}",
                          lambda n=network, s=shape, b=batch, a=ablation: measure_memory_row(
                              n, plans["default"], s, b, device, amp, cfg["memory_steps"], a))
            if row:
                rows.append(row)
                log(f"  predicted {row['predicted_tensor_bytes'] / GiB:.2f} GiB traced "
                    f"({row['predicted_bytes'] / GiB:.2f} with allowance); measured allocated "
                    f"{row['allocated_bytes'] / GiB:.2f}, reserved {row['reserved_bytes'] / GiB:.2f} GiB")
            results["memory"] = {"rows": rows, "calibration": calibrate(rows)}
            save()
        results["seconds"]["memory"] = round(time.perf_counter() - t0, 1)

    if "speed" in sections:
        t0 = time.perf_counter()
        rows = []
        # each plan and network in the contiguous layout (the trainer's on a GPU); the default
        # plan's also channels-last, the trainer's layout on a CPU, unmeasured on a GPU until now
        networks = ("pfseg", "resunet3d")
        runs = [(label, network, False) for label in ("default", "paper") for network in networks]
        runs += [("default", network, True) for network in networks]
        for label, network, channels_last in runs:
            what = f"speed {label} {network}" + (" channels-last" if channels_last else "")
            log(what)
            row = attempt(what, lambda lb=label, n=network, cl=channels_last: measure_speed_row(
                lb, n, plans[lb], device, amp, cfg["speed_warmup"], cfg["speed_steps"], channels_last=cl))
            if row:
                rows.append(row)
                log(f"  {row['steps_per_second']:.2f} steps/s ({row['seconds_per_step'] * 1000:.0f} ms/step)")
            results["speed"] = {"rows": rows}
            save()
        results["seconds"]["speed"] = round(time.perf_counter() - t0, 1)

    if "inference" in sections:
        t0 = time.perf_counter()
        rows = []
        cases = (("brats", plans["default"], cfg["inference_shape_zyx"]),
                 ("paper_grid", plans["paper"], cfg["paper_inference_shape_zyx"]))
        for label, p, shape in cases:
            for network in ("pfseg", "resunet3d"):
                log(f"inference: {label} {'x'.join(map(str, shape))}, {network}")
                row = attempt(f"inference {label} {network}", lambda lb=label, pl=p, s=shape, n=network:
                              measure_inference_row(lb, n, pl, s, device, cfg["inference_repeats"]))
                if row:
                    rows.append(row)
                    log(f"  network {row['network_seconds']:.3f} s, end to end "
                        f"{row['end_to_end_seconds']:.3f} s ({row['forward_passes']} forward pass(es))")
                results["inference"] = {"rows": rows, "ratios": inference_ratios(rows)}
                save()
        results["seconds"]["inference"] = round(time.perf_counter() - t0, 1)

    results["seconds"]["total"] = round(time.perf_counter() - start, 1)
    save()
    log(f"wrote {out_file}")
    return results


def inference_ratios(rows: list[dict]) -> dict:
    out = {}
    for case in dict.fromkeys(r["case"] for r in rows):
        by = {r["network"]: r for r in rows if r["case"] == case}
        if "pfseg" in by and "resunet3d" in by:
            out[case] = {k: by["resunet3d"][f"{k}_seconds"] / by["pfseg"][f"{k}_seconds"]
                         for k in ("network", "end_to_end")}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", default=bool(os.environ.get("GPU_CHECK_DRY_RUN")),
                        help="run on the CPU at tiny shapes (seconds); also env GPU_CHECK_DRY_RUN=1")
    parser.add_argument("--out", default=os.environ.get("OUT") or "gpu_check_out",
                        help="output folder (default: $OUT, else ./gpu_check_out)")
    parser.add_argument("--sections", default="memory,speed,inference",
                        help="comma-separated subset of memory,speed,inference")
    args = parser.parse_args(argv)
    sections = tuple(s.strip() for s in args.sections.split(",") if s.strip())
    unknown = set(sections) - {"memory", "speed", "inference"}
    if unknown:
        parser.error(f"unknown section(s) {sorted(unknown)}")
    results = run_check(Path(args.out), dry_run=args.dry_run, sections=sections,
                        log=lambda m: print(m, flush=True))
    from bench.gpu_report import markdown

    print(markdown(results))
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
