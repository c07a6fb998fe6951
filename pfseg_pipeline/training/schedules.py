"""Learning-rate schedules from `plans.training.scheduler`, one small factory per name.

- `poly`: nnU-Net's poly decay, lr = initial * (1 - t / T) ** exponent, stepped PER ITERATION:
  t is the global iteration (epoch * iterations per epoch + iteration), T every iteration of
  the run. The rate is a pure function of t, so a run resumed at any epoch boundary continues
  on the same curve, and the curve is the same whatever the iterations per epoch.
- `plateau`: ReduceLROnPlateau (mode max) on the MONITOR cases' mean Dice, stepped once per
  epoch, with `plans.training.plateau_factor` / `plateau_patience` (the authors' code: 0.1 /
  20). The monitor cases are carved from the fold's training cases (`splits.monitor_split`);
  nothing computed on the cases a fold reports may steer its training, so where there are no
  monitor cases the plateau schedule has nothing to watch and poly decay stands in for it.

The trainer asks a schedule `per_iteration` (set the rate before every step with
`set_iteration(t)`) or not (`step()` / `step(metric)` after each epoch).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from pfseg_pipeline.errors import UserError
from pfseg_pipeline.plans import TrainingPlan

log = logging.getLogger(__name__)


class PolyDecay:
    """lr = initial * max(0, 1 - t / total) ** exponent at global iteration t (0-based).

    Holds no state beyond the initial rates: `set_iteration(t)` sets every parameter group's
    rate for iteration t, so resuming needs only t.
    """

    per_iteration = True

    def __init__(self, optimizer: torch.optim.Optimizer, total_iterations: int, exponent: float):
        if total_iterations < 1:
            raise ValueError(f"poly decay needs at least one iteration, got {total_iterations}")
        self.optimizer = optimizer
        self.total_iterations = int(total_iterations)
        self.exponent = float(exponent)
        self.base_lrs = [float(group["lr"]) for group in optimizer.param_groups]
        self.set_iteration(0)

    def factor(self, iteration: int) -> float:
        return max(0.0, 1.0 - iteration / self.total_iterations) ** self.exponent

    def set_iteration(self, iteration: int) -> None:
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * self.factor(iteration)

    def step(self, *args) -> None:
        """Nothing per epoch: the trainer sets the rate before every iteration."""

    def state_dict(self) -> dict:
        return {"base_lrs": list(self.base_lrs), "total_iterations": self.total_iterations,
                "exponent": self.exponent}

    def load_state_dict(self, state: dict) -> None:
        self.base_lrs = [float(v) for v in state["base_lrs"]]
        if int(state["total_iterations"]) != self.total_iterations:
            log.info("poly decay: the run now has %d iterations (the checkpoint's had %d); the curve "
                     "follows the new length", self.total_iterations, int(state["total_iterations"]))


def poly(optimizer: torch.optim.Optimizer, training: TrainingPlan, iterations_per_epoch: int,
         monitored: bool) -> PolyDecay:
    """Poly decay to zero over every iteration of the run; watches nothing."""
    return PolyDecay(optimizer, training.epochs * iterations_per_epoch, training.poly_exponent)


def plateau(optimizer: torch.optim.Optimizer, training: TrainingPlan, iterations_per_epoch: int,
            monitored: bool):
    """ReduceLROnPlateau on the monitor cases' mean Dice; poly decay where there are no monitor
    cases (the reported cases may not steer training, so there is nothing to watch)."""
    if not monitored:
        log.info("scheduler plateau: no monitor cases (training.monitor_fraction is 0), so nothing may "
                 "steer the rate; poly decay instead")
        return poly(optimizer, training, iterations_per_epoch, monitored)
    return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=training.plateau_factor,
                                                      patience=training.plateau_patience)


SCHEDULERS: dict[str, Callable] = {"plateau": plateau, "poly": poly}


def make_scheduler(optimizer: torch.optim.Optimizer, training: TrainingPlan, iterations_per_epoch: int,
                   monitored: bool):
    """The schedule `training.scheduler` names for a run of `training.epochs` epochs of
    `iterations_per_epoch` steps (per process). `monitored`: there are monitor cases."""
    try:
        factory = SCHEDULERS[training.scheduler]
    except KeyError:
        raise UserError(f"plans.json: field 'training.scheduler' must be one of {', '.join(SCHEDULERS)}, "
                        f"got {training.scheduler!r}") from None
    return factory(optimizer, training, iterations_per_epoch, monitored)
