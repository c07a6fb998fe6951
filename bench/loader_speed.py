"""Data loader speed: training batches per second vs training steps per second, one run.

    python -m bench.loader_speed [--quick] [--workers N]

A synthetic cache of 4-channel cases goes through the real training loader
(`training.data_loader.build_training_batches`: read the case, place it in the HR volume,
spatial + intensity augmentation, region targets, LR input and guidance patch derived from the
augmented HR volume) with 0 background workers and with N, and PFSeg (the paper's widths,
random weights) trains on the same shape: alone on a fixed batch, and fed by the N-worker loader.
The loader keeps up when its batches/s exceed the steps/s; the last column shows what feeding
the real loader costs the step rate (on a CPU both compete for the same cores).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def _plans(box_zyx, n_cases_seed=0):
    from pfseg_pipeline.data.labels import BRATS2020
    from pfseg_pipeline.plans import GuidancePlan, PatchPlan, Plans

    hr = [-(-n // 32) * 32 for n in box_zyx]                 # LR scale 2 x 2**4 poolings
    return Plans(dataset_name="LoaderBench", modalities=["t1", "t1ce", "t2", "flair"],
                 label_scheme=BRATS2020.to_json(), hr_shape_zyx=hr, target_spacing_zyx=[1.0] * 3,
                 guidance=GuidancePlan([h // 4 for h in hr], "center"),
                 patch_based=PatchPlan([max(16, h // 2 // 16 * 16) for h in hr]))


def _write_cache(cases_dir: Path, box_zyx, n_cases: int) -> list[str]:
    from pfseg_pipeline.fileio import save_npz

    rng = np.random.default_rng(0)
    ids = []
    for i in range(n_cases):
        image = rng.normal(0, 1, (4, *box_zyx)).astype(np.float32)
        seg = np.zeros(box_zyx, np.uint8)
        c = [n // 2 for n in box_zyx]
        r = [max(2, n // 6) for n in box_zyx]
        seg[tuple(slice(ci - ri, ci + ri) for ci, ri in zip(c, r))] = 2
        seg[tuple(slice(ci - ri // 2, ci + ri // 2) for ci, ri in zip(c, r))] = 4
        ids.append(f"case_{i:03d}")
        save_npz(cases_dir / f"{ids[-1]}.npz", image=image, seg=seg)
    return ids


def _rate(next_item, n: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        next_item()
    t0 = time.perf_counter()
    for _ in range(n):
        next_item()
    return n / (time.perf_counter() - t0)


def run(quick: bool = False, workers: int | None = None) -> dict:
    import torch

    from pfseg_pipeline.networks.registry import build_network
    from pfseg_pipeline.training.data_loader import build_training_batches
    from pfseg_pipeline.training.losses import PFSegLoss

    workers = workers or max(1, min(4, (os.cpu_count() or 2) - 1))
    box = (60, 76, 60) if quick else (124, 150, 150)
    n_batches, n_steps = (8, 3) if quick else (10, 3)
    plans = _plans(box)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        cases = Path(tmp) / "cases"
        ids = _write_cache(cases, box, 4)

        def stream(patch_free, w):
            s = build_training_batches(plans, cases, ids, patch_free, patch_free, 1, w, seed=0)
            s.set_epoch(0)
            return s

        for label, patch_free in (("pfseg (whole HR volume)", True), ("resunet3d (patch)", False)):
            for w in (0, workers):
                s = stream(patch_free, w)
                rows[(label, w)] = _rate(lambda: next(s), n_batches, warmup=2)  # noqa: B023
                s.close()

        torch.manual_seed(0)
        net = build_network("pfseg", plans)
        loss = PFSegLoss(ablation="full")
        opt = torch.optim.Adam(net.parameters(), lr=1e-4)

        def step(batch):
            tensors = {k: torch.from_numpy(v) for k, v in batch.items() if isinstance(v, np.ndarray)}
            total, _ = loss.compute(net(tensors), tensors)
            opt.zero_grad()
            total.backward()
            opt.step()

        s = stream(True, workers)
        fixed = next(s)
        step_alone = _rate(lambda: step(fixed), n_steps)
        step_fed = _rate(lambda: step(next(s)), n_steps)  # noqa: B023
        s.close()
    figures = {"title": "Data loader: batches/s vs training steps/s",
               "box_zyx": list(box), "hr_shape_zyx": plans.hr_shape_zyx,
               "patch_shape_zyx": plans.patch_based.patch_shape_zyx, "workers": workers,
               "loader_batches_per_s": {f"{k[0]}, {k[1]} workers": v for k, v in rows.items()},
               "pfseg_steps_per_s_fixed_batch": step_alone, "pfseg_steps_per_s_fed_by_loader": step_fed,
               "torch_threads": torch.get_num_threads()}
    figures["markdown"] = _markdown(figures, rows, workers)
    return figures


def _markdown(f: dict, rows: dict, workers: int) -> str:
    hr = " x ".join(map(str, f["hr_shape_zyx"]))
    lines = [f"Cases of 4 x {' x '.join(map(str, f['box_zyx']))} voxels (z y x) in the HR volume {hr}; "
             f"baseline patch {' x '.join(map(str, f['patch_shape_zyx']))}; batch 1; PFSeg at the paper's "
             f"widths, fp32, {f['torch_threads']} torch threads.", "",
             "| loader | batches/s, 0 workers | batches/s, "
             f"{workers} workers | PFSeg steps/s (fixed batch) | loader / step |",
             "|---|---:|---:|---:|---:|"]
    step = f["pfseg_steps_per_s_fixed_batch"]
    for label in dict.fromkeys(k[0] for k in rows):
        lines.append(f"| {label} | {rows[(label, 0)]:.2f} | {rows[(label, workers)]:.2f} | {step:.3f} | "
                     f"{rows[(label, workers)] / step:.1f}x |")
    lines += ["", f"PFSeg fed by the {workers}-worker loader: {f['pfseg_steps_per_s_fed_by_loader']:.3f} "
              f"steps/s ({f['pfseg_steps_per_s_fed_by_loader'] / step:.2f} of the fixed-batch rate)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loader_speed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small volumes (64 x 96 x 64 HR)")
    parser.add_argument("--workers", type=int, default=None, help="background workers (default: cores - 1)")
    args = parser.parse_args(argv)
    figures = run(quick=args.quick, workers=args.workers)
    print(json.dumps({k: v for k, v in figures.items() if k != "markdown"}, indent=2))
    print(figures["markdown"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
