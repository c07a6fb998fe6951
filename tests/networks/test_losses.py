import itertools
import math

import pytest
import torch

from pfseg_pipeline.networks.losses import (
    ABLATIONS,
    PFSegLoss,
    SegmentationLoss,
    guidance_loss,
    segmentation_loss,
    soft_dice_loss,
    spatial_similarity_loss,
    sr_loss,
    target_enhanced_loss,
)
from pfseg_pipeline.plans import TrainingPlan

WEIGHTS = TrainingPlan().loss_weights  # the paper's: seg 1, sr 0.5, guidance 0.5, tel 0.5, ssl 0.5


def _logits_for(probabilities):
    p = torch.as_tensor(probabilities, dtype=torch.float64)
    return torch.log(p) - torch.log1p(-p)


# ---- segmentation -----------------------------------------------------------------------------
def test_dice_hand_computed():
    # two samples, one channel, two voxels
    s = torch.tensor([[[0.5, 0.25]], [[0.8, 0.1]]], dtype=torch.float64).view(2, 1, 2, 1, 1)
    y = torch.tensor([[[1.0, 0.0]], [[1.0, 1.0]]], dtype=torch.float64).view(2, 1, 2, 1, 1)
    first = 1 - (2 * 0.5 + 1) / (0.75 + 1 + 1)
    second = 1 - (2 * 0.9 + 1) / (0.9 + 2 + 1)
    loss = soft_dice_loss(_logits_for(s), y)
    assert loss.item() == pytest.approx((first + second) / 2, rel=1e-6)


def test_dice_is_zero_for_a_perfect_prediction():
    y = (torch.rand(2, 3, 4, 4, 4) > 0.5).float()
    assert soft_dice_loss(40 * (2 * y - 1), y).item() == pytest.approx(0, abs=1e-6)


def test_dice_has_the_factor_two():
    # the target has 8 voxels, the prediction covers 4 of them and nothing else
    y = torch.zeros(1, 1, 4, 4, 1)
    y[0, 0, :2] = 1
    s = torch.zeros_like(y)
    s[0, 0, 0] = 1
    loss = soft_dice_loss(40 * (2 * s - 1), y).item()
    assert loss == pytest.approx(1 - (2 * 4 + 1) / (4 + 8 + 1), abs=1e-6)       # 4/13
    assert loss != pytest.approx(1 - (4 + 1) / (4 + 8 + 1), abs=1e-3)           # without the 2


def test_bce_hand_computed():
    logits = torch.tensor([0.0, 2.0, -1.0, 0.5]).view(1, 1, 4, 1, 1)
    y = torch.tensor([1.0, 0.0, 0.0, 1.0]).view(1, 1, 4, 1, 1)

    def sig(v):
        return 1 / (1 + math.exp(-v))

    expected = -sum(t * math.log(sig(v)) + (1 - t) * math.log(1 - sig(v))
                    for v, t in zip([0.0, 2.0, -1.0, 0.5], [1, 0, 0, 1])) / 4
    assert segmentation_loss(logits, y)[1].item() == pytest.approx(expected, rel=1e-6)


# ---- SR, guidance, TEL ------------------------------------------------------------------------
def test_sr_and_guidance_losses_with_the_patch_fraction():
    x = torch.rand(2, 2, 4, 6, 8)
    r = x + 1.0                       # error 1 everywhere
    mask = torch.zeros(2, 1, 4, 6, 8)
    mask[:, :, 1:3, 2:5, 0:4] = 1     # a 2x3x4 patch in a 4x6x8 volume
    assert sr_loss(r, x).item() == pytest.approx(1.0)
    assert guidance_loss(r, x, mask).item() == pytest.approx(24 / 192)


def test_tel_hand_computed():
    s = torch.rand(2, 1, 2, 3, 2, dtype=torch.float64)
    y = (torch.rand(2, 1, 2, 3, 2) > 0.5).double()
    r = torch.rand(2, 3, 2, 3, 2, dtype=torch.float64)
    x = torch.rand(2, 3, 2, 3, 2, dtype=torch.float64)
    total, count = 0.0, 0
    for b, c, z, yy, xx in itertools.product(range(2), range(3), range(2), range(3), range(2)):
        d = s[b, 0, z, yy, xx] * r[b, c, z, yy, xx] - y[b, 0, z, yy, xx] * x[b, c, z, yy, xx]
        total += float(d) ** 2
        count += 1
    assert target_enhanced_loss(s, r, y, x).item() == pytest.approx(total / count, rel=1e-6)


# ---- SSL ------------------------------------------------------------------------------------------
def _pool_slow(volume, k):
    """Floor average pooling of a (Z, Y, X) tensor by loops."""
    z, y, x = (n // k for n in volume.shape)
    out = torch.zeros(z, y, x, dtype=torch.float64)
    for i, j, m in itertools.product(range(z), range(y), range(x)):
        out[i, j, m] = volume[i * k:(i + 1) * k, j * k:(j + 1) * k, m * k:(m + 1) * k].mean()
    return out


def _ssl_slow(s, r, y, x, k):
    per_sample = []
    for b in range(s.shape[0]):
        per_channel = []
        for c in range(r.shape[1]):
            ps, pr = _pool_slow(s[b, 0], k), _pool_slow(r[b, c], k)
            pyx = _pool_slow(y[b, 0] * x[b, c], k)
            f = (ps * pr).flatten().tolist()
            g = pyx.flatten().tolist()
            total = sum(abs(g[i] * g[j] - f[i] * f[j]) for i in range(len(f)) for j in range(len(f)))
            h_p, w_p = ps.shape[1], ps.shape[2]
            per_channel.append(total / (h_p * w_p) ** 2)
        per_sample.append(sum(per_channel) / len(per_channel))
    return sum(per_sample) / len(per_sample)


def test_ssl_equals_a_slow_loop_implementation():
    shape = (5, 7, 6)                 # pooled 2x3x3 by k=2, remainders dropped
    s = torch.rand(2, 1, *shape, dtype=torch.float64)
    y = (torch.rand(2, 1, *shape) > 0.5).double()
    r = torch.rand(2, 2, *shape, dtype=torch.float64)
    x = torch.rand(2, 2, *shape, dtype=torch.float64)
    expected = _ssl_slow(s, r, y, x, 2)
    assert spatial_similarity_loss(s, r, y, x, pool=2).item() == pytest.approx(expected, rel=1e-5)


def test_ssl_is_a_batch_mean():
    s, y = torch.rand(1, 1, 8, 8, 8), (torch.rand(1, 1, 8, 8, 8) > 0.5).float()
    r, x = torch.rand(1, 2, 8, 8, 8), torch.rand(1, 2, 8, 8, 8)
    one = spatial_similarity_loss(s, r, y, x, pool=2)
    four = spatial_similarity_loss(*(t.repeat(4, 1, 1, 1, 1) for t in (s, r, y, x)), pool=2)
    assert four.item() == pytest.approx(one.item(), rel=1e-5)


# ---- combined losses ----------------------------------------------------------------------------
def _outputs_and_batch(with_sr=True, with_mask=True):
    torch.manual_seed(0)
    batch = {"image": torch.rand(2, 2, 8, 8, 8), "target": (torch.rand(2, 3, 8, 8, 8) > 0.5).float()}
    outputs = {"seg_logits": torch.randn(2, 3, 8, 8, 8, requires_grad=True)}
    if with_sr:
        outputs["sr"] = torch.rand(2, 2, 8, 8, 8, requires_grad=True)
    if with_mask:
        mask = torch.zeros(2, 1, 8, 8, 8)
        mask[:, :, 2:6, 2:6, 2:6] = 1
        outputs["guidance_mask"] = mask
    return outputs, batch


def test_pfseg_loss_full_combines_every_term():
    outputs, batch = _outputs_and_batch()
    total, terms = PFSegLoss(WEIGHTS, "full", ssl_pool=2)(outputs, batch)
    logits, sr, image, target = outputs["seg_logits"], outputs["sr"], batch["image"], batch["target"]
    s_wt, y_wt = torch.sigmoid(logits[:, :1]), target[:, :1]
    dice, bce = segmentation_loss(logits, target)
    expected = {
        "seg": dice + bce,
        "sr": sr_loss(sr, image),
        "guidance": guidance_loss(sr, image, outputs["guidance_mask"]),
        "tel": target_enhanced_loss(s_wt, sr, y_wt, image),
        "ssl": spatial_similarity_loss(s_wt, sr, y_wt, image, 2),
    }
    for name, value in expected.items():
        assert terms[name] == pytest.approx(value.item(), rel=1e-5), name
    paper = (expected["seg"] + 0.5 * (expected["sr"] + expected["guidance"])
             + 0.5 * (expected["tel"] + expected["ssl"]))
    assert total.item() == pytest.approx(paper.item(), rel=1e-5)
    assert terms["total"] == pytest.approx(total.item())
    total.backward()
    assert outputs["sr"].grad is not None


@pytest.mark.parametrize("ablation, terms", [
    ("us", {"seg"}), ("sr", {"seg", "sr"}), ("tel", {"seg", "sr", "tel"}),
    ("ssl", {"seg", "sr", "tel", "ssl"}), ("full", {"seg", "sr", "tel", "ssl", "guidance"}),
])
def test_ablation_rows_switch_terms(ablation, terms):
    outputs, batch = _outputs_and_batch()
    _, logged = PFSegLoss(WEIGHTS, ablation, ssl_pool=2)(outputs, batch)
    assert set(logged) - {"dice", "bce", "total"} == terms
    assert ABLATIONS[ablation].terms == terms


def test_ablation_builder_options():
    assert ABLATIONS["us"].network_options() == {"use_sr": False, "use_sgm": False}
    for row in ("sr", "tel", "ssl"):
        assert ABLATIONS[row].network_options() == {"use_sr": True, "use_sgm": False}
    assert ABLATIONS["full"].network_options() == {"use_sr": True, "use_sgm": True}


def test_terms_needing_sr_are_skipped_when_absent():
    outputs, batch = _outputs_and_batch(with_sr=False, with_mask=False)
    total, logged = PFSegLoss(WEIGHTS, "full", ssl_pool=2)(outputs, batch)
    assert set(logged) == {"dice", "bce", "seg", "total"}
    assert total.item() == pytest.approx(logged["seg"])


def test_loss_weights_and_bad_names():
    outputs, batch = _outputs_and_batch()
    _, base = PFSegLoss(WEIGHTS, "sr", ssl_pool=10)(outputs, batch)
    total, _ = PFSegLoss({**WEIGHTS, "sr": 2.0}, "sr", ssl_pool=10)(outputs, batch)
    assert total.item() == pytest.approx(base["seg"] + 2.0 * base["sr"], rel=1e-5)
    with pytest.raises(ValueError, match="ablation"):
        PFSegLoss(WEIGHTS, "sgm", ssl_pool=10)
    with pytest.raises(ValueError, match="weight"):
        PFSegLoss({**WEIGHTS, "dice": 1.0}, "full", ssl_pool=10)
    with pytest.raises(ValueError, match="missing loss weight"):
        PFSegLoss({"seg": 1.0}, "full", ssl_pool=10)


def test_segmentation_loss_prefers_the_network_target():
    batch = {"image": torch.rand(1, 1, 4, 4, 4), "target": torch.ones(1, 1, 4, 4, 4)}
    lr_target = torch.zeros(1, 1, 2, 2, 2)
    logits = torch.full((1, 1, 2, 2, 2), -40.0)
    _, logged = SegmentationLoss()({"seg_logits": logits, "target": lr_target}, batch)
    assert logged["dice"] == pytest.approx(0, abs=1e-6) and logged["bce"] == pytest.approx(0, abs=1e-6)
    _, logged = SegmentationLoss()({"seg_logits": torch.full((1, 1, 4, 4, 4), 40.0)}, batch)
    assert logged["total"] == pytest.approx(0, abs=1e-6)


# ---- the auxiliary terms' intensity scale ------------------------------------------------------
def test_bounded_intensity_maps_x_and_r_alike_on_known_values():
    """Two channels with ranges [-2, 4] and [0, 2]: x = 1 everywhere, r = x + 0.6. SR and
    guidance see the difference / span (the shift cancels); TEL and SSL see the mapped values
    themselves. With y = 0 and s = 1 (WT), TEL = mean(r'^2): channel 0 r' = (1.6 + 2) / 6 = 0.6,
    channel 1 r' = 1.6 / 2 = 0.8."""
    shape = (1, 2, 4, 4, 4)
    image = torch.ones(shape)
    sr = image + 0.6
    target = torch.zeros(1, 3, 4, 4, 4)
    logits = torch.full((1, 3, 4, 4, 4), 30.0)           # s = sigmoid(30) = 1 to float precision
    mask = torch.zeros(1, 1, 4, 4, 4)
    mask[..., :2, :, :] = 1                               # half the volume is the guidance region
    outputs = {"seg_logits": logits, "sr": sr, "guidance_mask": mask}
    batch = {"image": image, "target": target}
    as_is = PFSegLoss(WEIGHTS, "full", ssl_pool=2).compute(outputs, batch)[1]
    bounded = PFSegLoss(WEIGHTS, "full", ssl_pool=2, intensity_range=[(-2.0, 4.0), (0.0, 2.0)]
                        ).compute(outputs, batch)[1]
    assert as_is["sr"].item() == pytest.approx(0.36)
    assert bounded["sr"].item() == pytest.approx((0.1 ** 2 + 0.3 ** 2) / 2)        # (0.6/6)^2, (0.6/2)^2
    assert bounded["guidance"].item() == pytest.approx(0.5 * (0.1 ** 2 + 0.3 ** 2) / 2)
    assert as_is["tel"].item() == pytest.approx(1.6 ** 2)
    assert bounded["tel"].item() == pytest.approx((0.6 ** 2 + 0.8 ** 2) / 2)
    # SSL with y = 0: sum over the Gram matrix of f = pooled s * pooled r' (8 positions, 2x2 pooled
    # in-plane) = 64 r'^2 / (2 * 2)^2 per channel
    assert bounded["ssl"].item() == pytest.approx((64 * 0.6 ** 2 + 64 * 0.8 ** 2) / 16 / 2, rel=1e-5)
    assert bounded["seg"].item() == pytest.approx(as_is["seg"].item())              # untouched
    # SR stays an identity task: r = x costs nothing under the map
    same = PFSegLoss(WEIGHTS, "full", 2, [(-2.0, 4.0), (0.0, 2.0)]).compute(
        {**outputs, "sr": image.clone()}, batch)[1]
    assert same["sr"].item() == same["guidance"].item() == 0.0


def test_the_registry_builds_the_bounded_loss_from_the_plans(make_plans):
    from pfseg_pipeline.errors import UserError
    from pfseg_pipeline.networks.registry import network_spec

    plans = make_plans(hr=(16, 16, 16), patch=(8, 8, 8))      # modalities t1, t2
    plans.training.aux_intensity_range = {"t2": [-1.5, 5.0], "t1": [-2.0, 3.0], "flair": [0.0, 1.0]}
    assert network_spec("pfseg").make_loss(plans, "full").intensity_range is None       # as_is
    plans.training.aux_intensity = "bounded"
    plans.validate()
    assert network_spec("pfseg").make_loss(plans, "full").intensity_range == [(-2.0, 3.0), (-1.5, 5.0)]
    del plans.training.aux_intensity_range["t1"]
    with pytest.raises(UserError, match="aux_intensity_range' must give"):
        plans.validate()


def test_the_planned_range_is_the_median_normalised_brain_percentile():
    from pfseg_pipeline.planners.intensity_range import normalised_brain_range

    def case(p05, p995, mean, std):
        return {"intensity": {"t1": {"p0.5": p05, "p99.5": p995, "mean": mean, "std": std}}}

    fp = {"cases": [case(10, 90, 50, 20), case(0, 100, 40, 10), case(5, 50, 20, 5)]}
    # z-scored p0.5: -2, -4, -3 -> median -3; p99.5: 2, 6, 6 -> 6
    assert normalised_brain_range(fp, ["t1"], "zscore") == {"t1": [-3.0, 6.0]}
    assert normalised_brain_range(fp, ["t1"], "minmax") == {"t1": [0.0, 1.0]}
