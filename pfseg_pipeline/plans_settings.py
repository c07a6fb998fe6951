"""Per-run settings of plans.json fields: `pfseg_train ... --set training.optimizer=sgd`.

A setting names any field of plans.json by its dotted path and gives a value, written as JSON
where it parses as JSON (`0.01`, `[0, 1]`, `true`) and as a plain string otherwise (`sgd`). The
changed plans go through the same loader as plans.json (`Plans.from_json`), so a bad value is
named exactly as a bad field of the file would be. A field whose value is a group (the
augmentation) also takes the name of a group presets.py defines (`training.augmentation=nnunet`).

What the cache was built from (the fields of `Plans.hash()`: modalities, spacing,
normalisation, ...) cannot change per run: that needs pfseg_plan_and_preprocess again.

    plans = apply_settings(plans, [("training.lr", 0.01), ("training.optimizer", "sgd")])
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
from collections.abc import Iterable
from typing import Any

from pfseg_pipeline import presets
from pfseg_pipeline.errors import UserError
from pfseg_pipeline.plans import Plans, named_augmentation

log = logging.getLogger(__name__)

SOURCE = "--set"
NOT_SETTABLE = ("version", "reasons", "memory", "dataset_name")   # records of the planning, not decisions
# group-valued fields that also take a name: field -> (names, group by name)
NAMED_GROUPS = {"training.augmentation": (tuple(presets.AUGMENTATIONS), named_augmentation)}


def parse_setting(text: str) -> tuple[str, Any]:
    """'training.lr=0.01' -> ('training.lr', 0.01): the value as JSON where it parses, else the text.

    >>> parse_setting("training.optimizer=sgd")
    ('training.optimizer', 'sgd')
    >>> parse_setting("training.loss_weights.sr=0.25")
    ('training.loss_weights.sr', 0.25)
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UserError(f"{SOURCE} {text!r}: expected FIELD=VALUE, e.g. training.lr=0.01")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key, value


def apply_settings(plans: Plans, settings: Iterable[tuple[str, Any]], label: str = "",
                   log_changes: bool = True) -> Plans:
    """A copy of `plans` with each (dotted field, value) set, validated, each change logged (unless
    `log_changes` is False: a check before the run, which logs them once) and recorded in `reasons`
    ("set for this run"). `label` says which run (e.g. the variant)."""
    settings = list(settings)
    if not settings:
        return plans
    data = copy.deepcopy(plans.to_json())
    reasons = data["reasons"]
    for key, value in settings:
        node, last = _parent(data, key)
        if isinstance(value, str) and key in NAMED_GROUPS and isinstance(node[last], dict):
            names, group = NAMED_GROUPS[key]
            if value not in names:
                raise UserError(f"{SOURCE} {key}={value}: name one of {', '.join(names)} or give an object")
            value = dataclasses.asdict(group(value))
        old = node[last]
        node[last] = value
        if log_changes:
            log.info("%s %s: %s -> %s%s", SOURCE, key, json.dumps(old), json.dumps(value),
                     f" ({label})" if label else "")
        reasons[key] = f"set for this run{f' ({label})' if label else ''}: {SOURCE} {key}={json.dumps(value)}"
    new = Plans.from_json(data, SOURCE)
    if new.hash() != plans.hash():
        raise UserError(f"{SOURCE}: {', '.join(k for k, _ in settings)} change(s) what the preprocessed "
                        "cache was built from; re-run pfseg_plan_and_preprocess with the new setting instead")
    return new


def _parent(data: dict, key: str) -> tuple[dict, str]:
    """The dict holding the field `key` (dotted) and its last name; a UserError for an unknown one."""
    parts = key.split(".")
    if parts[0] in NOT_SETTABLE:
        raise UserError(f"{SOURCE} {key}: '{parts[0]}' records the planning and is not a setting")
    node = data
    for depth, part in enumerate(parts):
        if not isinstance(node, dict) or part not in node:
            where = ".".join(parts[:depth]) or "plans.json"
            known = ", ".join(sorted(node)) if isinstance(node, dict) else "none (not an object)"
            raise UserError(f"{SOURCE} {key}: {where} has no field '{part}' (its fields: {known})")
        if depth < len(parts) - 1:
            node = node[part]
    return node, parts[-1]
