import pytest
import torch

from pfseg_pipeline.errors import UserError
from pfseg_pipeline.networks.registry import (
    NETWORKS,
    build_network,
    count_parameters,
    example_batch,
    inference_parameter_count,
)


def test_registry_names():
    assert set(NETWORKS) == {"pfseg", "resunet3d", "unet3d", "vnet", "hdc", "resunet3d_up"}
    assert {n for n, spec in NETWORKS.items() if spec.patch_free} == {"pfseg", "resunet3d_up", "hdc"}


def test_unknown_network_lists_the_names(make_plans):
    with pytest.raises(UserError, match="unknown network 'unet2d'.*pfseg.*resunet3d_up"):
        build_network("unet2d", make_plans())


def test_unknown_option_is_a_user_error(make_plans):
    with pytest.raises(UserError, match="use_sr"):
        build_network("pfseg", make_plans(), use_tel=True)
    with pytest.raises(UserError, match=r"takes the options \['deep_supervision'\], got \['use_sr'\]"):
        build_network("unet3d", make_plans(), use_sr=False)


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_example_batch_feeds_forward_train(make_plans, name):
    plans = make_plans(patch=(8, 12, 4), location="textured")
    batch = example_batch(name, plans, 2, dtype=torch.float32)
    shape = tuple(NETWORKS[name].input_shape(plans))
    assert batch["image"].shape == (2, 2, *shape) and batch["target"].shape == (2, 3, *shape)
    assert set(batch["target"].unique().tolist()) <= {0.0, 1.0}
    if name == "pfseg":
        assert batch["guidance_patch"].shape == (2, 2, 4, 4, 4)
        assert batch["guidance_origin_zyx"].shape == (2, 3)
    model = build_network(name, plans)
    assert model.network_name == name
    with torch.no_grad():
        out = model.forward_train(batch)
    assert out["seg_logits"].shape[:2] == (2, 3)


def test_example_batch_and_forward_under_fake_tensors(make_plans):
    from torch._subclasses.fake_tensor import FakeTensorMode

    plans = make_plans(location="textured")
    with FakeTensorMode():
        model = build_network("pfseg", plans)
        batch = example_batch("pfseg", plans, 2)
        out = model.forward_train({"image": batch["image"], "target": batch["target"]})
        out["seg_logits"].sum().backward()
    assert out["seg_logits"].shape == (2, 3, 16, 16, 16)


def test_parameter_counts(make_plans):
    model = build_network("pfseg", make_plans())
    total, inference = count_parameters(model), inference_parameter_count(model)
    assert inference == total - count_parameters(model.sr_decoder)
    baseline = build_network("resunet3d", make_plans())
    assert inference_parameter_count(baseline) == count_parameters(baseline)


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_output_prior_sets_each_regions_starting_probability(make_plans, name):
    """With the head's weights zeroed, every voxel's probability is exactly the region's prior:
    the bias holds logit(prior), channel by channel (HDC: each region's space-to-depth block)."""
    plans = make_plans(scale=(2, 1, 2))
    prior = [0.2, 0.05, 0.001]
    model = build_network(name, plans)
    model.init_output_prior(prior)
    with torch.no_grad():
        model.output_head().weight.zero_()
        probabilities = torch.sigmoid(model.forward_infer(torch.randn(1, 2, 16, 16, 16)).double())
    assert probabilities.shape == (1, 3, 16, 16, 16)
    for k, p in enumerate(prior):
        torch.testing.assert_close(probabilities[0, k], torch.full_like(probabilities[0, k], p),
                                   rtol=1e-4, atol=1e-7)


def test_output_prior_rejects_a_wrong_count_or_range(make_plans):
    model = build_network("pfseg", make_plans())
    before = model.output_head().bias.detach().clone()
    with pytest.raises(ValueError, match="3 channels"):
        model.init_output_prior([0.1, 0.1])
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        model.init_output_prior([0.1, 0.0, 0.1])
    assert torch.equal(model.output_head().bias, before)


def test_no_module_but_the_registry_names_a_network():
    """What a network is (patch-free, its loss, its inputs) is its spec's to say: no other module of
    the package compares with or lists a network's name (docstrings aside)."""
    import ast
    from pathlib import Path

    package = Path(__file__).resolve().parents[2] / "pfseg_pipeline"
    named = []
    for path in sorted(package.rglob("*.py")):
        if path.relative_to(package).as_posix() == "networks/registry.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}
        named += [f"{path.relative_to(package)}:{node.lineno}: {node.value!r}" for node in ast.walk(tree)
                  if isinstance(node, ast.Constant) and node.value in NETWORKS and id(node) not in docstrings]
    assert named == []
