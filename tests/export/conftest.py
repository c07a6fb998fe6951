"""Networks with the demo preset's widths on small volumes, random weights, fixed seeds."""

from __future__ import annotations

import pytest
import torch

from pfseg_pipeline.data.labels import BRATS2020
from pfseg_pipeline.networks.registry import build_network
from pfseg_pipeline.plans import GuidancePlan, NetworkPlan, PatchPlan, Plans

MODALITIES = ("t1", "t2")
PLANNED_HR = (32, 32, 32)      # divisor 16 = LR scale 2 x 2**3 poolings
PATCH = (16, 16, 16)           # resunet3d's training patch (divisor 8)
# The (network, plan options) pairs every export test covers: PFSeg with the default, the
# paper's and the textured-guidance inputs, the two patch-free baselines and a patch-based one
# (exported at its training patch, as a sliding window runs it).
CASES = [
    ("pfseg", {}),
    ("pfseg", {"lr_operator": "trilinear"}),
    ("pfseg", {"location": "textured"}),
    ("resunet3d_up", {}),
    ("hdc", {}),
    ("resunet3d", {}),
]
PATCH_BASED = {"resunet3d"}
CASE_IDS = ["pfseg", "pfseg-trilinear", "pfseg-textured", "resunet3d_up", "hdc", "resunet3d"]


def pytest_generate_tests(metafunc):
    """A test that takes `case` runs once per (network, plan options) of CASES."""
    if "case" in metafunc.fixturenames:
        metafunc.parametrize("case", CASES, ids=CASE_IDS)


def demo_plans(location: str = "center", lr_operator: str = "avgpool") -> Plans:
    """The demo preset's widths (8-16-32-64, SGM 8-16-32, head 8) at HR 32^3, guidance 8^3."""
    plans = Plans(dataset_name="Tiny", modalities=list(MODALITIES), label_scheme=BRATS2020.to_json(),
                  hr_shape_zyx=list(PLANNED_HR), target_spacing_zyx=[1.0, 1.0, 1.0],
                  lr_scale_zyx=[2, 2, 2], lr_operator=lr_operator,
                  guidance=GuidancePlan([8, 8, 8], location),
                  network=NetworkPlan([8, 16, 32, 64], [8, 16, 32], 8), patch_based=PatchPlan(list(PATCH)))
    plans.validate()
    return plans


def build(name: str, location: str = "center", lr_operator: str = "avgpool", seed: int = 0):
    """(network in eval mode, its plans, its planned input shape)."""
    plans = demo_plans(location, lr_operator)
    torch.manual_seed(seed)
    network = build_network(name, plans).eval()
    planned = PATCH if name in PATCH_BASED else PLANNED_HR
    return network, plans, planned


def brain_like(batch: int, shape_zyx, seed: int = 1) -> torch.Tensor:
    """(B, 2, Z, Y, X) noise inside an off-centre box, zero outside (a brain and its background):
    the guidance search and the centre cut see different windows at every shape."""
    generator = torch.Generator().manual_seed(seed)
    image = torch.zeros(batch, len(MODALITIES), *shape_zyx)
    z, y, x = shape_zyx
    box = (slice(None), slice(None), slice(2, z - 1), slice(3, y - 2), slice(1, x - 4))
    image[box] = torch.randn(image[box].shape, generator=generator) + 1.0
    return image


def assert_same_logits(actual: torch.Tensor, expected: torch.Tensor, atol: float = 1e-4) -> None:
    """Same shape, logits within `atol`, and the same labels after thresholding at 0.5 (logit 0)
    wherever the expected logit is further than `atol` from 0 (closer, float rounding decides)."""
    assert actual.shape == expected.shape
    diff = float((actual - expected).abs().max())
    assert diff < atol, f"max |logit difference| {diff:.2e}"
    decided = expected.abs() > atol
    assert float(decided.float().mean()) > 0.99     # the comparison covers (nearly) every voxel
    assert torch.equal((actual > 0)[decided], (expected > 0)[decided])


@pytest.fixture
def build_case():
    """`build(name, location, lr_operator)` -> (network, plans, planned input shape)."""
    return build


@pytest.fixture
def make_image():
    """`brain_like(batch, shape_zyx)`: a brain-like input batch."""
    return brain_like


@pytest.fixture
def same_logits():
    """`assert_same_logits(actual, expected)`."""
    return assert_same_logits


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
