"""The augmentation plans reach batchgenerators' transforms as planned, and the loader's margin
around a patch covers the planned rotation and zoom-out."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest

from pfseg_pipeline.plans import AugmentationPlan, named_augmentation
from pfseg_pipeline.training.transforms import augmentation_margin, augmentation_transforms


def _by_type(transforms):
    return [(type(t).__name__, t) for t in transforms]


def test_the_nnunet_plan_reaches_every_transform_with_nnunets_values():
    plan = named_augmentation("nnunet")
    found = _by_type(augmentation_transforms([16, 16, 16], plan))
    assert [name for name, _ in found] == [   # nnU-Net's order
        "SpatialTransform", "GaussianNoiseTransform", "GaussianBlurTransform",
        "BrightnessMultiplicativeTransform", "ContrastAugmentationTransform",
        "SimulateLowResolutionTransform", "GammaTransform", "GammaTransform", "MirrorTransform"]
    t = dict(found[:6])
    spatial = t["SpatialTransform"]
    thirty = math.radians(30)
    for angle in (spatial.angle_x, spatial.angle_y, spatial.angle_z):
        assert angle == pytest.approx((-thirty, thirty))
    assert (spatial.p_rot_per_sample, spatial.scale, spatial.p_scale_per_sample) == (0.2, (0.7, 1.4), 0.2)
    assert spatial.do_elastic_deform is False
    noise = t["GaussianNoiseTransform"]
    assert (noise.noise_variance, noise.p_per_sample) == ((0.0, 0.1), 0.1)
    blur = t["GaussianBlurTransform"]
    assert (blur.blur_sigma, blur.p_per_channel, blur.p_per_sample, blur.different_sigma_per_channel) == \
        ((0.5, 1.0), 0.5, 0.2, True)
    brightness, contrast = t["BrightnessMultiplicativeTransform"], t["ContrastAugmentationTransform"]
    assert (brightness.multiplier_range, brightness.p_per_sample) == ((0.75, 1.25), 0.15)
    assert (contrast.contrast_range, contrast.p_per_sample) == ((0.75, 1.25), 0.15)
    low = t["SimulateLowResolutionTransform"]
    assert (low.zoom_range, low.per_channel) == ((0.5, 1.0), True)
    assert (low.p_per_channel, low.p_per_sample) == (0.5, 0.25)
    assert (low.order_downsample, low.order_upsample) == (0, 3)
    inverted, gamma = found[6][1], found[7][1]
    assert (inverted.invert_image, inverted.p_per_sample, inverted.gamma_range) == (True, 0.1, (0.7, 1.5))
    assert (gamma.invert_image, gamma.p_per_sample) == (False, 0.3)
    assert gamma.per_channel is True and gamma.retain_stats is True
    assert found[8][1].axes == (0, 1, 2)


def test_the_default_plan_keeps_its_transforms_and_their_order():
    """The new transforms are left out at probability 0: the default pipeline draws the random
    numbers it drew before they existed."""
    found = _by_type(augmentation_transforms([16, 16, 16], AugmentationPlan()))
    assert [name for name, _ in found] == [
        "SpatialTransform", "GaussianNoiseTransform", "BrightnessMultiplicativeTransform",
        "ContrastAugmentationTransform", "GammaTransform", "MirrorTransform"]
    spatial = found[0][1]
    assert spatial.angle_x == pytest.approx((-math.radians(15), math.radians(15)))
    assert spatial.scale == (0.85, 1.25) and found[4][1].per_channel is False


def test_the_margin_of_a_single_in_plane_rotation_is_the_rotated_box():
    """Rotating a 20 x 20 in-plane square by 30 deg about z: half-extent 10 (cos 30 + sin 30) =
    13.66, so 4 voxels per side, plus one for the interpolation; z is untouched."""
    plan = dataclasses.replace(AugmentationPlan(), rotation_deg_zyx=[30.0, 0.0, 0.0], p_scale=0.0)
    assert augmentation_margin([8, 20, 20], plan) == (0, 5, 5)
    zoom = dataclasses.replace(AugmentationPlan(), p_rotation=0.0, scale_range=[0.7, 1.4])
    assert augmentation_margin([8, 20, 20], zoom) == (3, 5, 5)     # half-extents 5.6 and 14
    assert augmentation_margin([8, 20, 20], dataclasses.replace(zoom, p_scale=0.0)) == (0, 0, 0)
    strong, default = named_augmentation("nnunet"), AugmentationPlan()
    assert all(s > d for s, d in zip(augmentation_margin([16, 24, 24], strong),
                                      augmentation_margin([16, 24, 24], default)))


@pytest.mark.parametrize("plan_name", ["default", "nnunet"])
def test_a_region_with_the_margin_fills_every_rotated_and_zoomed_out_patch(plan_name):
    """The worst cases batchgenerators can draw (every corner of the angle box, the largest
    zoom-out) applied to a region of ones with the margin: the patch holds no zero."""
    from batchgenerators.transforms.spatial_transforms import SpatialTransform

    plan = named_augmentation(plan_name)
    patch = (12, 20, 16)
    margin = augmentation_margin(patch, plan)
    region = tuple(p + 2 * m for p, m in zip(patch, margin))
    data = np.ones((1, 1, *region), dtype=np.float32)
    top = plan.scale_range[1]
    for signs in itertools.product((-1, 1), repeat=3):
        angles = [(s * math.radians(a),) * 2 for s, a in zip(signs, plan.rotation_deg_zyx)]
        transform = SpatialTransform(list(patch), do_elastic_deform=False, do_rotation=True,
                                     angle_x=angles[0], angle_y=angles[1], angle_z=angles[2],
                                     do_scale=True, scale=(top, top),
                                     border_mode_data="constant", border_cval_data=0, order_data=1,
                                     random_crop=False)
        out = transform(data=data.copy())["data"]
        assert out.shape[2:] == patch and out.min() > 0.999, (plan_name, signs, out.min())
