"""Imports run downward: the layers of docs/ARCHITECTURE.md, checked on every import statement of
the package (module level and inside functions), parsed with `ast`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pfseg_pipeline"

# bottom to top; a module may import its own layer and the layers below it, never one above
LAYERS: list[tuple[str, set[str]]] = [
    # `from pfseg_pipeline import __version__` names the package's __init__
    ("foundation", {"__init__", "__version__", "errors", "fileio", "locks", "paths", "parallel", "typed_json",
                    "presets", "devices"}),
    ("data", {"data"}),
    ("contracts", {"plans", "plans_settings", "splits", "checkpoints"}),
    ("networks", {"networks"}),
    ("export", {"export"}),
    ("model_package", {"model_package"}),
    ("planners", {"planners"}),
    ("preprocessing", {"preprocessing"}),
    ("inference", {"inference"}),
    ("sharing", {"sharing"}),
    ("evaluation", {"evaluation"}),
    ("training", {"training"}),
    ("api", {"api"}),
    ("cli", {"cli"}),
]
RANK = {part: rank for rank, (_, parts) in enumerate(LAYERS) for part in parts}


def _imports(path: Path, package_dir: Path) -> list[tuple[int, str]]:
    """(line, imported module) of every import of pfseg_pipeline in `path`, relative ones resolved."""
    package = ["pfseg_pipeline", *path.relative_to(package_dir).parent.parts]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            # `from pfseg_pipeline import presets` imports the module presets
            found += [(node.lineno, f"{base}.{alias.name}" if base == "pfseg_pipeline" else base)
                      for alias in node.names]
    return [(line, name) for line, name in found if name.split(".")[0] == "pfseg_pipeline"]


def violations(package: Path = PACKAGE) -> list[str]:
    out = []
    for path in sorted(package.rglob("*.py")):
        here = path.relative_to(package).parts[0].removesuffix(".py")  # a subpackage or a module
        if here not in RANK:
            out.append(f"{path}: part {here!r} is in no layer of tests/test_layers.py")
            continue
        for line, name in _imports(path, package):
            parts = name.split(".")
            if len(parts) < 2:
                continue
            there = parts[1]
            if there not in RANK:
                out.append(f"{path}:{line}: imports {name}, in no layer")
            elif RANK[there] > RANK[here]:
                out.append(f"{path}:{line}: {LAYERS[RANK[here]][0]} imports {name} "
                           f"({LAYERS[RANK[there]][0]}, a higher layer)")
    return out


def test_every_import_runs_downward():
    assert violations() == []


def test_the_rules_the_issue_names_are_part_of_the_layers():
    """No import into training/ from preprocessing/, planners/, networks/ or inference/ (they sit
    below it), none from data/ into planners/, none from library code into cli/."""
    for lower in ("preprocessing", "planners", "networks", "inference"):
        assert RANK[lower] < RANK["training"]
    assert RANK["data"] < RANK["planners"]
    assert all(RANK[p] < RANK["cli"] for p in RANK if p != "cli")


@pytest.mark.parametrize("source, where, expect", [
    ("from pfseg_pipeline.training.trainer import Trainer\n", "networks/bad.py", "networks imports"),
    ("import pfseg_pipeline.planners.memory\n", "data/bad.py", "data imports"),
    ("def f():\n    from pfseg_pipeline.cli.common import run\n", "inference/bad.py", "inference imports"),
    ("from ..training import recipe\n", "planners/bad.py", "planners imports pfseg_pipeline.training"),
    ("from pfseg_pipeline import presets\n", "data/ok.py", None),
])
def test_the_check_catches_an_upward_import(tmp_path, source, where, expect):
    """The walker is not vacuous: an upward import (at module level, in a function, relative) fails."""
    path = tmp_path / "pfseg_pipeline" / where
    path.parent.mkdir(parents=True)
    path.write_text(source)
    found = violations(tmp_path / "pfseg_pipeline")
    if expect is None:
        assert found == []
    else:
        assert len(found) == 1 and expect in found[0], found
