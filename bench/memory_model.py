"""Memory model: the predicted peak of a training step vs the same step measured for real (CPU).

    python -m bench.memory_model [--quick]

For PFSeg and two baselines (ResUNet3D, HDC), at three small shapes/batches each, one run:

- predicted: `planners.memory.tracked_step_bytes` (the planner's method: the trainer's step,
  `networks.step.train_step`, traced by PyTorch's MemTracker under FakeTensorMode, nothing
  allocated) and the fallback `saved_tensor_step_bytes` (saved-for-backward bytes at two small
  real shapes, extrapolated), both fp32 here, each with the seconds it took;
- measured: `planners.measured_memory.measured_cpu_step_bytes`, the same real step
  (forward_train, the real loss, backward, gradient clipping, Adam) run under `torch.profiler`
  with memory profiling, the peak replayed
  from the CPU allocator's own allocation/free events: `tensor peak` leaves out the scratch
  buffers kernels allocate and free inside one operator (the CPU's vol2col buffers; on a GPU
  their counterpart is the cuDNN workspace, which the allowance covers), `allocator peak`
  keeps them.

The GPU side (CUDA allocator, cuDNN workspaces, mixed precision, context) is measured by
bench/gpu_check.sh; see its section.
"""

from __future__ import annotations

import argparse
import json
import logging
import time

import torch

log = logging.getLogger(__name__)
MiB = 2**20
NETWORKS = ("pfseg", "resunet3d", "hdc")


def bench_plans(widths, sgm_widths, head_width):
    from pfseg_pipeline.data.labels import BRATS2020
    from pfseg_pipeline.planners.memory import guidance_patch_for
    from pfseg_pipeline.plans import GuidancePlan, NetworkPlan, PatchPlan, Plans

    net = NetworkPlan(list(widths), list(sgm_widths), head_width)
    hr = [2 * 2 * 2 ** net.n_pool] * 3
    plans = Plans(dataset_name="MemoryBench", modalities=["t1", "t1ce", "t2", "flair"],
                  label_scheme=BRATS2020.to_json(), hr_shape_zyx=hr, target_spacing_zyx=[1.0] * 3,
                  network=net, guidance=GuidancePlan(guidance_patch_for(hr, [2, 2, 2], net), "center"),
                  patch_based=PatchPlan([2 * 2 ** net.n_pool] * 3))
    plans.validate("bench plans")
    return plans


def run(quick: bool = False) -> dict:
    from pfseg_pipeline.planners import memory
    from pfseg_pipeline.planners.measured_memory import measured_cpu_step_bytes

    if quick:  # narrow networks, the smallest valid shapes
        plans = bench_plans([8, 16, 32, 64], [8, 16, 32], 8)
        configs = {"pfseg": [((32, 32, 32), 1), ((32, 32, 32), 2)],
                   "resunet3d": [((16, 16, 16), 1), ((16, 16, 16), 2)],
                   "hdc": [((32, 32, 32), 1), ((32, 32, 32), 2)]}
    else:  # the paper's widths 32-32-64-128-256 (4 poolings), SGM 16-32-64-64
        plans = bench_plans([32, 32, 64, 128, 256], [16, 32, 64, 64], 16)
        configs = {"pfseg": [((64, 64, 64), 1), ((64, 96, 64), 1), ((64, 64, 64), 2)],
                   "resunet3d": [((32, 32, 32), 2), ((48, 64, 48), 1), ((64, 64, 64), 1)],
                   "hdc": [((64, 64, 64), 1), ((64, 96, 64), 1), ((64, 64, 64), 2)]}
    rows = []
    for network, cases in configs.items():
        for shape, batch in cases:
            at = memory.plans_at_shape(network, plans, shape)
            t0 = time.perf_counter()
            traced, _ = memory.tracked_step_bytes(network, at, batch, amp=False)
            t_traced = time.perf_counter() - t0
            t0 = time.perf_counter()
            fallback, _ = memory.saved_tensor_step_bytes(network, at, batch, amp=False)
            t_fallback = time.perf_counter() - t0
            t0 = time.perf_counter()
            measured = measured_cpu_step_bytes(network, at, batch, amp=False)
            t_measured = time.perf_counter() - t0
            row = {"network": network, "shape_zyx": list(shape), "batch": batch,
                   "predicted_bytes": traced, "predict_seconds": t_traced,
                   "fallback_bytes": fallback, "fallback_seconds": t_fallback,
                   "measured_tensor_bytes": measured["tensor_peak"],
                   "measured_allocator_bytes": measured["allocator_peak"], "measure_seconds": t_measured,
                   "ratio": traced / measured["tensor_peak"],
                   "fallback_ratio": fallback / measured["tensor_peak"],
                   "allocator_ratio": measured["allocator_peak"] / traced}
            log.info("%s %s b%d: predicted %.1f MiB (%.2f s), measured %.1f MiB -> ratio %.3f", network,
                     "x".join(map(str, shape)), batch, traced / MiB, t_traced,
                     measured["tensor_peak"] / MiB, row["ratio"])
            rows.append(row)
    figures = {"title": "Memory model: predicted vs measured peak of a training step (CPU)",
               "widths": plans.network.widths, "torch": torch.__version__,
               "torch_threads": torch.get_num_threads(), "rows": rows,
               "max_abs_error": max(abs(r["ratio"] - 1) for r in rows),
               "fallback_max_abs_error": max(abs(r["fallback_ratio"] - 1) for r in rows)}
    figures["markdown"] = _markdown(figures)
    return figures


def _markdown(f: dict) -> str:
    lines = [
        f"One real fp32 training step (the trainer's: forward_train, the real loss, backward, gradient "
        f"clipping, Adam) per row on the CPU, "
        f"4 input channels, widths {'-'.join(map(str, f['widths']))}, random weights; predicted by the "
        "planner's memory model (MemTracker under FakeTensorMode: nothing allocated) and by its fallback "
        "(saved-for-backward bytes at two small real shapes, extrapolated); measured from the CPU "
        "allocator's own events (`torch.profiler`, memory profiling), without and with the scratch "
        "buffers freed inside one operator.",
        "",
        "| network | input (z y x) | batch | predicted MiB | measured MiB | predicted / measured | "
        "prediction s | fallback MiB | fallback / measured | fallback s | measured incl. scratch MiB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in f["rows"]:
        lines.append(
            f"| {r['network']} | {'x'.join(map(str, r['shape_zyx']))} | {r['batch']} | "
            f"{r['predicted_bytes'] / MiB:.1f} | {r['measured_tensor_bytes'] / MiB:.1f} | {r['ratio']:.3f} | "
            f"{r['predict_seconds']:.2f} | {r['fallback_bytes'] / MiB:.1f} | {r['fallback_ratio']:.3f} | "
            f"{r['fallback_seconds']:.2f} | {r['measured_allocator_bytes'] / MiB:.1f} |")
    lines += ["", f"The planner's prediction is within {100 * f['max_abs_error']:.1f} % of the measured "
              f"tensor peak on every row (fallback: within {100 * f['fallback_max_abs_error']:.1f} %). "
              "The GPU-side allowance (CUDA allocator, cuDNN workspaces, context) is calibrated by the "
              "GPU check (its section)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory_model", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="narrow networks, tiny shapes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    figures = run(quick=args.quick)
    print(json.dumps({k: v for k, v in figures.items() if k != "markdown"}, indent=1))
    print(figures["markdown"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
