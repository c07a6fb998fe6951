"""A tiny preprocessed workspace for the training tests: a few cases of 2 x ~16 x 32 x 32 voxels.

Tests get the helpers through fixtures (`make_plans`, `make_workspace`, `workspace`): under
pytest's importlib mode a test module cannot import this file.
"""

from __future__ import annotations

import numpy as np
import pytest

from pfseg_pipeline.data.labels import BRATS2020
from pfseg_pipeline.data.layouts import Case
from pfseg_pipeline.data.nifti import make_reference, write_label_map, write_volume
from pfseg_pipeline.fileio import write_json
from pfseg_pipeline.paths import Workspace
from pfseg_pipeline.plans import GuidancePlan, NetworkPlan, PatchPlan, Plans, TrainingPlan, save_plans
from pfseg_pipeline.splits import make_splits

NAME = "Tiny"
# brain boxes smaller than, equal to and larger than the HR shape (16, 32, 32) on some axis
CASE_SHAPES = [(14, 28, 30), (16, 32, 32), (18, 34, 28), (12, 30, 36), (15, 26, 26), (16, 30, 34)]


def tiny_plans(hr=(16, 32, 32), widths=(4, 8, 16), patch=(8, 16, 16), epochs=2, iterations=2,
               batch_size=1, location="center") -> Plans:
    plans = Plans(dataset_name=NAME, modalities=["t1", "t2"], label_scheme=BRATS2020.to_json(),
                  hr_shape_zyx=list(hr), target_spacing_zyx=[1.0, 1.0, 1.0],
                  guidance=GuidancePlan([4, 8, 8], location),
                  network=NetworkPlan(list(widths), [4, 8], 4),
                  batch_size=batch_size,
                  patch_based=PatchPlan(list(patch), batch_size=batch_size, foreground_oversampling=0.5),
                  training=TrainingPlan(epochs=epochs, iterations_per_epoch=iterations, lr=3e-3, seed=7),
                  memory={"predicted_peak_bytes": 123456, "batch_size": batch_size})
    plans.validate()
    return plans


def synthetic_case(shape, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two z-scored-looking channels with an ellipsoid tumour (edema shell, core, enhancing centre)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    centre = [rng.uniform(0.35, 0.65) * n for n in shape]
    r = np.sqrt(sum(((g - c) / (0.22 * n)) ** 2 for g, c, n in zip((z, y, x), centre, shape)))
    seg = np.zeros(shape, np.uint8)
    seg[r < 1.0] = 2
    seg[r < 0.6] = 1
    seg[r < 0.3] = 4
    image = rng.normal(0, 0.3, (2, *shape)).astype(np.float32)
    image[0] += np.where(seg == 2, 1.5, 0) + np.where(seg == 4, 2.5, 0)
    image[1] += np.where(seg > 0, 2.0, 0) - np.where(seg == 1, 1.0, 0)
    return image, seg


def write_workspace(root, plans: Plans | None = None, n_cases: int = 6):
    """Raw NIfTI cases under `root/raw`, preprocessed for real into the workspace at `root`
    (so the end-of-training evaluation can predict them from their source files)."""
    from pfseg_pipeline.preprocessing.cache import preprocess_dataset, write_dataset_json

    ws = Workspace(root)
    plans = plans or tiny_plans()
    pre = ws.preprocessed(NAME)
    raw = ws.root / "raw"
    cases = []
    for i in range(n_cases):
        case_id = f"case_{i:02d}"
        image, seg = synthetic_case(CASE_SHAPES[i % len(CASE_SHAPES)], i)
        reference = make_reference(seg.shape, np.eye(4))
        images = {m: raw / case_id / f"{case_id}_{m}.nii.gz" for m in plans.modalities}
        for channel, path in zip(image, images.values()):
            write_volume(channel, reference, path)
        label = raw / case_id / f"{case_id}_seg.nii.gz"
        write_label_map(seg, reference, label)
        cases.append(Case(case_id, images, label))
    save_plans(plans, ws.plans_file(NAME))
    preprocess_dataset(cases, plans, pre, workers=1, progress=False)
    write_dataset_json(ws.dataset_file(NAME), NAME, cases, plans.modalities, BRATS2020, "brats",
                       plans.target, raw)
    write_json(pre / "splits.json", make_splits([c.case_id for c in cases], plans.training.split_seed))
    return ws


@pytest.fixture
def workspace(tmp_path):
    return write_workspace(tmp_path / "ws")


@pytest.fixture
def make_plans():
    """`tiny_plans(**overrides)`: small plans matching the cache of `workspace`."""
    return tiny_plans


@pytest.fixture
def make_workspace():
    """`write_workspace(root, plans=None, n_cases=6)`: a fresh tiny workspace under `root`."""
    return write_workspace
