"""Tiny plans for the network tests (a few thousand weights, volumes of a few thousand voxels)."""

from __future__ import annotations

import pytest
import torch

from pfseg_pipeline.data.labels import BRATS2020
from pfseg_pipeline.plans import GuidancePlan, NetworkPlan, PatchPlan, Plans


def tiny_plans(hr=(16, 16, 16), scale=(2, 2, 2), guidance=(4, 4, 4), widths=(4, 8, 8), sgm_widths=(4, 8),
               head_width=4, patch=(8, 8, 8), modalities=("t1", "t2"), target="regions",
               normalization="zscore", lr_operator="avgpool", location="center") -> Plans:
    """Defaults: HR 16^3, LR 8^3, bottleneck 2^3 (two poolings), SGM output 2^3 from a 4^3 patch."""
    plans = Plans(dataset_name="Tiny", modalities=list(modalities), label_scheme=BRATS2020.to_json(),
                  hr_shape_zyx=list(hr), target_spacing_zyx=[1.0, 1.0, 1.0], target=target,
                  normalization=normalization, lr_scale_zyx=list(scale), lr_operator=lr_operator,
                  guidance=GuidancePlan(list(guidance), location),
                  network=NetworkPlan(list(widths), list(sgm_widths), head_width),
                  patch_based=PatchPlan(list(patch)))
    plans.validate()
    return plans


@pytest.fixture
def make_plans():
    return tiny_plans


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
