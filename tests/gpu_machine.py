"""Running code as the lent GPU machine would: a fresh interpreter in which the packages that
machine lacks (FACTS.md: it has torch, numpy, scipy, scikit-image, pandas, matplotlib, tqdm) fail
to import. A helper for tests, not a test module."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ABSENT_ON_THE_GPU_MACHINE = ("nibabel", "SimpleITK", "batchgenerators", "medpy")


def run_without_gpu_machine_absentees(body: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the Python source `body` from the repository root with those packages blocked."""
    script = textwrap.dedent(f"""
        import importlib.abc, sys
        BLOCKED = {set(ABSENT_ON_THE_GPU_MACHINE)!r}
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError("absent on the GPU machine: " + name)
        sys.meta_path.insert(0, Block())
    """) + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT)})
