"""Learning-rate schedules from `plans.training.scheduler`, one small factory per name.

Each factory takes (optimiser, epochs, with_validation) and returns a torch scheduler that the
trainer steps once per epoch; a `ReduceLROnPlateau` is stepped with the mean validation Dice.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from pfseg_pipeline.errors import UserError

POLY_EXPONENT = 0.9          # nnU-Net's poly decay: lr * (1 - epoch / epochs) ** 0.9
PLATEAU_FACTOR = 0.5         # halve the rate ...
PLATEAU_PATIENCE = 10        # ... after 10 epochs without a better mean Dice


def poly(optimizer: torch.optim.Optimizer, epochs: int, with_validation: bool):
    """Poly decay to zero over `epochs`; needs no validation."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: max(0.0, 1 - e / epochs) ** POLY_EXPONENT)


def plateau(optimizer: torch.optim.Optimizer, epochs: int, with_validation: bool):
    """ReduceLROnPlateau on the mean validation Dice; poly decay where the split has no
    validation cases (nothing to watch)."""
    if not with_validation:
        return poly(optimizer, epochs, with_validation)
    return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=PLATEAU_FACTOR,
                                                      patience=PLATEAU_PATIENCE)


SCHEDULERS: dict[str, Callable] = {"plateau": plateau, "poly": poly}


def make_scheduler(optimizer: torch.optim.Optimizer, kind: str, epochs: int, with_validation: bool):
    """The schedule `kind` (plans.json `training.scheduler`) for a run of `epochs` epochs."""
    try:
        factory = SCHEDULERS[kind]
    except KeyError:
        raise UserError(f"plans.json: field 'training.scheduler' must be one of {', '.join(SCHEDULERS)}, "
                        f"got {kind!r}") from None
    return factory(optimizer, epochs, with_validation)
