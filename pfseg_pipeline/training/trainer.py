"""The training loop. It gets its parts passed in (network, loss, batches, validation, optimiser,
scheduler) and only runs them: `training.recipe.build_training` builds them from the plans.

Per epoch: `iterations_per_epoch` steps (`networks.step.train_step`: mixed precision on CUDA
only, gradient clipping; a per-iteration schedule sets the rate before each), then the Dice per
region of two kinds of held-out cases, each a callable (`training.validation.ValidationCases`):

- `validation`: the cases the fold REPORTS (its validation cases), scored every
  `validation_interval` epochs and after the last. Their Dice is logged
  (`val_dice_*`, the progress curve) and steers nothing, with one explicit exception: with
  `use_best` and no monitor cases, checkpoint_best.pt is chosen on them (labelled so).
- `monitor`: cases carved from the fold's training cases (`plans.training.monitor_fraction`),
  never trained on. Their Dice (`monitor_dice_*`) is the only metric that steers training:
  the plateau schedule, early stopping and checkpoint_best.pt.

Then an epoch-wise scheduler step, a row of metrics.csv and checkpoint_latest.pt; progress.png
is redrawn at most every `PLOT_EVERY_SECONDS` (drawing it costs ~0.2 s, a fifth of a short
epoch) and always when the run ends or stops. At the end: checkpoint_final.pt and
train_summary.json.

The validation comes in as a callable so that importing this module pulls in neither the data
loader (batchgenerators) nor the readers and metrics (nibabel, SimpleITK, MedPy): a machine with
torch and numpy only can import and run the trainer.

Resuming (`resume`) restores model, optimiser, scheduler, scaler, epoch, history and every
random generator, and the loader reseeds its workers from (seed, epoch, rank, worker): a run
resumed from an epoch boundary writes the same metrics.csv rows as an uninterrupted one.

SIGINT/SIGTERM set a flag; at the next iteration boundary checkpoint_latest.pt is saved with the
weights of that moment and `epoch` = the epochs completed, so resuming restarts the interrupted
epoch from its beginning (from those weights: exact reproduction holds for epoch-boundary
checkpoints only). A second signal stops at once without saving (`training.interrupts`): the
last complete checkpoint stays as it was. `fit` then returns the signal number; the command
exits 128 + it (130, 143).

checkpoint_latest.pt holds the optimiser state and keeps one generation back while training
runs (`checkpoints.save_checkpoint(keep_previous=True)`); checkpoint_final.pt and
checkpoint_best.pt hold what prediction needs (`checkpoints.for_prediction`).
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from tqdm import tqdm

from pfseg_pipeline.checkpoints import (
    checkpoint_path,
    for_prediction,
    load_weights,
    previous_path,
    read_checkpoint,
    save_checkpoint,
)
from pfseg_pipeline.devices import compute_words
from pfseg_pipeline.errors import UserError
from pfseg_pipeline.fileio import write_json
from pfseg_pipeline.networks.registry import count_parameters, inference_parameter_count
from pfseg_pipeline.networks.step import step_memory_format, to_memory_format, train_step
from pfseg_pipeline.plans import Plans
from pfseg_pipeline.training import distributed as ddp
from pfseg_pipeline.training.interrupts import StopNow, stop_signals
from pfseg_pipeline.training.records import (
    TIMING_SUFFIX,
    headline_memory,
    peak_memory,
    plot_progress,
    seconds_per_iteration,
    write_metrics_csv,
)
from pfseg_pipeline.training.rng import rng_state, set_rng_state

log = logging.getLogger(__name__)


@dataclass
class TrainOptions:
    epochs: int
    iterations_per_epoch: int
    grad_clip: float | None           # max gradient norm (plans.json training.grad_clip); None: none
    amp: bool = True                  # used on CUDA only
    use_best: bool = False            # report the best checkpoint (monitor cases, else explicitly validation)
    progress_bar: bool = True
    plot: bool = True
    early_stopping_patience: int = 0  # epochs without a better monitor Dice before stopping; 0: never
    validation_interval: int = 1      # the reported validation cases every this many epochs and the last


PLOT_EVERY_SECONDS = 30.0

# what train_summary.json says chose checkpoint_best.pt
_SELECTION_LABELS = {
    "monitor": "monitor cases (carved from the fold's training cases, not trained on)",
    "validation": "the fold's reported validation cases (--use-best, an explicit choice)",
    None: None,
}


class Validation(Protocol):
    """What the trainer calls after each epoch: the mean Dice per region of some held-out cases."""

    regions: Sequence[str]

    def __call__(self, network: torch.nn.Module, device: torch.device, amp: bool) -> list[float]:
        ...


class Trainer:
    """Runs a training of `network` to `options.epochs` (`fit`), writing into `output_dir`.

    Parameters
    ----------
    network, loss : the network and its loss (`compute(outputs, batch) -> (total, terms)`).
    train_batches : an endless batch iterator with `set_epoch(epoch)` and `close(force=False)`
        (`force`: stop the workers without draining their queues, after a second stop signal).
    validation : the Dice of the fold's reported cases (logged only; every
        `options.validation_interval` epochs and after the last), or None.
    optimizer, scheduler : built from the plans (`training.recipe`).
    device, plans, options, run_info : where it runs, the plans (stored in checkpoints), the loop's
        options and what train_summary.json records about the run (`network`, its options, ...).
    dist : the process group under torchrun (default: one process).
    monitor : the per-epoch Dice of the monitor cases (steers plateau, early stop, best), or None.
    """

    def __init__(self, network: torch.nn.Module, loss, train_batches, validation: Validation | None,
                 optimizer: torch.optim.Optimizer, scheduler, device: torch.device, output_dir: Path,
                 plans: Plans, options: TrainOptions, run_info: dict, dist: ddp.DistContext | None = None,
                 monitor: Validation | None = None):
        # channels-last on a CPU (`step_memory_format`), set before DDP records the gradients' layout
        self.memory_format = step_memory_format(device)
        self.network = network.to(device, memory_format=self.memory_format)
        self.dist = dist or ddp.DistContext()
        self.model = ddp.wrap_model(self.network, self.dist, device)
        self.loss, self.train_batches = loss, train_batches
        self.validation, self.monitor = validation, monitor
        self.optimizer, self.scheduler, self.device = optimizer, scheduler, device
        self.output_dir, self.plans, self.options, self.run_info = Path(output_dir), plans, options, run_info
        self.amp = options.amp and device.type == "cuda"
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp)
        self.start_epoch, self.history = 0, []
        self.best: dict = {"dice": None, "epoch": None, "on": self._selection_cases()}
        self.stopped_early: int | None = None   # the epoch after which early stopping ended the run
        self._stop: int | None = None
        self.saved_epoch: int | None = None   # epochs held by the last complete checkpoint_latest.pt
        self._rotate = False  # latest on disk is this run's (or the one resumed): keep it as .prev
        self._plotted: tuple[int, float] | None = None  # (history rows drawn, when) in progress.png

    def _selection_cases(self) -> str | None:
        """Which cases choose checkpoint_best.pt: the monitor cases; the reported validation cases
        only when `use_best` asks for it explicitly and there are no monitor cases; else none."""
        if self.monitor is not None:
            return "monitor"
        if self.options.use_best and self.validation is not None:
            return "validation"
        return None

    # ---- checkpoints ----------------------------------------------------------------------------
    def _state(self, epochs_done: int, interrupted: dict | None = None) -> dict:
        state = {"network": self.run_info["network"],
                 "network_options": self.run_info.get("network_options", {}),
                 "model": self.network.state_dict(), "plans": self.plans.to_json(), "epoch": epochs_done,
                 "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "scaler": self.scaler.state_dict(), "rng": rng_state(), "history": self.history,
                 "best": dict(self.best), "stopped_early": self.stopped_early, "run_info": self.run_info}
        if interrupted:
            state["interrupted"] = interrupted
        return state

    def save(self, which: str, epochs_done: int, interrupted: dict | None = None) -> None:
        latest = which == "latest"
        if self.dist.is_main:
            state = self._state(epochs_done, interrupted)
            if not latest:
                state = for_prediction(state)  # final and best: what prediction needs
            save_checkpoint(checkpoint_path(self.output_dir, which), state,
                            keep_previous=latest and self._rotate)
        if latest:
            self._rotate, self.saved_epoch = True, epochs_done
        ddp.barrier(self.dist)

    def resume(self, path: Path, ckpt: dict | None = None) -> None:
        """Continue from a checkpoint (`ckpt`: already read from `path`): weights, optimiser,
        scheduler, scaler, epoch, RNG, history."""
        ckpt = ckpt if ckpt is not None else read_checkpoint(path, map_location=self.device)
        if ckpt.get("network") != self.run_info["network"] or \
                ckpt.get("network_options", {}) != self.run_info.get("network_options", {}):
            raise UserError(f"{path}: was trained as {ckpt.get('network')} {ckpt.get('network_options')}, "
                            f"not {self.run_info['network']} {self.run_info.get('network_options')}")
        load_weights(self.network, ckpt["model"], path, "this run's plans")
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        self.start_epoch, self.history = int(ckpt["epoch"]), list(ckpt.get("history", []))
        self.best = {**self.best, **ckpt.get("best", {})}
        self.stopped_early = ckpt.get("stopped_early")
        note = (" (interrupted mid-epoch: that epoch restarts from its beginning)"
                if "interrupted" in ckpt else "")
        self.saved_epoch = self.start_epoch
        self._rotate = Path(path) == checkpoint_path(self.output_dir, "latest")
        log.info("resuming from %s at epoch %d%s", path, self.start_epoch, note)
        then, now = ckpt.get("run_info", {}).get("compute"), self.run_info.get("compute")
        if then and now and then != now and self.dist.is_main:    # one line, not one per rank
            log.warning("%s was trained on %s and continues on %s: the run goes on, but it will not match "
                        "an uninterrupted run bit for bit (other kernels sum in another order)", path,
                        compute_words(then), compute_words(now))

    # ---- the loop -------------------------------------------------------------------------------
    def fit(self) -> int | None:
        """Train to `options.epochs`; returns None when done, or the signal number that stopped it."""
        try:
            with stop_signals(self._request_stop):
                return self._fit()
        except StopNow as stop:
            self.train_batches.close(force=True)  # now: no draining of the workers' queues
            held = (f"checkpoint_latest.pt ({self.saved_epoch} epoch(s) done) is the last complete checkpoint"
                    if self.saved_epoch is not None else "no checkpoint was saved")
            log.warning("stopped at once by a second %s; %s", signal.Signals(stop.signum).name, held)
            return stop.signum
        finally:
            self.train_batches.close()

    def _fit(self) -> int | None:
        for epoch in range(self.start_epoch, self.options.epochs):
            if self.stopped_early is not None:
                break
            start = time.perf_counter()
            losses = self._train_epoch(epoch)
            if losses is None:
                self._plot(force=True)
                return self._stop or signal.SIGTERM
            train_seconds = time.perf_counter() - start
            if epoch + 1 < self.options.epochs:
                self.train_batches.set_epoch(epoch + 1)  # workers prefetch during validation
            self._end_epoch(epoch, losses, train_seconds, start)
            if self.stopped_early is not None:
                log.info("early stop after epoch %d: no better monitor Dice for %d epochs", epoch,
                         self.options.early_stopping_patience)
            if self._stop is not None:
                log.warning("stopped after epoch %d; checkpoint_latest.pt holds it", epoch)
                self._plot(force=True)
                return self._stop
        self._plot(force=True)
        self.save("final", self._epochs_done())
        if self.dist.is_main:
            # finished: the generation kept against a damaged latest is no longer needed
            previous_path(checkpoint_path(self.output_dir, "latest")).unlink(missing_ok=True)
            self._write_summary()
        return None

    def _train_epoch(self, epoch: int) -> dict | None:
        self.train_batches.set_epoch(epoch)
        self.model.train()
        sums: dict[str, torch.Tensor] = {}
        n = self.options.iterations_per_epoch
        per_iteration = getattr(self.scheduler, "per_iteration", False)
        if per_iteration:
            self.scheduler.set_iteration(epoch * n)
        self._epoch_lr = self.optimizer.param_groups[0]["lr"]   # the rate of the epoch's first step
        bar = tqdm(range(n), desc=f"epoch {epoch}", leave=False, dynamic_ncols=True,
                   disable=not (self.options.progress_bar and self.dist.is_main))
        for iteration in bar:
            if ddp.any_rank(self._stop is not None, self.dist):
                self.save("latest", epoch, {"epoch": epoch, "iteration": iteration,
                                            "signal": signal.Signals(self._stop or signal.SIGTERM).name})
                log.warning("stopped at epoch %d iteration %d; checkpoint_latest.pt saved", epoch, iteration)
                return None
            try:
                batch = next(self.train_batches)
            except RuntimeError:
                if self._stop is None:  # a worker killed by the same signal is not an error
                    raise
                continue
            if per_iteration:
                self.scheduler.set_iteration(epoch * n + iteration)
            total, terms = self._step(self._to_device(batch))
            # sums on the device (no host sync per step); a non-finite step (fp16 overflow, which
            # the scaler skips) is left out of the means and counted
            finite = torch.isfinite(total.detach())
            sums["finite_steps"] = sums.get("finite_steps", 0.0) + finite.float()
            for name, value in {"loss": total, **{f"loss_{k}": v for k, v in terms.items()}}.items():
                value = torch.as_tensor(value, device=self.device).detach().float()
                sums[name] = sums.get(name, 0.0) + torch.where(finite, value, torch.zeros_like(value))
        totals = dict(zip(sums, ddp.all_mean(torch.stack(list(sums.values())), self.dist).tolist()))
        steps = totals.pop("finite_steps")
        if steps == 0:
            raise RuntimeError(f"training diverged: every loss of epoch {epoch} was NaN or infinite")
        if steps < n:
            log.warning("epoch %d: %d of %d steps had a non-finite loss", epoch, round(n - steps), n)
        return {name: value / steps for name, value in totals.items()}

    def _to_device(self, batch: dict) -> dict:
        out = {}
        for key, value in batch.items():
            if hasattr(value, "dtype") and not isinstance(value, torch.Tensor):
                value = torch.from_numpy(value)
            if isinstance(value, torch.Tensor):
                out[key] = value.to(self.device, non_blocking=True)
        return to_memory_format(out, self.memory_format)

    def _step(self, batch: dict) -> tuple[torch.Tensor, dict]:
        return train_step(self.model, batch, self.loss, self.optimizer, self.scaler, self.options.grad_clip,
                          self.amp, parameters=self.network.parameters())

    def _dice_columns(self, prefix: str, cases: Validation) -> dict[str, float]:
        """`{prefix}_dice_<region>` and `{prefix}_dice_mean` of `cases` (computed on rank 0)."""
        dice = None
        if self.dist.is_main:
            dice = cases(self.network, self.device, self.amp)
        dice = ddp.broadcast_floats(dice, len(cases.regions), self.dist)
        row = {f"{prefix}_dice_{r}": d for r, d in zip(cases.regions, dice)}
        row[f"{prefix}_dice_mean"] = sum(dice) / len(dice)
        return row

    def _validates(self, epoch: int) -> bool:
        """Whether the reported validation cases are scored after `epoch`: every
        `validation_interval` epochs, counted from the first, and after the last planned one (and
        after an early stop's, `_end_epoch`)."""
        return (epoch + 1) % self.options.validation_interval == 0 or epoch + 1 == self.options.epochs

    def _end_epoch(self, epoch: int, losses: dict, train_seconds: float, start: float) -> None:
        row = {"epoch": epoch, **losses}
        val_start = time.perf_counter()
        if self.validation is not None and self._validates(epoch):
            row.update(self._dice_columns("val", self.validation))      # logged: steers nothing
        if self.monitor is not None:
            row.update(self._dice_columns("monitor", self.monitor))
        row["lr"] = self._epoch_lr
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            if self.monitor is None:
                raise RuntimeError("a plateau schedule needs monitor cases (training.schedules)")
            self.scheduler.step(row["monitor_dice_mean"])
        elif not getattr(self.scheduler, "per_iteration", False):
            self.scheduler.step()
        row.update({f"train{TIMING_SUFFIX}": train_seconds,
                    f"val{TIMING_SUFFIX}": time.perf_counter() - val_start,
                    f"epoch{TIMING_SUFFIX}": time.perf_counter() - start})
        self.history.append(row)
        improved = False
        key = {"monitor": "monitor_dice_mean", "validation": "val_dice_mean"}.get(self.best["on"])
        if key in row:   # the reported cases (--use-best) are compared where they were scored
            improved = self.best["dice"] is None or row[key] > self.best["dice"]
            if improved:
                self.best.update(dice=row[key], epoch=epoch)
        patience = self.options.early_stopping_patience
        if self.monitor is not None and patience and epoch - self.best["epoch"] >= patience:
            self.stopped_early = epoch
            if self.validation is not None and not self._validates(epoch):   # the run's last epoch
                row.update(self._dice_columns("val", self.validation))
        if self.dist.is_main:
            write_metrics_csv(self.output_dir / "metrics.csv", self.history)
        self._plot(force=False)   # every way out of _fit forces the last one
        self.save("latest", epoch + 1)
        if improved:
            self.save("best", epoch + 1)
        log.info("epoch %d/%d: %s, lr %.3g, %.1f s%s", epoch, self.options.epochs - 1,
                 ", ".join(f"{k} {v:.4f}" for k, v in row.items()
                           if k.startswith(("loss", "val_dice", "monitor_dice"))),
                 row["lr"], row[f"epoch{TIMING_SUFFIX}"],
                 f" (new best on the {self.best['on']} cases)" if improved else "")

    def _plot(self, force: bool) -> None:
        """Redraw progress.png when it is `PLOT_EVERY_SECONDS` old, or now with `force`, unless it
        already shows every epoch."""
        if not (self.options.plot and self.dist.is_main):
            return
        rows, when = self._plotted or (0, None)
        if rows == len(self.history):
            return
        now = time.monotonic()
        if force or when is None or now - when >= PLOT_EVERY_SECONDS:
            plot_progress(self.output_dir / "progress.png", self.history)
            self._plotted = (len(self.history), now)

    # ---- summary and signals --------------------------------------------------------------------
    def _write_summary(self) -> None:
        reported = "best" if self.options.use_best and self.best["epoch"] is not None else "final"
        memory = peak_memory(self.device, self.plans.memory)
        write_json(self.output_dir / "train_summary.json", {
            **self.run_info,
            "parameters": count_parameters(self.network),
            "parameters_inference": inference_parameter_count(self.network),
            "seconds_per_iteration": seconds_per_iteration(self.history, self.options.iterations_per_epoch),
            "peak_memory": memory, **headline_memory(memory, self.run_info.get("network"),
                                                        self.run_info.get("ablation")),
            "options": dataclasses.asdict(self.options),
            "epochs": self.options.epochs, "final_epoch": self._epochs_done() - 1,
            "stopped_early_after_epoch": self.stopped_early,
            "best_epoch": self.best["epoch"], "best_dice_mean": self.best["dice"],
            "best_selected_on": _SELECTION_LABELS[self.best["on"]],
            "reported_checkpoint": reported, "device": str(self.device)})

    def _epochs_done(self) -> int:
        return self.options.epochs if self.stopped_early is None else self.stopped_early + 1

    def _request_stop(self, signum: int) -> None:
        self._stop = signum
        log.warning("received %s: saving checkpoint_latest.pt at the next iteration boundary "
                    "(a second signal stops at once)", signal.Signals(signum).name)
