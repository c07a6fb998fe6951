"""Data loader speed, and how a CPU training shares its cores: one run, side by side.

    python -m bench.loader_speed [--quick] [--workers N ...] [--blobs]

The demo's data (MNI152 anatomy cases at 4 mm; `--blobs`: the synthetic blobs of 64 x 64 x 48
voxels) planned and preprocessed with `--preset demo` goes through the real training loader
(`training.data_loader.build_training_batches`: read the cached case, place it in the HR volume
or cut a patch, spatial + intensity augmentation, region targets, LR input and guidance patch
derived from the augmented HR volume) in the training process (0 workers) and with N background
processes (batchgenerators' multi-threaded augmenter; default 1 and 2): batches per second.

Then the real trainer (`training.trainer.Trainer`, its epoch loop) trains PFSeg and ResUNet3D
fed by that loader, for each split of the cores into torch threads + loader workers: `before`
(torch's default, a thread per core, plus the old default of cores - 1 workers), `after` (what
`training.cpu_threads.cpu_split` now gives) and the other splits; beside them the step alone on
one repeated batch. On a CPU the workers and the step compete for the same cores: the split
that feeds the step fastest is the default.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)


class _Repeat:
    """A batch stream that yields one fixed batch: the step rate without any loading."""

    def __init__(self, batch):
        self.batch = batch

    def set_epoch(self, epoch):
        pass

    def __next__(self):
        return self.batch

    def close(self, force=False):
        pass


def _batches_per_second(stream, n: int, warmup: int, rounds: int = 2) -> float:
    """Batches/s over `n` batches, the best of `rounds` (other load on the machine only slows)."""
    for _ in range(warmup):
        next(stream)
    best = 0.0
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(n):
            next(stream)
        best = max(best, n / (time.perf_counter() - t0))
    return best


def _trainer(network_name, plans, stream, out_dir: Path, seed: int = 0):
    """The real trainer (fp32 on the CPU) for one-iteration epochs fed by `stream`."""
    import torch

    from pfseg_pipeline.networks.registry import build_network, network_spec
    from pfseg_pipeline.networks.step import make_optimizer
    from pfseg_pipeline.training.schedules import PolyDecay
    from pfseg_pipeline.training.trainer import Trainer, TrainOptions

    torch.manual_seed(seed)
    network = build_network(network_name, plans)
    optimizer = make_optimizer(network.parameters(), plans.training)
    loss = network_spec(network_name).make_loss(plans, "full")
    return Trainer(network, loss, stream, None, optimizer, PolyDecay(optimizer, 1, 0.9),
                   torch.device("cpu"), out_dir, plans,
                   TrainOptions(epochs=1, iterations_per_epoch=1, grad_clip=plans.training.grad_clip,
                                progress_bar=False, plot=False),
                   {"network": network_name})


def _fed_step_child(spec: dict) -> list[float]:
    """In a fresh process (its OpenMP wait policy fixed at start): seconds per fed iteration of
    the real trainer with `threads` torch threads and `workers` loader processes (-1: one fixed
    batch, no loading), after `warmup` iterations."""
    import torch

    from pfseg_pipeline.networks.registry import network_spec
    from pfseg_pipeline.paths import Workspace
    from pfseg_pipeline.plans import load_plans
    from pfseg_pipeline.training.data_loader import build_training_batches
    from pfseg_pipeline.training.transforms import TrainingInputs

    torch.set_num_threads(spec["threads"])
    ws = Workspace(Path(spec["workspace"]))
    plans = load_plans(ws.plans_file(spec["name"]))
    network = spec["network"]
    stream = build_training_batches(plans, ws.cases_dir(spec["name"]), spec["case_ids"],
                                    TrainingInputs.for_network(network),
                                    network_spec(network).batch_size(plans), max(0, spec["workers"]), seed=0)
    stream.set_epoch(0)
    if spec["workers"] < 0:
        fixed = next(stream)
        stream.close()
        stream = _Repeat(fixed)
    trainer = _trainer(network, plans, stream, Path(spec["out"]))
    seconds = []
    try:
        for i in range(spec["n"] + spec["warmup"]):
            t0 = time.perf_counter()
            trainer._train_epoch(0)     # one iteration: next(batches), the step
            if i >= spec["warmup"]:
                seconds.append(time.perf_counter() - t0)
    finally:
        stream.close()
    return seconds


def _fed_step_seconds(spec: dict, conditions: dict, rounds: int) -> dict[str, list[float]]:
    """Seconds per fed iteration of each condition (threads, workers, OpenMP wait policy), each
    block in its own process (the wait policy is read once, when OpenMP starts) with only its own
    workers alive; per round every condition in turn, so slow spells of the shared machine are
    spread over all of them."""
    import subprocess
    import sys

    from pfseg_pipeline.cli import OPENMP_ENV

    seconds: dict[str, list[float]] = {k: [] for k in conditions}
    for _ in range(rounds):
        for key, (threads, workers, policy) in conditions.items():
            env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", *OPENMP_ENV)}
            if policy:   # "commands": the commands' OpenMP environment (cli.OPENMP_ENV)
                env.update(OPENMP_ENV)
            child = json.dumps({**spec, "threads": threads, "workers": workers})
            out = subprocess.run([sys.executable, "-m", "bench.loader_speed", "--child", child], env=env,
                                 capture_output=True, text=True, check=True,
                                 cwd=Path(__file__).resolve().parent.parent)
            seconds[key] += json.loads(out.stdout.strip().splitlines()[-1])
    return seconds


def split_conditions(cores: int) -> dict[str, tuple[int, int, str | None]]:
    """(torch threads, loader workers, OpenMP wait) to compare: before (torch's default
    threads, the old default of cores - 1 workers, OpenMP's default spin-then-sleep wait), after
    (`training.cpu_threads.cpu_split` with the commands' wait, `cli.OPENMP_ENV`: "commands"),
    and the other splits with each wait; `fixed batch` (workers -1): the step alone, no loading."""
    from pfseg_pipeline.training.cpu_threads import cpu_split

    after = cpu_split("cpu", cores=cores)
    out = {"before": (cores, max(1, cores - 1), None), "after": (after.threads, after.workers, "commands")}
    for workers in (0, 1):
        for policy in (None, "commands"):
            split = (max(1, cores - workers), workers, policy)
            if split not in out.values():
                out[f"{split[0]} thr + {workers} wkr, {(policy or 'default').lower()} wait"] = split
    out["fixed batch"] = (cores, -1, "commands")
    return out


def run(quick: bool = False, workers: tuple[int, ...] = (1, 2), n_cases: int | None = None,
        shape_xyz=None, anatomy: str = "mni152", spacing_mm: int = 4) -> dict:
    import statistics

    from bench.demo_data import demo_workspace
    from pfseg_pipeline.networks.registry import network_spec
    from pfseg_pipeline.training.cpu_threads import available_cores
    from pfseg_pipeline.training.data_loader import build_training_batches
    from pfseg_pipeline.training.transforms import TrainingInputs

    n_cases = n_cases or (6 if quick else 12)
    shape_xyz = tuple(shape_xyz or ((48, 48, 32) if quick else (64, 64, 48)))
    n_batches, n_steps, rounds = (6, 2, 1) if quick else (16, 6, 3)
    worker_counts = (0, *workers)
    cores = available_cores()
    conditions = split_conditions(cores)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="pfseg-loader-") as tmp:
        tmp = Path(tmp)
        ws, plans, info = demo_workspace(tmp, n_cases, shape_xyz, anatomy=anatomy, spacing_mm=spacing_mm)
        cases_dir = ws.cases_dir(info["name"])
        ids = list(info["case_ids"])
        kinds = ("pfseg", "resunet3d")

        def stream_of(name, w):
            spec = network_spec(name)
            stream = build_training_batches(plans, cases_dir, ids, TrainingInputs.for_network(name),
                                            spec.batch_size(plans), w, seed=0)
            stream.set_epoch(0)
            return stream

        loader = {}
        for name in kinds:
            for w in worker_counts:
                stream = stream_of(name, w)
                try:
                    loader[(name, w)] = _batches_per_second(stream, n_batches, warmup=max(2, w))
                finally:
                    stream.close()
                log.info("loader %s, %d workers: %.2f batches/s", name, w, loader[(name, w)])
        steps = {}
        for name in kinds:
            spec = {"workspace": str(ws.root), "name": info["name"], "case_ids": ids, "network": name,
                    "n": n_steps, "warmup": 2, "out": str(tmp / name)}
            runs = _fed_step_seconds(spec, conditions, rounds)
            steps[name] = {k: {"steps_per_s": 1 / statistics.median(v), "seconds": v}
                           for k, v in runs.items()}
            log.info("%s steps/s: %s", name,
                     ", ".join(f"{k} {v['steps_per_s']:.3f}" for k, v in steps[name].items()))
        load_after = os.getloadavg()
    data = (f"{n_cases} MNI152 anatomy cases at {spacing_mm} mm" if anatomy != "blobs" else
            f"{n_cases} synthetic blob cases of {' x '.join(map(str, shape_xyz))} voxels (x y z)")
    figures = {"title": "Data loader: batches/s vs training steps/s, and the CPU split of a training",
               "data": data, "cases": n_cases, "hr_shape_zyx": plans.hr_shape_zyx,
               "patch_shape_zyx": plans.patch_based.patch_shape_zyx, "widths": plans.network.widths,
               "batch_size": {k: network_spec(k).batch_size(plans) for k in kinds}, "workers": list(workers),
               "cores": cores, "conditions": {k: list(v) for k, v in conditions.items()},
               "loader_batches_per_s": {f"{k[0]}, {k[1]} workers": v for k, v in loader.items()},
               "steps": steps, "rounds": rounds, "iterations_per_block": n_steps,
               "load_average_1min": [round(load_before[0], 2), round(load_after[0], 2)]}
    figures["markdown"] = _markdown(figures, loader, steps, workers)
    return figures


def _markdown(f: dict, loader: dict, steps: dict, workers: tuple[int, ...]) -> str:
    x = "x".join
    cond = f["conditions"]
    load = f["load_average_1min"]

    def label(key: str) -> str:
        threads, n, policy = cond[key]
        what = "no loading" if n < 0 else f"{n} wkr"
        detail = f"{threads} thr + {what}, {(policy or 'default').lower()} wait"
        return detail if key == detail else f"{key} ({detail})"

    lines = [
        f"{f['data']}, 4 modalities, `--preset demo` plan: HR {x(map(str, f['hr_shape_zyx']))} (z y x), "
        f"baseline patch {x(map(str, f['patch_shape_zyx']))}, widths {'-'.join(map(str, f['widths']))}, "
        f"batch {f['batch_size']['pfseg']}; the real loader (batchgenerators' multi-threaded augmenter for "
        f"N > 0 processes) and the real trainer's loop (fp32) on {f['cores']} core(s). Loader batches/s "
        "(the best of 2 rounds):", "",
        "| network | " + " | ".join(f"{w} worker(s)" for w in (0, *workers)) + " |",
        "|---|" + "---:|" * (1 + len(workers))]
    for name in steps:
        lines.append(f"| {name} | " + " | ".join(f"{loader[(name, w)]:.2f}" for w in (0, *workers)) + " |")
    lines += [
        "", f"Training steps/s fed by the loader, per split of the {f['cores']} cores into torch threads + "
        "loader workers and per OpenMP wait (`default`: OpenMP's, spin long, then sleep; `commands`: what "
        "the commands set, `cli.OPENMP_ENV`, a short spin, then sleep; bench omp_wait): the median of "
        f"{f['rounds']} round(s) x {f['iterations_per_block']} iterations, each block in its own process "
        "with only its own workers alive, the conditions in turns (load average "
        f"{load[0]} before, {load[1]} after: the machine is shared; other work slows every column). "
        "`before`: torch's default threads and the old default workers; `after`: "
        "`training.cpu_threads.cpu_split` and the commands' wait; `fixed batch`: the step alone on one "
        "repeated batch.", "",
        "| condition | " + " | ".join(steps) + " |", "|---|" + "---:|" * len(steps)]
    for key in cond:
        lines.append(f"| {label(key)} | " + " | ".join(f"{steps[n][key]['steps_per_s']:.3f}" for n in steps)
                     + " |")
    ratios = ", ".join(f"{n} {s['after']['steps_per_s'] / s['before']['steps_per_s']:.2f}x"
                       for n, s in steps.items())
    pf = steps["pfseg"]
    fixed = pf["fixed batch"]["steps_per_s"]
    lines += ["", f"After / before, fed steps/s: {ratios}. PFSeg's fed step rate: before "
              f"{pf['before']['steps_per_s'] / fixed:.2f} of the fixed-batch rate, after "
              f"{pf['after']['steps_per_s'] / fixed:.2f}."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loader_speed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="6 cases, one round")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="background process counts to compare with 0 (default 1 2)")
    parser.add_argument("--blobs", action="store_true", help="the blob cases instead of the anatomy ones")
    parser.add_argument("--child", help=argparse.SUPPRESS)   # one timed block, in its own process
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_fed_step_child(json.loads(args.child))))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    figures = run(quick=args.quick, workers=tuple(args.workers), anatomy="blobs" if args.blobs else "mni152")
    print(json.dumps({k: v for k, v in figures.items() if k != "markdown"}, indent=2, default=str))
    print(figures["markdown"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
