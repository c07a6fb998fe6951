"""What `--continue` resumes from, and whether it may.

- The checkpoint: checkpoint_latest.pt, or, when it is missing, damaged (a copy cut short, a
  sync tool) or holds no optimiser state, the generation before it, checkpoint_latest.prev.pt,
  with a log line saying which one and why. Neither usable: one line naming both.
- The plans: a checkpoint holds the plans it was trained with. When plans.json has changed since
  in a field that shapes the network, the data or the training, resuming would mix two plans:
  refused with one line naming the fields, unless forced (`--force`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from pfseg_pipeline.checkpoints import checkpoint_path, is_resumable, previous_path, read_checkpoint
from pfseg_pipeline.errors import UserError
from pfseg_pipeline.plans import Plans

log = logging.getLogger(__name__)

# plans.json fields that change nothing a resumed run computes: the planner's notes and predictions
IGNORED_FIELDS = ("reasons", "memory")
MAX_NAMED = 6   # fields named on the one line; the rest are counted


def _read_resumable(path: Path, device: torch.device) -> dict[str, Any]:
    ckpt = read_checkpoint(path, map_location=device)
    if not is_resumable(ckpt):
        raise UserError(f"{path}: holds no optimiser state (a checkpoint for prediction), cannot resume")
    return ckpt


def resumable_checkpoint(fold_dir: Path, device: torch.device) -> tuple[dict[str, Any], Path] | None:
    """(checkpoint, path) to resume `fold_dir` from; None when it holds neither generation."""
    latest = checkpoint_path(fold_dir, "latest")
    previous = previous_path(latest)
    if not latest.is_file() and not previous.is_file():
        return None
    try:
        return _read_resumable(latest, device), latest
    except UserError as latest_problem:
        if not previous.is_file():
            raise
        try:
            ckpt = _read_resumable(previous, device)
        except UserError as previous_problem:
            raise UserError(f"{latest_problem}; the generation before it cannot be used either "
                            f"({previous_problem})") from None
        why = str(latest_problem).removeprefix(f"{latest}: ")
        log.warning("%s: %s; resuming from the generation before it, %s (epoch %s)", latest, why,
                    previous.name, ckpt.get("epoch"))
        return ckpt, previous


def _leaves(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_leaves(item, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): value}


def plans_differences(trained: dict[str, Any], current: Plans) -> list[str]:
    """The dotted plans.json fields (`training.lr`, `network.widths`) whose values differ between
    the plans a checkpoint was trained with and `current`, the notes in `IGNORED_FIELDS` aside.

    The checkpoint's plans are read as plans.json would be (fields an older file lacks filled
    from its preset), so that only real changes count."""
    try:
        trained = Plans.from_json(trained, "the checkpoint's plans").to_json()
    except UserError:
        pass  # compared as stored: every field that differs is named
    old = _leaves({k: v for k, v in trained.items() if k not in IGNORED_FIELDS})
    new = _leaves({k: v for k, v in current.to_json().items() if k not in IGNORED_FIELDS})
    return sorted(k for k in old.keys() | new.keys() if old.get(k, "<absent>") != new.get(k, "<absent>"))


def check_plans_unchanged(ckpt: dict[str, Any], path: Path, plans: Plans, plans_file: Path,
                          force: bool = False) -> None:
    """Refuse to resume when `plans_file` changed since `path` was written (unless `force`)."""
    trained = ckpt.get("plans")
    if not isinstance(trained, dict):
        return  # a checkpoint without its plans: nothing to compare
    changed = plans_differences(trained, plans)
    if not changed:
        return
    named = ", ".join(changed[:MAX_NAMED]) + (f" and {len(changed) - MAX_NAMED} more"
                                              if len(changed) > MAX_NAMED else "")
    if force:
        log.warning("%s: changed since %s was written (%s); resuming anyway (--force)", plans_file, path.name,
                    named)
        return
    raise UserError(f"{plans_file}: changed since {path.name} was written ({named}); resuming would mix "
                    "two plans: pass --force to resume anyway, or train without --continue to start over")
