"""OpenMP's wait between parallel regions: a CPU training step on idle cores and on shared ones.

    python -m bench omp_wait [--quick]

A CPU training step runs thousands of short parallel regions; between two, torch's OpenMP
threads either spin (OpenMP's default: GNU OpenMP spins 300,000 times) or sleep at once
(OMP_WAIT_POLICY=PASSIVE), and a bounded GOMP_SPINCOUNT spins that long, then sleeps. This
times the trainer's step (`networks.step.build_step` in the trainer's layout, the demo preset's
plan on 4 mm anatomy cases, one torch thread per core, no loader worker: `cpu_split`'s default)
of PFSeg and ResUNet3D under each wait, each block in a fresh process (OpenMP reads the
variables once), in two machine states: idle, and shared with as many busy processes as there
are cores (Python loops this bench starts and stops: what another training or other users do
to a shared machine). Per round every condition in turn.

The commands' choice (`cli.OPENMP_ENV`) is the wait whose worst ratio to the fastest wait of a
row (state, network) is the smallest: no machine state is known in advance.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parent.parent
WAITS = {   # label -> the OpenMP variables of the block (every other one removed)
    "spin (OpenMP's default)": {},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "passive + spin 3000": {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "3000"},
    "passive + spin 30000": {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "30000"},
}
OPENMP_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS", "KMP_BLOCKTIME")
STATES = ("idle", "shared")
NETWORKS = ("pfseg", "resunet3d")
ROUNDS = 6
STEPS = {"pfseg": 4, "resunet3d": 20}


def options(argv: list[str]) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench omp_wait")
    p.add_argument("--quick", action="store_true", help="ResUNet3D only, two waits, one round of 2 steps")
    return vars(p.parse_args(argv))


def step_seconds(spec: dict) -> list[float]:
    """Seconds of `spec['steps']` training steps of `spec['network']` on the plans at
    `spec['plans']`, with `spec['threads']` torch threads, after two warm-up steps."""
    import torch

    from pfseg_pipeline.networks.registry import network_spec
    from pfseg_pipeline.networks.step import build_step, step_memory_format
    from pfseg_pipeline.plans import load_plans

    torch.set_num_threads(spec["threads"])
    plans = load_plans(spec["plans"])
    torch.manual_seed(0)
    step = build_step(spec["network"], plans, network_spec(spec["network"]).batch_size(plans),
                      memory_format=step_memory_format("cpu"))
    for _ in range(2):
        step()
    seconds = []
    for _ in range(spec["steps"]):
        t0 = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - t0)
    return seconds


def _block(spec: dict, wait: dict[str, str]) -> list[float]:
    """`step_seconds` in a fresh process with the OpenMP variables of `wait` and no others."""
    env = {k: v for k, v in os.environ.items() if k not in OPENMP_VARIABLES}
    env.update(wait)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    out = subprocess.run([sys.executable, "-m", "bench.omp_wait", "--child", json.dumps(spec)], env=env,
                         capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


@contextlib.contextmanager
def busy_processes(n: int):
    """`n` processes that each keep a core busy (a Python loop) while the block runs."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield procs
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()


def run(quick: bool = False) -> dict:
    from bench.inference_speed import spread
    from bench.lr_scale import _fingerprint, _plan, token_peak
    from pfseg_pipeline.parallel import available_cores
    from pfseg_pipeline.plans import save_plans

    networks = ("resunet3d",) if quick else NETWORKS
    waits = {k: WAITS[k] for k in (("spin (OpenMP's default)", "passive + spin 30000") if quick else WAITS)}
    rounds = 1 if quick else ROUNDS
    cores = available_cores()
    seconds: dict[tuple[str, str, str], list[float]] = {}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="pfseg_omp_wait_") as tmp:
        plans = _plan(_fingerprint(Path(tmp) / "4mm", 4, 2 if quick else 3), "demo", None, token_peak)
        plans_file = Path(tmp) / "plans.json"
        save_plans(plans, plans_file)
        for _ in range(rounds):
            for state in STATES:
                with busy_processes(cores if state == "shared" else 0):
                    for network in networks:
                        spec = {"plans": str(plans_file), "network": network, "threads": cores,
                                "steps": 2 if quick else STEPS[network]}
                        for label, wait in waits.items():
                            seconds.setdefault((state, network, label), []).extend(_block(spec, wait))
                            log.info("%s, %s, %s: %.3f s", state, network, label,
                                     statistics.median(seconds[(state, network, label)]))
    rows = [{"state": s, "network": n, "wait": w, "seconds": spread(v)} for (s, n, w), v in seconds.items()]
    figures = {"title": "OpenMP's wait between parallel regions: a CPU training step, idle and shared cores",
               "cores": cores, "rounds": rounds, "steps": {n: 2 if quick else STEPS[n] for n in networks},
               "waits": waits, "hr_shape_zyx": list(plans.hr_shape_zyx),
               "patch_shape_zyx": list(plans.patch_based.patch_shape_zyx), "rows": rows,
               "worst_ratio": worst_ratios(rows),
               "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)]}
    figures["markdown"] = _markdown(figures)
    return figures


def worst_ratios(rows: list[dict]) -> dict[str, float]:
    """Per wait, the largest over the rows (state, network) of its median seconds / the row's
    fastest wait's: the commands take the wait for which it is smallest."""
    best: dict[tuple, float] = {}
    for r in rows:
        key = (r["state"], r["network"])
        best[key] = min(best.get(key, float("inf")), r["seconds"]["median"])
    worst: dict[str, float] = {}
    for r in rows:
        ratio = r["seconds"]["median"] / best[(r["state"], r["network"])]
        worst[r["wait"]] = max(worst.get(r["wait"], 0.0), ratio)
    return worst


def _markdown(f: dict) -> str:
    from bench.inference_speed import spread_cell
    from pfseg_pipeline.cli import OPENMP_ENV

    x = "x".join
    waits = list(f["waits"])
    load = f["load_average_1min"]
    commands = next((w for w, env in f["waits"].items() if env == OPENMP_ENV), None)
    lines = [
        f"The trainer's step (channels-last, float32) on {f['cores']} core(s), {f['cores']} torch thread(s), "
        "no loader worker; the demo preset's plan on 4 mm anatomy cases (PFSeg: HR "
        f"{x(map(str, f['hr_shape_zyx']))} at its batch; ResUNet3D: patch "
        f"{x(map(str, f['patch_shape_zyx']))}). "
        "Each block in a fresh process with only the OpenMP variables named; `shared`: as many busy "
        "processes (Python loops) as cores beside it. "
        f"Seconds per step, median (lowest - highest) of {f['rounds']} round(s) x "
        + ", ".join(f"{n} {s}" for n, s in f["steps"].items())
        + f" steps, every condition in turn per round (load average {load[0]} before, {load[1]} after); "
        "in brackets after each median its ratio to the row's fastest wait.", "",
        "| cores | network | " + " | ".join(waits) + " |", "|---|---|" + "---|" * len(waits)]
    cells = {(r["state"], r["network"], r["wait"]): r["seconds"] for r in f["rows"]}
    for state in STATES:
        for network in f["steps"]:
            row = [cells[(state, network, w)] for w in waits]
            best = min(s["median"] for s in row)
            lines.append(f"| {state} | {network} | " + " | ".join(
                f"{spread_cell(s)} [{s['median'] / best:.2f}x]" for s in row) + " |")
    worst = f["worst_ratio"]
    lines += ["", "Worst ratio to the fastest wait over the rows: " + ", ".join(
        f"{w} {worst[w]:.2f}x" for w in waits) + f". Smallest: {min(worst, key=worst.get)}; the commands set "
        + (f"{commands} (`cli.OPENMP_ENV`)." if commands else f"{OPENMP_ENV}, not among these waits.")]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.omp_wait")
    parser.add_argument("--child", required=True, help=argparse.SUPPRESS)   # one timed block
    args = parser.parse_args(argv)
    print(json.dumps(step_seconds(json.loads(args.child))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
