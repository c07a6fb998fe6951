"""Preprocessing memory against the number of cases: flat, or growing with the dataset?

`pfseg_plan_and_preprocess -np 2` runs as a subprocess on 8 and on 40 synthetic cases of
240 x 240 x 155 voxels (the blob generator; the 8 are the first 8 of the 40, hard-linked), each
in a fresh workspace. While it runs, the resident memory of its whole process tree (the command
and every worker it spawns, read from /proc: parent links from /proc/PID/stat, resident pages
from /proc/PID/statm) is summed every 0.1 s; the peak of that sum is the run's figure. The
acceptance: the 40-case peak within 15 % of the 8-case peak (issue 15).

`run(quick=False) -> dict` returns the figures and a 'markdown' section; the module can also be
run as a script (`python -m bench.preprocess_memory`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.demo_data import console

log = logging.getLogger(__name__)

CASE_COUNTS = (8, 40)
SHAPE_XYZ = (240, 240, 155)           # BraTS, as the NIfTI stores it
QUICK_COUNTS, QUICK_SHAPE_XYZ = (2, 6), (64, 64, 48)
WORKERS = 2
SAMPLE_SECONDS = 0.1
STAGES = ("verify", "fingerprint", "plan", "preprocess")
TOLERANCE = 0.15                      # issue 15: the larger run's peak within 15 % of the smaller's
PAGE = os.sysconf("SC_PAGE_SIZE")


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process (from /proc)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # ended meanwhile
    return parents


def tree_rss_bytes(root: int) -> tuple[int, int]:
    """(summed resident bytes, number of processes) of `root` and all its descendants."""
    children: dict[int, list[int]] = {}
    for pid, parent in _parents().items():
        children.setdefault(parent, []).append(pid)
    total, count, todo = 0, 0, [root]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
            count += 1
        except (OSError, ValueError, IndexError):
            continue
    return total, count


def measure(argv: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run `argv`, sampling its process tree's resident memory until it exits."""
    samples: list[tuple[float, int, int]] = []
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(proc.stdout), daemon=True)
    reader.start()
    while proc.poll() is None:
        rss, processes = tree_rss_bytes(proc.pid)
        samples.append((time.perf_counter() - start, rss, processes))
        time.sleep(SAMPLE_SECONDS)
    reader.join(timeout=10)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}):\n{''.join(output)[-3000:]}")
    peak = max(samples, key=lambda s: s[1])
    return {"peak_bytes": peak[1], "peak_at_seconds": round(peak[0], 1), "processes_at_peak": peak[2],
            "max_processes": max(s[2] for s in samples), "samples": len(samples),
            "seconds": round(time.perf_counter() - start, 1), "output_tail": "".join(output)[-600:]}


def _link_cases(source: Path, dest: Path, case_ids: list[str]) -> None:
    """The first cases of a dataset as a dataset of their own (hard links: no second copy)."""
    for case in case_ids:
        (dest / case).mkdir(parents=True)
        for f in (source / case).iterdir():
            os.link(f, dest / case / f.name)


def run(quick: bool = False, counts: tuple[int, ...] | None = None, shape_xyz=None) -> dict:
    from pfseg_pipeline.data.synthetic import write_dataset

    counts = tuple(counts or (QUICK_COUNTS if quick else CASE_COUNTS))
    shape_xyz = tuple(shape_xyz or (QUICK_SHAPE_XYZ if quick else SHAPE_XYZ))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("PFSEG_HOME", None)
    runs: dict[int, dict] = {}
    with tempfile.TemporaryDirectory(prefix="pfseg-prepmem-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        ids = write_dataset(tmp / f"raw{max(counts)}", max(counts), shape_xyz, seed=0, workers=WORKERS,
                            overwrite=True)
        log.info("wrote %d cases of %s in %.0f s", len(ids), "x".join(map(str, shape_xyz)),
                 time.perf_counter() - t0)
        for n in counts:
            raw = tmp / f"raw{n}"
            if not raw.exists():
                _link_cases(tmp / f"raw{max(counts)}", raw, ids[:n])
            argv = [console("pfseg_plan_and_preprocess"), "-i", str(raw), "-d", f"Mem{n}",
                    "--workspace", str(tmp / f"ws{n}"), "-np", str(WORKERS)]
            runs[n] = measure(argv, env)
            summary = json.loads((tmp / f"ws{n}" / "preprocessed" / f"Mem{n}" /
                                  "plan_and_preprocess_summary.json").read_text())
            runs[n]["stages"] = summary["seconds"]
            runs[n]["workers"] = summary["workers"]
            log.info("%d cases: peak %.2f GiB over %d processes (%.0f s)", n, runs[n]["peak_bytes"] / 2**30,
                     runs[n]["processes_at_peak"], runs[n]["seconds"])
    small, large = min(counts), max(counts)
    ratio = runs[large]["peak_bytes"] / runs[small]["peak_bytes"]
    figures = {"counts": list(counts), "shape_xyz": list(shape_xyz), "workers": WORKERS, "runs": runs,
               "ratio": ratio, "within_tolerance": ratio <= 1 + TOLERANCE,
               "load_average_1min": os.getloadavg()[0]}
    figures["markdown"] = _markdown(figures)
    figures["title"] = "Preprocessing memory against the number of cases"
    return figures


def _markdown(f: dict) -> str:
    x = "x".join(map(str, f["shape_xyz"]))
    lines = [f"`pfseg_plan_and_preprocess -np {f['workers']}` (default preset) on synthetic cases of {x} "
             "voxels (x y z, 4 modalities + label; blob generator), each count in a fresh workspace. Peak = "
             f"the largest sum of resident memory over the command's whole process tree (the command and its "
             f"workers, from /proc), sampled every {SAMPLE_SECONDS:g} s.", "",
             "| cases | peak, whole tree (GiB) | processes at the peak | peak at (s) | run (s) | "
             "verify / fingerprint / plan / preprocess (s) |", "|---:|---:|---:|---:|---:|---|"]
    for n in f["counts"]:
        r = f["runs"][n]
        stages = " / ".join(f"{r['stages'].get(k, 0):.0f}" for k in STAGES)
        lines.append(f"| {n} | {r['peak_bytes'] / 2**30:.2f} | {r['processes_at_peak']} | "
                     f"{r['peak_at_seconds']} | {r['seconds']} | {stages} |")
    small, large = min(f["counts"]), max(f["counts"])
    verdict = "met" if f["within_tolerance"] else "NOT met"
    lines += ["", f"Peak with {large} cases / peak with {small} cases: **{f['ratio']:.3f}** (target: within "
              f"{TOLERANCE:.0%}: {verdict}). Load average (1 min) at the end: {f['load_average_1min']:.1f}."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.preprocess_memory", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--counts", type=int, nargs="+", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    figures = run(args.quick, tuple(args.counts) if args.counts else None)
    print(figures["markdown"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
