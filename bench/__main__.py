"""Run the benchmarks and write docs/BENCHMARKS.md.

    python -m bench all            # every benchmark, full size where the CPU allows
    python -m bench all --quick    # small shapes: a smoke run (minutes)
    python -m bench metrics_speed inference_speed
    python -m bench recipe --iterations 500    # the recipe study (hours; not part of `all`)
    python -m bench branches                   # the SR decoder and SGM at LR scale 1 (an hour; not in `all`)
    python -m bench branches --lr-scale 2      # the same at LR scale 2 (section branches_lr2)
    python -m bench tta                        # mirror TTA against one pass (40 minutes; not in `all`)

Each benchmark module exposes `run(quick: bool) -> dict` with a 'markdown' section (a module
with its own options also has `options(argv) -> dict`, given the rest of the line); every
figure in it was measured side by side with its alternative in the same run. The page gets
the machine and the date of the run; sections of benchmarks not run this time are kept.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import logging
import os
import platform
import re
import sys
import time
from pathlib import Path

BENCHMARKS = (
    "metrics_speed",      # HD95: ours vs MedPy
    "preprocess_speed",   # plan + preprocess: ours vs nnU-Net v2
    "preprocess_memory",  # plan + preprocess: peak memory of the process tree, 8 vs 40 BraTS-size cases
    "inference_speed",    # PFSeg whole volume vs ResUNet3D sliding window (and on ONNX Runtime)
    "export_speed",       # PFSeg's network pass: eager vs ONNX Runtime vs TorchScript
    "loader_speed",       # data loader batches/s vs training steps/s
    "memory_format",      # a CPU training step in torch's default layout vs channels-last
    "omp_wait",           # OpenMP's wait between parallel regions: a CPU step on idle and shared cores
    "memory_model",       # memory model: predicted vs measured (CPU here; GPU in gpu_check)
    "lr_scale",           # per LR scale on 1, 2 and 4 mm anatomy: predicted GPU peak, small ET, CPU step
    "checkpoint_sizes",   # checkpoint bytes per kind: with and without the optimiser state
    "ablation",           # the paper's ablation rows on synthetic data
    "nnunet_compare",     # pfseg vs nnU-Net v2 3d_fullres at equal budget
    "recipe",             # each training-recipe change against today's default (hours: named only)
    "branches",           # PFSeg's SR decoder and SGM at LR scale 1, ET-free test cases (an hour: named only)
    "tta",                # mirror test-time augmentation against one pass, same models (40 min: named only)
)
NOT_IN_ALL = ("recipe", "branches", "tta")
# OpenMP reads its wait once, when torch loads it: the benchmarks measured in this process ran
# under the environment as it was then (the commands set theirs, `cli.OPENMP_ENV`; a benchmark's
# subprocesses name their own)
_OPENMP_WAIT = None if "torch" in sys.modules else {
    k: os.environ[k] for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT") if k in os.environ}
PAGE = Path(__file__).resolve().parent.parent / "docs" / "BENCHMARKS.md"
HEADER = """# Benchmarks

Every figure on this page was produced by `python -m bench` (see bench/), each as a ratio against
its alternative measured side by side in the same run, on the machine named in its section.
Nothing here is typed by hand. GPU figures come from `bench/gpu_check.sh` (see its section).
"""


def machine() -> str:
    import torch

    from pfseg_pipeline.devices import cpu_model

    # torch's CPU vector code (AVX2 / AVX512) names which kernels computed the figures
    return (f"{cpu_model()} ({torch.backends.cpu.get_cpu_capability()}), {os.cpu_count()} CPU threads, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads, {openmp_wait()}), "
            f"Python {platform.python_version()}")


def openmp_wait() -> str:
    """The OpenMP wait this process's torch runs under (`_OPENMP_WAIT`, read before torch loaded)."""
    if _OPENMP_WAIT is None:
        return "OpenMP wait unknown: torch loaded before bench"
    return " ".join(f"{k}={v}" for k, v in _OPENMP_WAIT.items()) or "OpenMP's default wait"


def _sections(text: str) -> dict[str, str]:
    found = {}
    for m in re.finditer(r"<!-- bench:(\w+) -->\n(.*?)<!-- /bench:\1 -->\n", text, re.S):
        found[m.group(1)] = m.group(2)
    return found


def write_page(results: dict[str, str], page: Path = PAGE) -> None:
    from pfseg_pipeline.fileio import write_text

    old = _sections(page.read_text(encoding="utf-8")) if page.exists() else {}
    old.update(results)
    # each benchmark's sections in BENCHMARKS's order, a variant's ("branches_lr2") after its own
    order = [k for b in BENCHMARKS for k in sorted(old) if k == b or k.startswith(f"{b}_")]
    order += sorted(set(old) - set(order))
    body = "".join(f"<!-- bench:{b} -->\n{old[b]}<!-- /bench:{b} -->\n\n" for b in order)
    write_text(page, HEADER + "\n" + body)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="+", help=f"'all' or some of: {', '.join(BENCHMARKS)}")
    parser.add_argument("--quick", action="store_true", help="small shapes (a smoke run)")
    parser.add_argument("--no-write", action="store_true", help="print, do not update the page")
    args, rest = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    names = [b for b in BENCHMARKS if b not in NOT_IN_ALL] if "all" in args.names else args.names
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]!r}")
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    where = machine()
    results = {}
    for name in names:
        t0 = time.perf_counter()
        module = importlib.import_module(f"bench.{name}")
        extra = module.options(rest) if hasattr(module, "options") else {}
        if rest and not hasattr(module, "options"):
            parser.error(f"unrecognised arguments for {name}: {' '.join(rest)}")
        figures = module.run(**{**extra, "quick": args.quick or extra.get("quick", False)})
        took = time.perf_counter() - t0
        md = figures["markdown"].rstrip() + "\n"
        # a run with options may write a section of its own beside the plain run's (branches_lr2)
        section = figures.get("section", name)
        results[section] = (f"## {figures.get('title', name)}\n\n"
                            f"Measured {stamp} on {where}; `python -m bench {' '.join([name, *rest])}"
                            f"{' --quick' if args.quick else ''}` ({took:.0f} s).\n\n{md}")
        print(results[section])
    if not args.no_write:
        write_page(results)
        print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
