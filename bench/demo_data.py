"""The benchmarks' shared dataset: synthetic BraTS-like cases, planned and preprocessed with the
`demo` preset (what `make demo` trains), in a workspace of their own.

    ws, plans, info = demo_workspace(root, n_cases=12, shape_xyz=(64, 64, 48))        # blobs
    ws, plans, info = demo_workspace(root, n_cases=16, anatomy="mni152", spacing_mm=4)  # anatomy
"""

from __future__ import annotations

import time
from pathlib import Path

DEMO_NAME = "Demo"
DEMO_CASES = 12
DEMO_SHAPE_XYZ = (64, 64, 48)   # as the NIfTI stores it (x y z): arrays are 48 x 64 x 64 (z y x)


def demo_workspace(root: Path, n_cases: int = DEMO_CASES, shape_xyz=DEMO_SHAPE_XYZ, seed: int = 0,
                   name: str = DEMO_NAME, preset: str = "demo", workers: int = 2, anatomy: str = "blobs",
                   spacing_mm: int = 4, plan_options: dict | None = None):
    """Write `n_cases` synthetic cases under root/raw and plan + preprocess them into root/ws.

    `anatomy="mni152"`: the MNI152 anatomy cases on BraTS's grid at `spacing_mm` (`shape_xyz`
    is then ignored). `plan_options`: more keywords for `plan_and_preprocess` (e.g. `lr_scale`).
    Returns (Workspace, Plans, info) with info = {"raw", "name", "case_ids", "seconds": {...}}.
    """
    from pfseg_pipeline.data.synthetic import write_dataset
    from pfseg_pipeline.paths import Workspace
    from pfseg_pipeline.plans import load_plans
    from pfseg_pipeline.preprocessing.pipeline import plan_and_preprocess

    root = Path(root)
    raw = root / "raw"
    t0 = time.perf_counter()
    if anatomy == "blobs":
        ids = write_dataset(raw, n_cases, tuple(shape_xyz), seed=seed, workers=workers, overwrite=True)
    else:
        ids = write_dataset(raw, n_cases, None, seed=seed, workers=workers, overwrite=True, anatomy=anatomy,
                            spacing_mm=spacing_mm)
        shape_xyz = None
    t1 = time.perf_counter()
    ws = Workspace.resolve(root / "ws")
    summary = plan_and_preprocess(raw, name, ws, preset=preset, workers=workers, progress=False,
                                  **(plan_options or {}))
    t2 = time.perf_counter()
    plans = load_plans(ws.plans_file(name))
    info = {"raw": raw, "name": name, "case_ids": ids, "shape_xyz": list(shape_xyz) if shape_xyz else None,
            "anatomy": anatomy, "spacing_mm": spacing_mm if anatomy != "blobs" else 1, "n_cases": n_cases,
            "seconds": {"write": t1 - t0, "plan_and_preprocess": t2 - t1},
            "plan_and_preprocess_seconds": summary.get("seconds", {})}
    return ws, plans, info


def console(name: str) -> str:
    """The path of one of the project's (or nnU-Net's) console scripts in this environment."""
    import shutil
    import sys

    here = Path(sys.executable).parent / name
    found = here if here.exists() else shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} not found beside {sys.executable} or on PATH (pip install -e .[bench])")
    return str(found)

