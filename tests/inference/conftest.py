"""Tiny plans, cases written as NIfTI files, and results folders with random-weight checkpoints."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from pfseg_pipeline.data.labels import BRATS2020
from pfseg_pipeline.data.nifti import make_reference, write_label_map, write_volume
from pfseg_pipeline.fileio import write_json
from pfseg_pipeline.plans import GuidancePlan, NetworkPlan, PatchPlan, Plans, save_plans

MODALITIES = ("t1", "t2")


def tiny_plans(hr=(16, 16, 16), patch=(8, 8, 8), modalities=MODALITIES, target="regions",
               spacing=(1.0, 1.0, 1.0), widths=(4, 8, 8)) -> Plans:
    """HR 16^3 (divisor 8 = LR scale 2 x 2 poolings), patch 8^3, a few thousand weights."""
    plans = Plans(dataset_name="Tiny", modalities=list(modalities), label_scheme=BRATS2020.to_json(),
                  hr_shape_zyx=list(hr), target_spacing_zyx=list(spacing), target=target,
                  guidance=GuidancePlan([4, 4, 4], "center"),
                  network=NetworkPlan(list(widths), [4, 8], 4), patch_based=PatchPlan(list(patch)))
    plans.validate()
    return plans


def affine_for(spacing_zyx: Sequence[float], orientation: str = "LPS") -> np.ndarray:
    """Voxel (i, j, k) -> world; i is x. LPS voxel axes (BraTS files) or RAS ones, slightly shifted."""
    sx, sy, sz = spacing_zyx[2], spacing_zyx[1], spacing_zyx[0]
    signs = {"LPS": (-1, -1, 1), "RAS": (1, 1, 1)}[orientation]
    affine = np.diag([signs[0] * sx, signs[1] * sy, signs[2] * sz, 1.0])
    affine[:3, 3] = [12.5, -30.25, 7.0]
    return affine


def write_case(root: Path, case_id: str, shape_zyx=(14, 18, 16), spacing_zyx=(1.0, 1.0, 1.0),
               orientation: str = "LPS", modalities: Sequence[str] = MODALITIES, seed: int = 0,
               with_label: bool = True, qform_code: int = 1, sform_code: int = 1) -> dict[str, Path]:
    """A BraTS-layout case: an ellipsoid 'brain' (values > 0) with a bright blob, zeros outside."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / case_id
    folder.mkdir(parents=True, exist_ok=True)
    ref = make_reference(shape_zyx, affine_for(spacing_zyx, orientation), qform_code, sform_code)
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape_zyx], indexing="ij")
    brain = sum(g ** 2 for g in grid) < 0.8
    blob = sum((g - 0.2) ** 2 for g in grid) < 0.15
    paths = {}
    for k, modality in enumerate(modalities):
        image = np.where(brain, 100 + 20 * rng.standard_normal(shape_zyx) + 80 * blob * (k + 1), 0)
        paths[modality] = folder / f"{case_id}_{modality}.nii.gz"
        write_volume(np.clip(image, 0, None).astype(np.float32), ref, paths[modality], dtype=np.int16)
    if with_label:
        seg = np.zeros(shape_zyx, np.uint8)
        seg[blob & brain] = 2
        seg[(sum((g - 0.2) ** 2 for g in grid) < 0.05) & brain] = 4
        paths["seg"] = folder / f"{case_id}_seg.nii.gz"
        write_label_map(seg, ref, paths["seg"])
    return paths


def save_fold(model_dir: Path, fold, model: torch.nn.Module, network: str, plans: Plans,
              checkpoint: str = "final") -> Path:
    """A checkpoint in the trainer's format (docs/ARCHITECTURE.md, Checkpoints)."""
    path = Path(model_dir) / f"fold_{fold}" / f"checkpoint_{checkpoint}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"network": network, "network_options": dict(getattr(model, "options", {})),
                "model": model.state_dict(), "plans": plans.to_json(), "epoch": 1}, path)
    return path


def write_model_dir(model_dir: Path, plans: Plans, network: str = "pfseg", folds=(0,), seed: int = 0,
                    checkpoint: str = "final") -> list[torch.nn.Module]:
    """A results network folder: plans.json, dataset.json and one random-weight network per fold."""
    from pfseg_pipeline.networks.registry import build_network

    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    save_plans(plans, model_dir / "plans.json")
    write_json(model_dir / "dataset.json", {"name": plans.dataset_name, "modalities": plans.modalities,
                                            "label_scheme": plans.label_scheme})
    models = []
    for i, fold in enumerate(folds):
        torch.manual_seed(seed + i)
        model = build_network(network, plans).eval()
        save_fold(model_dir, fold, model, network, plans, checkpoint)
        models.append(model)
    return models


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
