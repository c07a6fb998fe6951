import pytest
import torch
import torch.nn.functional as F

from pfseg_pipeline.networks.baselines import depth_to_space, probabilities_to_logits, space_to_depth
from pfseg_pipeline.networks.losses import SegmentationLoss
from pfseg_pipeline.networks.registry import build_network, network_spec

PATCH_BASED = ["unet3d", "resunet3d", "vnet"]
CONFIGS = [  # (HR shape, LR scale)
    ((8, 8, 8), (1, 1, 1)),
    ((16, 16, 16), (2, 2, 2)),
    ((12, 12, 24), (3, 3, 3)),
    ((8, 16, 16), (1, 2, 2)),
]


def _batch(shape, channels=2, regions=3, batch_size=2):
    return {"image": torch.rand(batch_size, channels, *shape),
            "target": (torch.rand(batch_size, regions, *shape) > 0.5).float()}


@pytest.mark.parametrize("name", PATCH_BASED)
@pytest.mark.parametrize("patch", [(8, 8, 8), (4, 8, 12)])
def test_patch_based_shapes(make_plans, name, patch):
    model = build_network(name, make_plans(patch=patch))
    assert not network_spec(name).patch_free and model.divisor_zyx == (4, 4, 4)
    batch = _batch(patch)
    with torch.no_grad():
        assert model.forward_train(batch)["seg_logits"].shape == (2, 3, *patch)
        assert model.forward_infer(torch.rand(1, 2, 12, 8, 16)).shape == (1, 3, 12, 8, 16)


@pytest.mark.parametrize("name", ["resunet3d_up", "hdc"])
@pytest.mark.parametrize("hr, scale", CONFIGS)
def test_patch_free_baseline_shapes(make_plans, name, hr, scale):
    plans = make_plans(hr=hr, scale=scale, guidance=(2, 2, 2))
    model = build_network(name, plans)
    assert network_spec(name).patch_free and list(model.divisor_zyx) == plans.hr_divisor_zyx
    batch = _batch(hr)
    with torch.no_grad():
        out = model.forward_train(batch)
        logits = model.forward_infer(batch["image"])
    lr = tuple(h // s for h, s in zip(hr, scale))
    if name == "resunet3d_up":
        assert out["seg_logits"].shape == out["target"].shape == (2, 3, *lr)
    else:
        assert out["seg_logits"].shape == (2, 3, *hr)
    assert logits.shape == (2, 3, *hr)


def test_resunet3d_up_soft_target_and_upsampled_probabilities(make_plans):
    plans = make_plans(lr_operator="trilinear")
    model = build_network("resunet3d_up", plans).eval()
    batch = _batch((16, 16, 16), batch_size=1)
    with torch.no_grad():
        out = model.forward_train(batch)
        logits = model.forward_infer(batch["image"])
        lr_logits = model.unet(F.interpolate(batch["image"], size=(8, 8, 8), mode="trilinear"))
    expected_target = batch["target"].reshape(1, 3, 8, 2, 8, 2, 8, 2).mean(dim=(3, 5, 7))
    assert torch.allclose(out["target"], expected_target)
    expected = F.interpolate(torch.sigmoid(lr_logits), size=(16, 16, 16), mode="trilinear")
    assert torch.allclose(torch.sigmoid(logits), expected, atol=1e-5)
    assert torch.isfinite(probabilities_to_logits(torch.tensor([0.0, 1.0]))).all()


def test_space_to_depth_round_trip_and_layout():
    x = torch.randn(2, 3, 4, 6, 2)
    packed = space_to_depth(x, (2, 3, 1))
    assert packed.shape == (2, 18, 2, 2, 2)
    # channel c, offset (i, j, k) -> ((c * sz + i) * sy + j) * sx + k
    assert torch.equal(packed[:, (1 * 2 + 1) * 3 + 2, 1, 0, 1], x[:, 1, 1 * 2 + 1, 0 * 3 + 2, 1])
    assert torch.equal(depth_to_space(packed, (2, 3, 1)), x)


@pytest.mark.parametrize("name", ["unet3d", "resunet3d", "vnet", "resunet3d_up", "hdc"])
def test_gradients_reach_every_parameter(make_plans, name):
    plans = make_plans()
    model = build_network(name, plans).train()
    shape = network_spec(name).input_shape(plans)
    batch = _batch(shape)
    loss, terms = SegmentationLoss()(model.forward_train(batch), batch)
    loss.backward()
    assert set(terms) == {"dice", "bce", "seg", "total"}
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        if p.dim() > 1:     # conv biases before an InstanceNorm get a zero gradient by design
            assert p.grad.abs().sum() > 0, pname
