"""Deep supervision: nnU-Net's weights, the heads' shapes per network, area-pooled targets, the
heads are training-only (never run by forward_infer, outside the inference parameter count), and
the builder option travels in the checkpoint's network_options."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from pfseg_pipeline.networks.deep_supervision import (
    deep_supervision_weights,
    pool_target,
    supervised_levels,
)
from pfseg_pipeline.networks.losses import segmentation_loss, supervised_segmentation_loss
from pfseg_pipeline.networks.registry import (
    NETWORKS,
    build_network,
    count_parameters,
    example_batch,
    inference_parameter_count,
    network_spec,
    training_options,
)
from pfseg_pipeline.networks.step import build_step

WIDTHS = (4, 8, 16, 32)      # three poolings: decoder stages at /4, /2, /1


def _plans(make_plans, scale=(2, 2, 2), hr=(32, 32, 32), deep_supervision=True):
    plans = make_plans(hr=hr, scale=scale, widths=WIDTHS, guidance=(4, 4, 4), patch=(16, 16, 16))
    plans.training = dataclasses.replace(plans.training, deep_supervision=deep_supervision)
    return plans


def test_weights_are_nnunets_with_the_coarsest_output_dropped():
    """nnU-Net: w_i = 1 / 2**i over every decoder output, the coarsest set to 0, normalised."""
    for n_decoder_outputs in (3, 4, 5):
        nnunet = np.array([1 / 2 ** i for i in range(n_decoder_outputs)])
        nnunet[-1] = 0
        nnunet = nnunet / nnunet.sum()
        assert deep_supervision_weights(n_decoder_outputs - 1) == pytest.approx(nnunet[:-1].tolist())
    assert deep_supervision_weights(2) == pytest.approx([2 / 3, 1 / 3])
    assert deep_supervision_weights(1) == [1.0]
    assert supervised_levels(3, False) == [1] and supervised_levels(3, True) == [0, 1]
    assert supervised_levels(4, False) == [1, 2] and supervised_levels(2, False) == []


@pytest.mark.parametrize("network, scale, hr, expected", [
    ("resunet3d", (2, 2, 2), (32, 32, 32), [(8, 8, 8)]),     # patch 16: stage /2 (the /4 one: weight 0)
    ("unet3d", (2, 2, 2), (32, 32, 32), [(8, 8, 8)]),
    ("vnet", (2, 2, 2), (32, 32, 32), [(8, 8, 8)]),
    ("pfseg", (2, 2, 2), (32, 32, 32), [(16, 16, 16), (8, 8, 8)]),     # LR 16 and LR / 2
    ("pfseg", (1, 1, 1), (16, 16, 16), [(8, 8, 8)]),                   # scale 1: LR = HR is the final output
    ("pfseg", (1, 2, 2), (16, 32, 32), [(16, 16, 16), (8, 8, 8)]),     # an LR -> HR stage on y, x
    ("resunet3d_up", (2, 2, 2), (32, 32, 32), [(8, 8, 8)]),            # at LR (16): LR / 2
    ("hdc", (2, 2, 2), (32, 32, 32), [(16, 16, 16)]),                  # LR / 2, depth-to-space x2
])
def test_the_heads_sit_on_the_coarser_stages(make_plans, network, scale, hr, expected):
    plans = _plans(make_plans, scale, hr)
    options = training_options(network, plans)
    assert options["deep_supervision"] is True
    model = build_network(network, plans, **options)
    batch = example_batch(network, plans, 2, options=options)
    outputs = model.forward_train(batch)
    deep = outputs["seg_logits_ds"]
    assert [tuple(x.shape[2:]) for x in deep] == expected
    assert all(x.shape[:2] == (2, plans.out_channels) for x in deep)
    target = outputs.get("target", batch["target"])
    for x in deep:   # each coarse grid divides the target's: area pooling applies
        assert tuple(pool_target(target, x.shape[2:]).shape[2:]) == tuple(x.shape[2:])


@pytest.mark.parametrize("network", sorted(NETWORKS))
def test_the_heads_are_training_only(make_plans, network):
    plans = _plans(make_plans)
    plain_plans = _plans(make_plans, deep_supervision=False)
    plain = build_network(network, plans, **training_options(network, plain_plans))
    model = build_network(network, plans, **training_options(network, plans))
    heads = [m for m in network_spec(network).training_only_modules(model) if m is not None]
    head_params = sum(p.numel() for m in heads for p in m.parameters()
                      if type(m).__name__ == "DeepSupervisionHeads")
    assert head_params > 0
    assert count_parameters(model) == count_parameters(plain) + head_params
    assert inference_parameter_count(model) == inference_parameter_count(plain)
    # forward_infer never runs them, and gives what the same weights without heads give
    calls = []
    for m in model.modules():
        if type(m).__name__ == "DeepSupervisionHeads":
            m.register_forward_hook(lambda *a: calls.append(1))
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if "ds_heads" not in k})
    image = example_batch(network, plans, 1)["image"]
    with torch.no_grad():
        torch.testing.assert_close(model.eval().forward_infer(image), plain.eval().forward_infer(image))
    assert calls == []


def test_area_pooling_keeps_the_covered_fraction():
    target = torch.zeros(1, 1, 4, 4, 4)
    target[0, 0, 0, 0, :2] = 1
    target[0, 0, 1, 1, 1] = 1                            # 3 of the first 2x2x2 block's 8 voxels
    pooled = pool_target(target, (2, 2, 2))
    assert pooled[0, 0, 0, 0, 0].item() == pytest.approx(3 / 8)
    assert pooled.sum().item() == pytest.approx(3 / 8)
    assert pool_target(target, (4, 2, 2)).shape[2:] == (4, 2, 2)   # per-axis factors (1, 2, 2)
    with pytest.raises(ValueError, match="not a multiple"):
        pool_target(target, (3, 3, 3))


def test_the_loss_is_the_weighted_sum_over_outputs_against_pooled_targets():
    torch.manual_seed(1)
    target = (torch.rand(2, 3, 8, 8, 8) > 0.6).float()
    logits = torch.randn(2, 3, 8, 8, 8)
    coarse = [torch.randn(2, 3, 4, 4, 4), torch.randn(2, 3, 2, 2, 2)]
    seg, dice, bce = supervised_segmentation_loss(logits, target, coarse)
    parts = [sum(segmentation_loss(logits, target))]
    parts += [sum(segmentation_loss(c, torch.nn.functional.avg_pool3d(target, k, k)))
              for c, k in zip(coarse, (2, 4))]
    expected = (4 * parts[0] + 2 * parts[1] + parts[2]) / 7
    assert seg.item() == pytest.approx(expected.item(), rel=1e-6)
    assert (dice + bce).item() == pytest.approx(parts[0].item())         # the log's terms: the final output's
    assert supervised_segmentation_loss(logits, target)[0].item() == pytest.approx(parts[0].item())


@pytest.mark.parametrize("network", ["pfseg", "resunet3d"])
def test_the_one_step_trains_the_heads_and_the_checkpoint_options_rebuild_them(make_plans, network):
    plans = _plans(make_plans)
    step = build_step(network, plans, 1)
    assert step.model.options.get("deep_supervision") is True
    total, terms = step()
    assert torch.isfinite(total)
    heads = network_spec(network).training_only_modules(step.model)[-1]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in heads.parameters())
    # what inference does with a checkpoint: build from its network_options, load strictly
    rebuilt = build_network(network, plans, **step.model.options)
    rebuilt.load_state_dict(step.model.state_dict())
    # an older checkpoint has no option: built without heads, its weights load as before
    old = build_network(network, plans, **network_spec(network).options("full"))
    assert "deep_supervision" not in old.options and not any("ds_heads" in k for k in old.state_dict())


def test_the_region_prior_starts_every_head(make_plans):
    plans = _plans(make_plans)
    model = build_network("pfseg", plans, **training_options("pfseg", plans))
    model.init_output_prior([0.2, 0.05, 0.01])
    expected = torch.logit(torch.tensor([0.2, 0.05, 0.01]))
    for head in [model.output_head(), *model.ds_heads.heads]:
        torch.testing.assert_close(head.bias.detach(), expected)


@pytest.mark.parametrize("network", sorted(NETWORKS))
def test_a_packaged_network_leaves_its_heads_behind(make_plans, network):
    """Inference-only weights (`model_package.weights`) hold no deep-supervision head, whether the
    spec names the heads on the network itself or on its inner U-Net (a dotted path)."""
    from pfseg_pipeline.model_package.weights import inference_network

    plans = _plans(make_plans)
    model = build_network(network, plans, **training_options(network, plans))
    expected = inference_parameter_count(model)
    inference_network(model)
    assert not any(type(m).__name__ == "DeepSupervisionHeads" for m in model.modules())
    assert not any("ds_heads" in k for k in model.state_dict())
    assert count_parameters(model) == expected
