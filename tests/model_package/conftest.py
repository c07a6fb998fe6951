"""A tiny model package (random weights, 2 folds) and a way to rewrite one member by member."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from pfseg_pipeline.model_package.archive import sha256_of, write_package
from pfseg_pipeline.model_package.manifest import MANIFEST
from pfseg_pipeline.sharing.build import export_model
from tests.inference.conftest import tiny_plans, write_case, write_model_dir


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> tuple[Path, Path]:
    """(results network folder of pfseg with folds 0 and 1, its pytorch package zip)."""
    root = tmp_path_factory.mktemp("tiny_model")
    model_dir = root / "results" / "Tiny" / "pfseg"
    write_model_dir(model_dir, tiny_plans(), "pfseg", folds=(0, 1))
    return model_dir, export_model(model_dir, root / "tiny.zip").path


@pytest.fixture(scope="session")
def tiny_case(tmp_path_factory) -> dict[str, Path]:
    """One case of two modalities (t1, t2) with a label, 12x17x15 voxels (z y x)."""
    return write_case(tmp_path_factory.mktemp("tiny_case"), "case_0", shape_zyx=(12, 17, 15))


def members_of(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist() if not info.is_dir()}


def repackage(source: Path, target: Path, edit: Callable[[dict[str, bytes]], None],
              relist: bool = True) -> Path:
    """`source` with its members changed by `edit` (in place on the name -> bytes dict); with
    `relist` the manifest lists the new members with their true sizes and digests, as an attacker
    who rewrites the manifest too would."""
    members = members_of(source)
    edit(members)
    if relist:
        manifest = json.loads(members[MANIFEST])
        manifest["files"] = {n: {"bytes": len(d), "sha256": sha256_of(d)} for n, d in members.items()
                             if n != MANIFEST and not n.endswith("/")}
        members[MANIFEST] = json.dumps(manifest).encode()
    return write_package(target, members)
