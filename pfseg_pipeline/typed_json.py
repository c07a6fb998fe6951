"""Dataclasses from JSON, every field checked: one clear error per bad field (plans.json)."""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

from pfseg_pipeline.errors import UserError


def build_dataclass(cls, d: dict, source: str, prefix: str = ""):
    """`cls(**d)` with every field checked against its type; nested dataclasses (found by their
    type's name among `cls`'s own module, e.g. plans.py) are built the same way. An unknown,
    missing or mistyped field is a UserError naming `source` and the field's dotted path."""
    hints = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(d) - set(hints)
    if unknown:
        raise UserError(f"{source}: unknown field '{prefix}{sorted(unknown)[0]}'")
    kwargs = {}
    for name, f in hints.items():
        full = f"{prefix}{name}"
        if name not in d:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise UserError(f"{source}: missing field '{full}'")
            continue
        kwargs[name] = _convert(f.type, d[name], source, full, sys.modules[cls.__module__])
    return cls(**kwargs)


def _convert(type_name: str, value: Any, source: str, name: str, module) -> Any:
    def bad(expected: str) -> UserError:
        return UserError(f"{source}: field '{name}' must be {expected}, got {value!r}")

    nested = getattr(module, type_name, None)
    if dataclasses.is_dataclass(nested):
        if not isinstance(value, dict):
            raise bad("an object")
        return build_dataclass(nested, value, source, f"{name}.")
    if type_name == "bool":
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if type_name == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if type_name == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value)
    if type_name == "str":
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if type_name == "list[int]":
        if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, int) for v in value):
            raise bad("a list of integers")
        return list(value)
    if type_name == "list[float]":
        if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, (int, float))
                                              for v in value):
            raise bad("a list of numbers")
        return [float(v) for v in value]
    if type_name == "list[str]":
        if not isinstance(value, list) or any(not isinstance(v, str) for v in value):
            raise bad("a list of strings")
        return list(value)
    if type_name == "dict[str, float]":
        if not isinstance(value, dict) or any(isinstance(v, bool) or not isinstance(v, (int, float))
                                              for v in value.values()):
            raise bad("an object of numbers")
        return {str(k): float(v) for k, v in value.items()}
    if type_name == "dict[str, list[float]]":
        def numbers(v) -> bool:
            return isinstance(v, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                               for x in v)
        if not isinstance(value, dict) or not all(numbers(v) for v in value.values()):
            raise bad("an object of lists of numbers")
        return {str(k): [float(x) for x in v] for k, v in value.items()}
    if type_name in ("dict[str, Any]", "dict[str, str]"):
        if not isinstance(value, dict):
            raise bad("an object")
        return dict(value)
    raise TypeError(f"plans field {name}: unsupported type {type_name}")
