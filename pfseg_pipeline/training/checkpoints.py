"""Checkpoints and random states: written atomically, read without pickle.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts only, so
`torch.load(..., weights_only=True)` reads it (docs/ARCHITECTURE.md, Checkpoints):
`network`, `network_options`, `model`, `plans`, `epoch` (epochs completed: the next epoch to
run), and for resuming `optimizer`, `scheduler`, `scaler`, `rng`, `history`, `best`.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pfseg_pipeline.errors import UserError
from pfseg_pipeline.fileio import atomic_path

CHECKPOINT_NAMES = ("latest", "final", "best")


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's generators (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every generator's state as tensors and lists (loadable with weights_only=True)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].cpu().numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def checkpoint_path(fold_dir: Path, which: str) -> Path:
    if which not in CHECKPOINT_NAMES:
        raise UserError(f"unknown checkpoint {which!r} (choose from {', '.join(CHECKPOINT_NAMES)})")
    return Path(fold_dir) / f"checkpoint_{which}.pt"


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """torch.save to a temporary name, then rename: a crash never leaves half a checkpoint."""
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint read with weights_only=True; a missing or unreadable file is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, pickle refused by weights_only, ...
        raise UserError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc})") from exc
