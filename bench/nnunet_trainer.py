"""nnU-Net v2's default trainer with a small iteration budget, run in a process of its own.

    nnUNet_raw=... nnUNet_preprocessed=... nnUNet_results=... \\
        python -m bench.nnunet_trainer DATASET_ID --epochs E --iterations N --json OUT.json

Used by bench/nnunet_compare.py. `nnUNetTrainerBench` changes nothing of nnU-Net's
`nnUNetTrainer` but its budget: `--epochs` epochs of `--iterations` training iterations, one
validation iteration per epoch (nnU-Net's pseudo-Dice, not needed here), and nnU-Net's
`checkpoint_latest.pth` after every epoch: a run that was stopped (a 1,000-iteration run takes
an hour or two on 2 CPU cores) resumes from it when started again, as `nnUNetv2_train --c`
would (a latest checkpoint that does not load is set aside and the run starts over; the JSON's
`resumed_at_epoch` says where it resumed, and its timings cover this process's epochs only;
nnunet_compare's budget comes from its calibration, not from these). It is instantiated here
directly (fold `all`, configuration `3d_fullres`, the default plans) and `run_training()` is
called, so nothing is copied into nnU-Net's package folder; nnU-Net's final validation
(`perform_actual_validation`) is not run. Afterwards the final checkpoint's `trainer_name` is
set to `nnUNetTrainer` (the network is built by that class's own `build_network_architecture`,
which the subclass does not change), so nnU-Net's predictor, which looks trainers up by name
inside its package, loads it.

nnU-Net reads nnUNet_raw / nnUNet_preprocessed / nnUNet_results when its modules are first
imported: that is why it runs as a process of its own, with the environment set by the caller.
The JSON written holds the training time per epoch (the training iterations only), the
seconds per iteration (first epoch left out: warm-up), the wall time, the peak RSS of this
process, and nnU-Net's patch and batch size.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import sys
import time
from pathlib import Path

TRAINER_NAME = "nnUNetTrainerBench"


def make_trainer_class(epochs: int, iterations: int, val_iterations: int = 1):
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    class nnUNetTrainerBench(nnUNetTrainer):  # noqa: N801 (nnU-Net's naming)
        def __init__(self, plans: dict, configuration: str, fold, dataset_json: dict,
                     device: torch.device = torch.device("cuda")):  # noqa: B008 (nnU-Net's signature)
            super().__init__(plans, configuration, fold, dataset_json, device)
            self.num_epochs = epochs
            self.num_iterations_per_epoch = iterations
            self.num_val_iterations_per_epoch = val_iterations
            self.save_every = 1              # checkpoint_latest after every epoch: a stopped run resumes
            self.epoch_train_seconds: list[float] = []
            self._t_epoch = 0.0

        def on_train_epoch_start(self):
            super().on_train_epoch_start()
            self._t_epoch = time.perf_counter()

        def on_train_epoch_end(self, train_outputs):
            self.epoch_train_seconds.append(time.perf_counter() - self._t_epoch)
            super().on_train_epoch_end(train_outputs)

    nnUNetTrainerBench.__name__ = nnUNetTrainerBench.__qualname__ = TRAINER_NAME
    return nnUNetTrainerBench


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.nnunet_trainer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset_id", type=int)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--iterations", type=int, required=True, help="training iterations per epoch")
    parser.add_argument("--val-iterations", type=int, default=1)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--json", required=True, help="where to write the timings")
    args = parser.parse_args(argv)

    import torch
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    if args.device == "cpu":  # what nnUNetv2_train -device cpu does
        torch.set_num_threads(multiprocessing.cpu_count())
    name = maybe_convert_to_dataset_name(args.dataset_id)
    folder = Path(nnUNet_preprocessed) / name
    plans = load_json(str(folder / "nnUNetPlans.json"))
    dataset_json = load_json(str(folder / "dataset.json"))
    trainer_class = make_trainer_class(args.epochs, args.iterations, args.val_iterations)
    trainer = trainer_class(plans, "3d_fullres", "all", dataset_json, device=torch.device(args.device))
    latest = Path(trainer.output_folder) / "checkpoint_latest.pth"
    resumed_at = 0
    if latest.is_file():
        try:
            trainer.load_checkpoint(str(latest))
            resumed_at = trainer.current_epoch
            print(f"resuming {latest} at epoch {resumed_at}", flush=True)
        except Exception as exc:  # noqa: BLE001 (a damaged file: torch and pickle raise many types)
            print(f"{latest} does not load ({type(exc).__name__}: {exc}); starting over", flush=True)
            latest.rename(latest.with_name(latest.name + ".damaged"))
            trainer = trainer_class(plans, "3d_fullres", "all", dataset_json,
                                    device=torch.device(args.device))
    t0 = time.perf_counter()
    trainer.run_training()
    wall = time.perf_counter() - t0

    final = Path(trainer.output_folder) / "checkpoint_final.pth"
    # nnU-Net's own format holds non-tensor objects; this is the file it wrote just above
    ckpt = torch.load(final, map_location="cpu", weights_only=False)  # unsafe-load-ok: written by this run
    ckpt["trainer_name"] = "nnUNetTrainer"
    torch.save(ckpt, final)

    per_epoch = trainer.epoch_train_seconds
    steady = per_epoch[1:] or per_epoch
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    config = trainer.configuration_manager
    result = {
        "trainer": TRAINER_NAME, "epochs": args.epochs, "iterations_per_epoch": args.iterations,
        "resumed_at_epoch": resumed_at,
        "val_iterations_per_epoch": args.val_iterations, "epoch_train_seconds": per_epoch,
        "seconds_per_iteration": sum(steady) / (len(steady) * args.iterations),
        "train_seconds": sum(per_epoch), "wall_seconds": wall,
        "peak_rss_bytes": int(rss if sys.platform == "darwin" else rss * 1024),
        "patch_size_zyx": list(config.patch_size), "batch_size": int(config.batch_size),
        "initial_lr": trainer.initial_lr, "torch_threads": torch.get_num_threads(),
        "parameters": sum(int(v.numel()) for v in ckpt["network_weights"].values()
                          if torch.is_floating_point(v)),
        "model_dir": str(trainer.output_folder_base), "checkpoint": str(final),
    }
    Path(args.json).write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
