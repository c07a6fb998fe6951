"""Inference speed: PFSeg whole volume vs ResUNet3D sliding window, same cases, one run.

    python -m bench.inference_speed [--quick] [--shape X Y Z] [--cases N] [--device cpu] [--rounds N]

The same synthetic BraTS-like cases (the demo's 64 x 64 x 48, then 240 x 240 x 155, x y z)
go through `inference.pipeline.predict_folder` on the same machine in the same process: with
PFSeg (one forward pass over the whole padded volume; the SR decoder is not run), with the
patch-based ResUNet3D (Gaussian sliding window over its planned patch, step 0.5) and, when
onnxruntime or openvino is installed, with PFSeg on ONNX Runtime or OpenVINO (`pfseg_predict
--backend onnxruntime|openvino`: the network exported to ONNX when loaded; its load time is
reported apart).
Both networks have the paper's widths (32, 32, 64, 128, 256) and random weights: speed does not
depend on training. The plan is built like the planner's rules on these cases: target spacing
1 mm, HR shape = the largest brain box rounded up to LR scale x 2**4 = 32 per axis, LR scale 2,
guidance patch HR / 4, baseline patch HR / 2 (a multiple of 16).

Figures per case: `network` (the forward passes only) and end to end (reading, preprocessing,
network, export and writing, with the pipeline's overlap: the folder's wall time divided by the
number of cases), and the ratio ResUNet3D / PFSeg of each. Each method runs `--rounds` times (3 by
default), the methods in turns with the order rotated per round; the table gives the median with the
lowest and highest, the ratio is the ratio of the medians, and each round's ratio is listed:
one round on a machine whose load comes and goes can be off by 40 % (11.8x in one run, 8.3x in
the next, 7.3x on an idle machine).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pfseg_pipeline.data.labels import BRATS2020
from pfseg_pipeline.plans import GuidancePlan, NetworkPlan, PatchPlan, Plans

log = logging.getLogger(__name__)

PAPER_WIDTHS = [32, 32, 64, 128, 256]
METHODS = ("pfseg", "resunet3d")
# PFSeg's networks exported (`pfseg_predict --backend B`), when B's package is installed (CPU)
GRAPH_METHODS = {"pfseg_onnxruntime": ("onnxruntime", "ONNX Runtime", "onnx"),
                 "pfseg_openvino": ("openvino", "OpenVINO", "openvino")}     # backend, name, extra
NAMES = {"pfseg": "PFSeg", "resunet3d": "ResUNet3D",
         **{m: f"PFSeg, {name}" for m, (_, name, _) in GRAPH_METHODS.items()}}


def _round_up(n: float, multiple: int) -> int:
    return int(math.ceil(n / multiple) * multiple)


def bench_plans(brain_shapes_zyx: list[tuple[int, int, int]],
                modalities=("t1", "t1ce", "t2", "flair")) -> Plans:
    """Plans with the paper's widths for cases whose brain boxes (at 1 mm) have these shapes."""
    net = NetworkPlan(widths=list(PAPER_WIDTHS), sgm_widths=[16, 32, 64, 64], head_width=16)
    divisor = 2 * 2 ** net.n_pool
    hr = [_round_up(max(s[a] for s in brain_shapes_zyx), divisor) for a in range(3)]
    patch = [_round_up(h / 2, 2 ** net.n_pool) for h in hr]
    plans = Plans(dataset_name="InferenceSpeed", modalities=list(modalities),
                  label_scheme=BRATS2020.to_json(), hr_shape_zyx=hr, target_spacing_zyx=[1.0, 1.0, 1.0],
                  lr_scale_zyx=[2, 2, 2],
                  guidance=GuidancePlan([h // 4 for h in hr], "center"), network=net,
                  patch_based=PatchPlan(patch_shape_zyx=patch, step=0.5),
                  reasons={"all": "bench/inference_speed.py: the planner's rules on the benchmark cases"})
    plans.validate("bench plans")
    return plans


DEMO_SHAPE_XYZ = (64, 64, 48)   # the demo's cases (scripts/demo.sh)
FULL_SHAPE_XYZ = (240, 240, 155)


ROUNDS = 3   # issue 16: speed figures are the median of at least 3 runs, with the lowest and highest


def run(quick: bool = False, shape_xyz: tuple[int, int, int] | None = None, n_cases: int | None = None,
        device: str = "cpu", seed: int = 0, rounds: int = ROUNDS) -> dict:
    """Both methods at the demo shape (3 cases) and, unless `quick`, at BraTS size (1 case);
    or at `shape_xyz` alone. Returns the figures and one Markdown section."""
    if shape_xyz is not None:
        return measure(shape_xyz, n_cases or 1, device, seed, rounds)
    shapes = [(DEMO_SHAPE_XYZ, n_cases or 3)] + ([] if quick else [(FULL_SHAPE_XYZ, n_cases or 1)])
    runs = [measure(shape, n, device, seed, rounds) for shape, n in shapes]
    return {"title": runs[0]["title"], "runs": runs,
            "markdown": "\n".join(f"### {' x '.join(map(str, r['shape_xyz']))} voxels\n\n{r['markdown']}"
                                  for r in runs)}


def spread(values: list[float]) -> dict:
    """Median, lowest and highest of a list of timings (seconds)."""
    return {"median": float(np.median(values)), "min": float(min(values)), "max": float(max(values)),
            "values": [float(v) for v in values]}


def measure(shape_xyz: tuple[int, int, int], n_cases: int = 1, device: str = "cpu", seed: int = 0,
            rounds: int = ROUNDS) -> dict:
    """Time each method on the same cases, `rounds` times (the order rotated per round, so load
    that comes and goes falls on all alike); return the figures and a Markdown section."""
    from pfseg_pipeline.data.layouts import discover
    from pfseg_pipeline.data.synthetic import write_dataset
    from pfseg_pipeline.devices import resolve_device
    from pfseg_pipeline.inference.backends import to_backend
    from pfseg_pipeline.inference.pipeline import predict_folder
    from pfseg_pipeline.inference.predictor import Predictor
    from pfseg_pipeline.inference.sliding_window import window_starts
    from pfseg_pipeline.networks.registry import build_network, inference_parameter_count
    from pfseg_pipeline.preprocessing.case import preprocess_case

    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    shape_xyz = tuple(shape_xyz)
    torch_device = resolve_device(device)
    figures: dict = {"title": "Inference: PFSeg whole volume vs ResUNet3D sliding window",
                     "shape_xyz": list(shape_xyz), "cases": n_cases, "device": str(torch_device),
                     "torch_threads": torch.get_num_threads(), "rounds": rounds, "methods": {},
                     "load_before": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="pfseg-bench-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        write_dataset(tmp / "raw", n_cases, shape_xyz, seed=seed)
        log.info("synthetic cases written in %.1f s", time.perf_counter() - t0)
        cases = discover(tmp / "raw").cases
        provisional = bench_plans([(32, 32, 32)])
        brain_shapes = [tuple(preprocess_case(c, provisional, with_label=False)[0].shape[1:]) for c in cases]
        plans = bench_plans(brain_shapes)
        figures.update(hr_shape_zyx=plans.hr_shape_zyx, patch_shape_zyx=plans.patch_based.patch_shape_zyx,
                       brain_shapes_zyx=[list(s) for s in brain_shapes])
        torch.nn.functional.conv3d(torch.zeros(1, 1, 8, 8, 8), torch.zeros(1, 1, 3, 3, 3))  # thread pool up

        exported = [m for m in GRAPH_METHODS if _installed(m)] if torch_device.type == "cpu" else []
        methods = list(METHODS) + exported
        predictors, load_seconds = {}, {}
        for method in methods:
            network = method.split("_")[0]
            torch.manual_seed(seed)
            model = build_network(network, plans).eval()
            t0 = time.perf_counter()
            models = to_backend([model], plans, network, GRAPH_METHODS[method][0] if method in GRAPH_METHODS
                                else "torch")
            load_seconds[method] = time.perf_counter() - t0
            predictors[method] = Predictor(models, plans, network, device=torch_device)
            windows = [int(np.prod([len(window_starts(s, p, plans.patch_based.step))
                                    for s, p in zip(shape, plans.patch_based.patch_shape_zyx)]))
                       for shape in brain_shapes]
            figures["methods"][method] = {
                "inference": "whole volume" if predictors[method].patch_free else "sliding window, step 0.5",
                "forward_passes_per_case": 1 if predictors[method].patch_free else float(np.mean(windows)),
                "parameters_inference": inference_parameter_count(model),
                "load_seconds": load_seconds[method],
                "network": [], "end_to_end": [], "stages": []}
        for index in range(rounds):
            shift = index % len(methods)            # each round in another order: load falls on all alike
            for method in methods[shift:] + methods[:shift]:
                log.info("round %d: %s, %d case(s) of %s (x y z)", index + 1, method, n_cases,
                         "x".join(map(str, shape_xyz)))
                report = predict_folder(tmp / "raw", tmp / f"out_{method}_{index}",
                                        predictor=predictors[method], progress=False)
                if not report.ok:
                    raise RuntimeError(f"{method}: {report.summary()}")
                m = figures["methods"][method]
                m["network"].append(float(np.mean([t["network"] for t in report.timings])))
                m["end_to_end"].append(report.wall_seconds / n_cases)
                m["stages"].append({k: float(np.mean([t[k] for t in report.timings]))
                                    for k in ("read", "preprocess", "network", "export", "total")})
        for method in (m for m in methods if m in GRAPH_METHODS):
            figures[f"{GRAPH_METHODS[method][0]}_labels_alike"] = _labels_alike(tmp / f"out_{method}_0",
                                                                                tmp / "out_pfseg_0")
        del predictors
    figures["load_after"] = os.getloadavg()[0]
    for m in figures["methods"].values():
        m["network_seconds_per_case"] = spread(m.pop("network"))
        m["end_to_end_seconds_per_case"] = spread(m.pop("end_to_end"))
    pf, ru = figures["methods"]["pfseg"], figures["methods"]["resunet3d"]
    for kind in ("network", "end_to_end"):
        a, b = ru[f"{kind}_seconds_per_case"], pf[f"{kind}_seconds_per_case"]
        figures[f"{kind}_ratio"] = a["median"] / b["median"]
        figures[f"{kind}_round_ratios"] = [x / y for x, y in zip(a["values"], b["values"])]
        for method in (m for m in figures["methods"] if m in GRAPH_METHODS):
            exported = figures["methods"][method][f"{kind}_seconds_per_case"]
            figures[f"{GRAPH_METHODS[method][0]}_{kind}_ratio"] = b["median"] / exported["median"]
    figures["markdown"] = _markdown(figures)
    return figures


def _installed(method: str) -> bool:
    import importlib.util

    package, name, extra = GRAPH_METHODS[method]
    if importlib.util.find_spec(package) is None:
        log.warning("%s is not installed (pip install 'pfseg[%s]'): no %s row", package, extra, name)
        return False
    return True


def _labels_alike(folder: Path, reference: Path) -> float:
    """Share of voxels of the written label maps in `folder` equal to those in `reference`."""
    import nibabel as nib

    alike = total = 0
    for path in sorted(reference.glob("*.nii.gz")):
        a, b = (np.asarray(nib.load(p).dataobj) for p in (folder / path.name, path))
        alike, total = alike + int((a == b).sum()), total + a.size
    return alike / total


def spread_cell(s: dict) -> str:
    return f"{s['median']:.2f} ({s['min']:.2f} - {s['max']:.2f})"


def _markdown(f: dict) -> str:
    hr = "x".join(map(str, f["hr_shape_zyx"]))
    patch = "x".join(map(str, f["patch_shape_zyx"]))
    lines = [
        f"{f['cases']} synthetic case(s) of {' x '.join(map(str, f['shape_xyz']))} voxels (x y z), 4 "
        f"modalities, on {f['device']} ({f['torch_threads']} torch threads); widths 32-32-64-128-256, "
        f"random weights. PFSeg: whole volume padded to a multiple of 32 and at least the HR shape "
        f"{hr} (z y x); ResUNet3D: patch {patch}, Gaussian sliding window, step 0.5. "
        "End to end = the folder's wall time per case through `predict_folder` (read, preprocess, "
        "network, export; reading and writing overlap the network). "
        f"{f['rounds']} rounds, the methods in turns (the order rotated per round): median (lowest - "
        f"highest). Load average {f['load_before']:.1f} before, {f['load_after']:.1f} after (other work on "
        "the machine slows every row; rerun on a quiet machine for figures to quote).",
        "",
        "| method | inference | forward passes / case | parameters (inference) | network s / case "
        "| end-to-end s / case | load s |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for key, m in f["methods"].items():
        lines.append(f"| {NAMES[key]} | {m['inference']} | {m['forward_passes_per_case']:g} | "
                     f"{m['parameters_inference'] / 1e6:.2f} M | "
                     f"{spread_cell(m['network_seconds_per_case'])} | "
                     f"{spread_cell(m['end_to_end_seconds_per_case'])} | {m.get('load_seconds', 0.0):.1f} |")
    rounds = ", ".join(f"{r:.1f}x" for r in f["end_to_end_round_ratios"])
    lines += ["", f"PFSeg is **{f['network_ratio']:.1f}x** faster in the network and "
              f"**{f['end_to_end_ratio']:.1f}x** faster end to end (ResUNet3D / PFSeg, ratio of the medians; "
              f"end to end per round: {rounds}; same cases, same run)."]
    for backend, name, _ in GRAPH_METHODS.values():
        if f"{backend}_network_ratio" in f:
            network, end, alike = (f[f"{backend}_{k}"] for k in ("network_ratio", "end_to_end_ratio",
                                                                  "labels_alike"))
            lines += ["", f"PFSeg on {name} (`pfseg_predict --backend {backend}`; load s: the export to "
                      f"ONNX and the compiled graph, once per run) is **{network:.2f}x** the eager path's "
                      f"speed in the network and **{end:.2f}x** end to end (ratio of the medians), with "
                      f"{100 * alike:.4f} % of the written labels alike."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.inference_speed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the demo shape only (a smoke run)")
    parser.add_argument("--shape", nargs=3, type=int, default=None, metavar=("X", "Y", "Z"),
                        help="one case shape as the NIfTI stores it (default: the demo's 64 64 48, "
                             "then 240 240 155)")
    parser.add_argument("--cases", type=int, default=None, help="number of cases (default 3, then 1)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    parser.add_argument("--rounds", type=int, default=ROUNDS,
                        help=f"timed runs per method (default {ROUNDS})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    figures = run(quick=args.quick, shape_xyz=tuple(args.shape) if args.shape else None,
                  n_cases=args.cases, device=args.device, rounds=args.rounds)
    print(json.dumps({k: v for k, v in figures.items() if k != "markdown"}, indent=2))
    print(figures["markdown"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
