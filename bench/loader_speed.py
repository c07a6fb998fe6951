"""Data loader speed: training batches per second vs training steps per second, one run.

    python -m bench.loader_speed [--quick] [--workers N]

The demo's data (synthetic BraTS-like cases, 64 x 64 x 48 voxels x y z, planned and
preprocessed with `--preset demo`) goes through the real training loader
(`training.data_loader.build_training_batches`: read the cached case, place it in the HR volume
or cut a patch, spatial + intensity augmentation, region targets, LR input and guidance patch
derived from the augmented HR volume) in the training process (0 workers) and with N background
processes (batchgenerators' multi-threaded augmenter; default 1 and 2). On the same plan the real
trainer (`training.trainer.Trainer`, its epoch loop) trains PFSeg and ResUNet3D: on one fixed
batch (the step alone), and fed by the N-process loader (the median iteration of each). The
loader keeps up when its batches/s exceed the steps/s; the fed columns show what feeding the
real loader costs the step rate (on a CPU the workers and the step compete for the same cores).
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


def _interleaved_step_seconds(trainers: dict, n: int) -> dict[str, list[float]]:
    """Seconds of `n` iterations of each trainer's epoch loop (next batch + step), taken in turns
    (A, B, C, A, B, C, ...) so that other load on the machine hits every condition alike; one
    warm-up iteration each first."""
    seconds: dict[str, list[float]] = {k: [] for k in trainers}
    for i in range(n + 1):
        for key, trainer in trainers.items():
            t0 = time.perf_counter()
            trainer._train_epoch(0)     # one iteration: next(batches), the step
            if i:
                seconds[key].append(time.perf_counter() - t0)
    return seconds


def run(quick: bool = False, workers: tuple[int, ...] = (1, 2), n_cases: int | None = None,
        shape_xyz=None) -> dict:
    import statistics

    import torch

    from bench.demo_data import demo_workspace
    from pfseg_pipeline.networks.registry import network_spec
    from pfseg_pipeline.training.data_loader import build_training_batches
    from pfseg_pipeline.training.transforms import TrainingInputs

    n_cases = n_cases or (6 if quick else 12)
    shape_xyz = tuple(shape_xyz or ((48, 48, 32) if quick else (64, 64, 48)))
    n_batches, n_steps = (6, 3) if quick else (16, 8)
    worker_counts = (0, *workers)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="pfseg-loader-") as tmp:
        tmp = Path(tmp)
        ws, plans, info = demo_workspace(tmp, n_cases, shape_xyz)
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
            stream = stream_of(name, 0)
            fixed = next(stream)
            stream.close()
            streams = {f"fed_{w}": stream_of(name, w) for w in workers}
            trainers = {"alone": _trainer(name, plans, _Repeat(fixed), tmp / f"{name}_alone")}
            trainers.update({k: _trainer(name, plans, st, tmp / f"{name}_{k}") for k, st in streams.items()})
            try:
                runs = _interleaved_step_seconds(trainers, n_steps)
            finally:
                for st in streams.values():
                    st.close()
            steps[name] = {k: {"steps_per_s": 1 / statistics.median(v), "seconds": v}
                           for k, v in runs.items()}
            log.info("%s steps/s: %s", name,
                     ", ".join(f"{k} {v['steps_per_s']:.3f}" for k, v in steps[name].items()))
        load_after = os.getloadavg()
    figures = {"title": "Data loader: batches/s vs training steps/s",
               "cases": n_cases, "shape_xyz": list(shape_xyz), "hr_shape_zyx": plans.hr_shape_zyx,
               "patch_shape_zyx": plans.patch_based.patch_shape_zyx, "widths": plans.network.widths,
               "batch_size": {k: network_spec(k).batch_size(plans) for k in kinds}, "workers": list(workers),
               "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
               "loader_batches_per_s": {f"{k[0]}, {k[1]} workers": v for k, v in loader.items()},
               "steps": steps, "load_average_1min": [round(load_before[0], 2), round(load_after[0], 2)]}
    figures["markdown"] = _markdown(figures, loader, steps, workers)
    return figures


def _markdown(f: dict, loader: dict, steps: dict, workers: tuple[int, ...]) -> str:
    x = "x".join
    lines = [f"{f['cases']} synthetic cases of {' x '.join(map(str, f['shape_xyz']))} voxels (x y z), 4 "
             f"modalities, `--preset demo` plan: HR {x(map(str, f['hr_shape_zyx']))} (z y x), baseline patch "
             f"{x(map(str, f['patch_shape_zyx']))}, widths {'-'.join(map(str, f['widths']))}, batch "
             f"{f['batch_size']['pfseg']}; the real loader (batchgenerators' multi-threaded augmenter for "
             f"N > 0 processes) and the real trainer's loop (fp32), {f['cpus']} CPU(s), {f['torch_threads']} "
             f"torch threads. Loader: the best of 2 rounds; steps: the median iteration, the conditions "
             f"taken in turns (load average {f['load_average_1min'][0]} before, {f['load_average_1min'][1]} "
             "after: other work on the machine slows every column alike).", "",
             "| network | " + " | ".join(f"loader batches/s, {w} worker(s)" for w in (0, *workers))
             + " | steps/s, fixed batch | " + " | ".join(f"steps/s fed by {w} worker(s)" for w in workers)
             + " |",
             "|---|" + "---:|" * (2 + 2 * len(workers))]
    for name, s in steps.items():
        cells = [f"{loader[(name, w)]:.2f}" for w in (0, *workers)] + [f"{s['alone']['steps_per_s']:.3f}"]
        cells += [f"{s[f'fed_{w}']['steps_per_s']:.3f}" for w in workers]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    pf = steps["pfseg"]
    alone = pf["alone"]["steps_per_s"]
    text = "; ".join(f"{w} worker(s): loader {loader[('pfseg', w)] / alone:.1f}x the step rate, fed step "
                     f"rate {pf[f'fed_{w}']['steps_per_s'] / alone:.2f} of the fixed-batch rate"
                     for w in workers)
    lines += ["", f"PFSeg: {text}. The loader keeps up when its batches/s exceed the steps/s; on a CPU the "
              "workers also take cores from the step, which the fed rates show."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loader_speed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="6 cases of 48 x 48 x 32")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="background process counts to compare with 0 (default 1 2)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    figures = run(quick=args.quick, workers=tuple(args.workers))
    print(json.dumps({k: v for k, v in figures.items() if k != "markdown"}, indent=2, default=str))
    print(figures["markdown"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
