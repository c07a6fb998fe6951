"""Fingerprints built by hand (no data needed) and tiny plans for the memory model."""

from __future__ import annotations

import numpy as np
import pytest

from pfseg_pipeline.data.labels import BRATS2020
from pfseg_pipeline.planners import memory
from pfseg_pipeline.planners.budget import default_peak_fn
from pfseg_pipeline.planners.fingerprint import FINGERPRINT_VERSION
from pfseg_pipeline.planners.memory import guidance_patch_for
from pfseg_pipeline.plans import GuidancePlan, NetworkPlan, PatchPlan, Plans

MODALITIES = ["t1", "t1ce", "t2", "flair"]


def fake_fingerprint(n_cases: int = 20, shape_zyx=(155, 240, 240), spacing_zyx=(1.0, 1.0, 1.0),
                     box_zyx=(140, 172, 140), spread: int = 8, et_p5_mm3: float | None = 300.0,
                     modalities=MODALITIES, seed: int = 0) -> dict:
    """A fingerprint like BraTS 2020's (240x240x155 at 1 mm, brain boxes about 140x172x140 z y x)."""
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(n_cases):
        box = [int(min(n, b + rng.integers(-spread, spread + 1))) for b, n in zip(box_zyx, shape_zyx)]
        start = [(n - b) // 2 for n, b in zip(shape_zyx, box)]
        cases.append({
            "case": f"case_{i:03d}", "shape_zyx": list(shape_zyx), "spacing_zyx": list(spacing_zyx),
            "orientation": "LPS", "brain_box_zyx": [[s, s + b] for s, b in zip(start, box)],
            "brain_box_shape_zyx": box, "brain_voxels": int(np.prod(box)) // 2,
            "intensity": {m: {"p0.5": 10.0, "p50": 500.0, "p99.5": 1500.0, "mean": 520.0, "std": 200.0}
                          for m in modalities},
            "label_voxels": {"0": 1000, "1": 10, "2": 100, "4": 20},
            "components": {"WT": [30000], "TC": [8000], "ET": [3000]},
        })
    components = {"ET": {"size_mm3_voxel_weighted_p5": et_p5_mm3}} if et_p5_mm3 else {}
    return {"version": FINGERPRINT_VERSION, "modalities": list(modalities),
            "label_scheme": BRATS2020.to_json(), "cases": cases, "dataset": {"components": components}}


def pfseg_only(network, plans, batch) -> int:
    """The memory model for PFSeg (what the LR-scale and batch rules read; the branches the plan
    trains, as the planner's own), a token 0.1 GiB for the other networks (their patches are planned
    by their own rule, their peaks only recorded)."""
    return default_peak_fn(network, plans, batch).bytes if network == "pfseg" else memory.GiB // 10


def small_plans(hr=(32, 32, 32), widths=(8, 16, 32, 64), sgm_widths=(8, 16, 32), modalities=MODALITIES,
                patch=(16, 16, 16)) -> Plans:
    network = NetworkPlan(list(widths), list(sgm_widths), 8)
    plans = Plans(dataset_name="Small", modalities=list(modalities), label_scheme=BRATS2020.to_json(),
                  hr_shape_zyx=list(hr), target_spacing_zyx=[1.0, 1.0, 1.0], network=network,
                  guidance=GuidancePlan(guidance_patch_for(hr, [2, 2, 2], network), "center"),
                  patch_based=PatchPlan(list(patch)))
    plans.validate()
    return plans


@pytest.fixture
def brats_fingerprint() -> dict:
    return fake_fingerprint()
