"""Session-wide fixtures: a tiny synthetic BraTS dataset, written once and copied per test."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pfseg_pipeline.data.synthetic import write_dataset

TINY_SHAPE_XYZ = (24, 20, 16)   # as the NIfTI stores it; arrays are (16, 20, 24)
TINY_CASES = 3


@pytest.fixture(scope="session")
def synthetic_raw(tmp_path_factory) -> Path:
    """A read-only BraTS-layout dataset: 3 synthetic cases of 24x20x16 voxels (x y z), seed 0.

    Tests that modify files must use `synthetic_copy` instead.
    """
    root = tmp_path_factory.mktemp("synthetic_raw")
    write_dataset(root, TINY_CASES, TINY_SHAPE_XYZ, seed=0)
    return root


@pytest.fixture
def synthetic_copy(synthetic_raw, tmp_path) -> Path:
    """A private, writable copy of `synthetic_raw` under this test's tmp_path."""
    return Path(shutil.copytree(synthetic_raw, tmp_path / "raw"))
