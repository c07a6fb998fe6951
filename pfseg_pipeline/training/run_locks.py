"""The locks a training run holds: its fold folder (written) and its preprocessed dataset (read).

Under torchrun only rank 0 takes them (the ranks are one run); every rank learns whether it
did, so that a refused run stops on every rank instead of leaving the others waiting at a
barrier. The trainer's own validation predicts into `fold_K/validation`, inside the folder it
holds, and takes no lock of its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from pfseg_pipeline import locks
from pfseg_pipeline.errors import UserError
from pfseg_pipeline.training import distributed as ddp

FOLD = "fold folder"
DATASET = "preprocessed dataset"


def check_training_free(preprocessed: Path, fold_dir: Path) -> None:
    """A quick look, before the command opens its log file in `fold_dir`: refuse while another
    run holds the fold folder or rewrites the preprocessed dataset."""
    locks.check_free(fold_dir, FOLD)
    locks.check_free(preprocessed, DATASET)


@contextlib.contextmanager
def training_locks(preprocessed: Path, fold_dir: Path, dist: ddp.DistContext | None = None) -> Iterator[None]:
    """Hold `fold_dir` and read `preprocessed` for the block (rank 0), or raise the UserError
    naming the run that holds them (every rank)."""
    dist = dist or ddp.DistContext()
    with contextlib.ExitStack() as held:
        problem: UserError | None = None
        if dist.is_main:
            try:
                held.enter_context(locks.shared(preprocessed, DATASET))
                held.enter_context(locks.exclusive(fold_dir, FOLD))
            except UserError as exc:
                problem = exc
        if ddp.any_rank(problem is not None, dist):
            raise problem or UserError(f"{fold_dir}: rank 0 could not take the {FOLD} (see its error)")
        yield
