"""Checkpoints: a shared contract, written by training and read by training and inference.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts only, so
`torch.load(..., weights_only=True)` reads it (docs/ARCHITECTURE.md, Checkpoints):
`network`, `network_options`, `model`, `plans`, `epoch` (epochs completed: the next epoch to
run), and for resuming `optimizer`, `scheduler`, `scaler`, `rng`, `history`, `best`.

Where they live: `results/NAME/NETWORK[__VARIANT]/fold_K/checkpoint_{final,best,latest}.pt`.
This module writes them (atomically), reads them (one set of messages for every reader),
lists the folds of a network folder that hold one, and loads weights strictly.

What each kind holds: `latest` is for resuming and holds everything above; while a fold trains
it keeps one generation back, `checkpoint_latest.prev.pt` (optimiser state included), so a
latest damaged from outside (a copy cut short, a sync tool) still leaves a checkpoint to resume
from. `final` and `best` are for prediction: the keys in `RESUME_KEYS` (optimiser, scheduler,
scaler and RNG states, two thirds of an Adam-trained checkpoint) are left out. An older full
checkpoint of any kind still loads; `read_checkpoint` reads all of them the same way.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pfseg_pipeline.errors import UserError
from pfseg_pipeline.fileio import atomic_path

# final: end of training (predict's default); best: best validation Dice (only with validation
# cases); latest: every epoch (what --continue resumes)
CHECKPOINT_KINDS = ("final", "best", "latest")
# what only resuming needs: kept in latest, left out of final and best
RESUME_KEYS = ("optimizer", "scheduler", "scaler", "rng")
PREVIOUS_SUFFIX = ".prev.pt"


def _check_kind(which: str) -> None:
    if which not in CHECKPOINT_KINDS:
        raise UserError(f"unknown checkpoint {which!r} (choose from {', '.join(CHECKPOINT_KINDS)})")


def checkpoint_path(fold_dir: str | Path, which: str) -> Path:
    """`fold_dir/checkpoint_<which>.pt`."""
    _check_kind(which)
    return Path(fold_dir) / f"checkpoint_{which}.pt"


def previous_path(path: str | Path) -> Path:
    """The generation before `path`: checkpoint_latest.pt -> checkpoint_latest.prev.pt."""
    path = Path(path)
    return path.with_name(path.name.removesuffix(".pt") + PREVIOUS_SUFFIX)


def for_prediction(payload: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint without what only resuming needs (`RESUME_KEYS`): what final and best hold."""
    return {k: v for k, v in payload.items() if k not in RESUME_KEYS}


def is_resumable(ckpt: dict[str, Any]) -> bool:
    return all(k in ckpt for k in RESUME_KEYS)


def save_checkpoint(path: str | Path, payload: dict[str, Any], keep_previous: bool = False) -> None:
    """torch.save to a temporary name, then rename: a crash never leaves half a checkpoint.

    keep_previous : the checkpoint at `path` becomes `previous_path(path)` once the new one is
        complete and just before it takes its place (a hard link, a copy where there are none),
        so at every instant `path` holds a complete generation, and so does the previous name
        after the first rotation.
    """
    path = Path(path)
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(payload, tmp)
        if keep_previous and path.is_file():
            _keep_generation(path)


def _keep_generation(path: Path) -> None:
    with atomic_path(previous_path(path), suffix=".pt") as tmp:
        tmp.unlink()
        try:
            os.link(path, tmp)        # the same bytes under a second name: no copy, no window
        except OSError:               # a file system without hard links
            shutil.copyfile(path, tmp)


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint read with weights_only=True.

    A missing file, an unreadable one (truncated, random bytes, a pickled object that
    weights_only refuses) or one that is not a pfseg checkpoint is a UserError naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, random bytes, pickled objects refused ...
        text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise UserError(f"{path}: corrupt or unreadable checkpoint ({type(exc).__name__}"
                        f"{': ' + text if text else ''})") from exc
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise UserError(f"{path}: not a pfseg checkpoint (expected a dict with 'network' and 'model')")
    return ckpt


def _fold_sort_key(name: str) -> tuple[int, int | str]:
    suffix = name[len("fold_"):]
    return (0, int(suffix)) if suffix.isdigit() else (1, suffix)


def find_folds(model_dir: str | Path, which: str = "final") -> list[str]:
    """Every fold (the part after 'fold_') under `model_dir` that holds checkpoint_<which>.pt."""
    _check_kind(which)
    model_dir = Path(model_dir)
    names = sorted((p.name for p in model_dir.glob("fold_*")
                    if p.is_dir() and checkpoint_path(p, which).is_file()), key=_fold_sort_key)
    return [n[len("fold_"):] for n in names]


def fold_checkpoints(model_dir: str | Path, folds: Sequence[str | int] | None = None,
                     which: str = "final") -> tuple[list[str], list[Path]]:
    """(fold names, checkpoint paths) of a network folder; `folds` None or empty = every fold
    that holds checkpoint_<which>.pt. A named fold without it is a UserError naming the file."""
    _check_kind(which)
    model_dir = Path(model_dir)
    if not folds:
        names = find_folds(model_dir, which)
        if not names:
            others = sorted(str(p.relative_to(model_dir)) for p in model_dir.glob("fold_*/checkpoint_*.pt"))
            hint = f"; found {', '.join(others)} (try --checkpoint)" if others else ""
            raise UserError(f"{model_dir}: no fold_* folder holds checkpoint_{which}.pt{hint}")
    else:
        names = [str(f) for f in folds]
    paths = []
    for fold in names:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", fold):
            raise UserError(f"fold {fold!r} is not a valid fold name")
        path = checkpoint_path(model_dir / f"fold_{fold}", which)
        if not path.is_file():
            raise UserError(f"{path}: checkpoint not found"
                            + ("" if path.parent.is_dir() else f" (no fold_{fold} in {model_dir})"))
        paths.append(path)
    return names, paths


def load_weights(model: nn.Module, state: dict, path: str | Path, built_from: str | Path) -> None:
    """Load a checkpoint's state_dict strictly; any mismatch is a UserError naming the checkpoint
    and what the network was built from (`built_from`: a plans.json, or a description)."""
    expected = model.state_dict()
    for prefix in ("module.", "_orig_mod."):  # saved from a DDP or torch.compile wrapper
        wrapped = state and all(k.startswith(prefix) for k in state)
        if wrapped and not any(k.startswith(prefix) for k in expected):
            state = {k[len(prefix):]: v for k, v in state.items()}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in expected.items()
             if k in state and isinstance(state[k], torch.Tensor) and tuple(state[k].shape) != tuple(v.shape)]
    problems = []
    if wrong:
        k, got, want = wrong[0]
        problems.append(f"{len(wrong)} shape mismatch(es), e.g. {k}: checkpoint {list(got)} vs "
                        f"network {list(want)}")
    if missing:
        problems.append(f"{len(missing)} missing weight(s), e.g. {missing[0]}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected weight(s), e.g. {unexpected[0]}")
    if problems:
        raise UserError(f"{path}: weights do not fit the network built from {built_from} "
                        f"({'; '.join(problems)}); was it trained with another plan?")
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, ValueError) as exc:
        text = str(exc).strip().splitlines()[0][:200]
        raise UserError(f"{path}: weights do not fit the network built from {built_from} ({text})") from exc
