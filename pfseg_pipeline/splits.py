"""Deterministic train/validation/test splits of a dataset's case ids: a shared contract.

Preprocessing writes `splits.json` (`write_splits`); training reads it (`read_splits`). The
seed is the plans' `training.split_seed`. Three families live in one `splits.json`:

- `folds`: 5 folds for cross-validation. Cases are ordered by a hash of (seed, case id) and
  dealt round-robin, so a case's fold depends only on its id and the seed, never on which
  other cases happen to be present or on file order.
- `paper`: the paper's 8/2 protocol by sorted case order: the first 80 % train, the rest test,
  no validation (so no best checkpoint: the final one is reported, defect 7).
- `paper622`: 6/2/2 by sorted order; validation is the middle 20 %, test the last 20 %.

`select_split(splits, name, fold)` turns a family and a fold into (train ids, validation ids);
`held_out_cases(splits, name)` gives the held-out test set of a named split;
`monitor_split(train_ids, fraction, seed)` carves a fold's monitor cases from its training cases.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from pfseg_pipeline.errors import UserError
from pfseg_pipeline.fileio import read_json, write_json

log = logging.getLogger(__name__)

N_FOLDS = 5
SPLIT_NAMES = ("folds", "paper", "paper622")


def _hash_key(seed: int, case_id: str) -> str:
    return hashlib.sha256(f"{seed}\x00{case_id}".encode()).hexdigest()


def _counts(n: int, fractions: Sequence[float]) -> list[int]:
    """Split n items into len(fractions) parts by the largest remainder, every part >= 1 while n allows.

    >>> _counts(10, (0.6, 0.2, 0.2))
    [6, 2, 2]
    """
    raw = [n * f for f in fractions]
    counts = [int(r) for r in raw]
    by_remainder = sorted(range(len(raw)), key=lambda i: (counts[i] - raw[i], i))
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    # a part left empty takes one case from the largest part, as long as that leaves it non-empty
    for i in range(len(counts)):
        if counts[i] == 0:
            donor = max(range(len(counts)), key=lambda j: counts[j])
            if counts[donor] > 1:
                counts[donor] -= 1
                counts[i] += 1
    return counts


def make_splits(case_ids: Iterable[str], seed: int) -> dict:
    """The splits of a dataset: 5 hashed folds plus the sorted-order `paper` and `paper622` splits.

    With fewer than 5 cases each fold still validates on one case (folds then share validation
    cases); with a single case every fold trains on it and has no validation.

    >>> s = make_splits([f"case_{i:03d}" for i in range(10)], seed=12345)
    >>> s["paper622"]["val"], s["paper622"]["test"]
    (['case_006', 'case_007'], ['case_008', 'case_009'])
    """
    ids = sorted({str(c) for c in case_ids})
    if not ids:
        raise UserError("cannot make splits: the dataset has no cases")
    n = len(ids)
    hashed = sorted(ids, key=lambda c: _hash_key(seed, c))
    folds = []
    for k in range(N_FOLDS):
        if n == 1:
            val = []
        elif n < N_FOLDS:
            val = [hashed[k % n]]
        else:
            val = sorted(hashed[k::N_FOLDS])
        folds.append({"train": [c for c in ids if c not in val], "val": val})

    n_train, n_test = _counts(n, (0.8, 0.2))
    paper = {"train": ids[:n_train], "val": [], "test": ids[n_train:]}
    n_train, n_val, n_test = _counts(n, (0.6, 0.2, 0.2))
    paper622 = {"train": ids[:n_train], "val": ids[n_train:n_train + n_val],
                "test": ids[n_train + n_val:]}
    return {"seed": seed, "cases": ids, "folds": folds, "paper": paper, "paper622": paper622}


def _all_cases(splits: dict) -> list[str]:
    if isinstance(splits.get("cases"), list):
        return sorted(splits["cases"])
    fold0 = splits["folds"][0]
    return sorted(set(fold0["train"]) | set(fold0["val"]))


def select_split(splits: dict, split_name: str = "folds", fold: int | str = 0,
                 source: str = "splits.json") -> tuple[list[str], list[str]]:
    """(train ids, validation ids) of a split.

    `split_name` is `folds` (with `fold` 0-4, or `all`: every case trains, no validation),
    `paper` or `paper622` (`fold` is then ignored).
    """
    if split_name not in SPLIT_NAMES:
        raise UserError(f"unknown split {split_name!r} (choose from {', '.join(SPLIT_NAMES)})")
    try:
        if split_name != "folds":
            entry = splits[split_name]
            return list(entry["train"]), list(entry.get("val", []))
        if str(fold) == "all":
            return _all_cases(splits), []
        folds = splits["folds"]
        try:
            k = int(fold)
        except (TypeError, ValueError):
            raise UserError(f"fold must be 0-{len(folds) - 1} or 'all', got {fold!r}") from None
        if not 0 <= k < len(folds):
            raise UserError(f"{source}: fold {k} does not exist (folds 0-{len(folds) - 1})")
        return list(folds[k]["train"]), list(folds[k]["val"])
    except (KeyError, TypeError, IndexError) as exc:
        raise UserError(f"{source}: malformed splits ({type(exc).__name__}: {exc}); "
                        "re-run pfseg_plan_and_preprocess") from None


def held_out_cases(splits: dict, split_name: str) -> list[str]:
    """The held-out test ids of a named split (`paper`, `paper622`); none for `folds`."""
    if split_name == "folds":
        return []
    entry = splits.get(split_name) or {}
    return list(entry.get("test", []))


def monitor_split(train_ids: Sequence[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(cases that train, monitor cases): `fraction` of a fold's training cases held out.

    The monitor cases are the only ones whose Dice may steer a fold's training (plateau, early
    stopping, best checkpoint); they are not trained on. Chosen by a hash of (seed, case id),
    like the folds, so the choice is deterministic and independent of the input order; at least
    one monitor case when `fraction` > 0 and at least one case left to train on.

    >>> monitor_split([f"c{i}" for i in range(10)], 0.0, 1)[1]
    []
    """
    ids = sorted({str(c) for c in train_ids})
    n = 0
    if fraction > 0 and len(ids) >= 2:
        n = min(max(round(len(ids) * fraction), 1), len(ids) - 1)
    ordered = sorted(ids, key=lambda c: _hash_key(seed, f"monitor\x00{c}"))
    monitor = sorted(ordered[:n])
    return [c for c in train_ids if c not in monitor], monitor


def fold_label(split_name: str, fold: int | str) -> str:
    """The results folder suffix: `fold_{0..4|all}` for folds, `fold_paper`/`fold_paper622` else."""
    return str(fold) if split_name == "folds" else split_name


def write_splits(path: str | os.PathLike, case_ids: Sequence[str], seed: int) -> dict:
    """Make the splits of `case_ids` and write them to `path` (splits.json), atomically."""
    splits = make_splits(case_ids, seed)
    write_json(path, splits)
    return splits


def read_splits(path: str | os.PathLike, cases_dir: str | os.PathLike, seed: int, write: bool = True) -> dict:
    """splits.json at `path`; when it is missing, made from the cases cached in `cases_dir`
    (and written there when `write`, e.g. by the first of several training processes)."""
    path = Path(path)
    if path.is_file():
        return read_json(path)
    # hidden names are temporary files of interrupted writes (fileio.atomic_path), not cases
    ids = sorted(p.stem for p in Path(cases_dir).glob("*.npz") if not p.name.startswith("."))
    splits = write_splits(path, ids, seed) if write else make_splits(ids, seed)
    log.warning("%s was missing: made it from the %d cached cases", path, len(ids))
    return splits
