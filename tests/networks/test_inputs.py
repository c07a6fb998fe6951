import numpy as np
import pytest
import torch

from pfseg_pipeline.networks.inputs import (
    cut_guidance,
    guidance_mask,
    guidance_origin,
    lr_from_hr,
    textured_origin,
)


def test_lr_avgpool_is_the_mean_of_each_block():
    hr = torch.randn(2, 3, 4, 6, 9)
    lr = lr_from_hr(hr, (2, 3, 3), "avgpool")
    blocks = hr.numpy().reshape(2, 3, 2, 2, 2, 3, 3, 3)
    assert lr.shape == (2, 3, 2, 2, 3)
    np.testing.assert_allclose(lr.numpy(), blocks.mean(axis=(3, 5, 7)), rtol=1e-5, atol=1e-6)


def test_lr_trilinear_shape_and_constant_volume():
    hr = torch.full((1, 2, 8, 6, 4), 3.5)
    lr = lr_from_hr(hr, (2, 3, 1), "trilinear")
    assert lr.shape == (1, 2, 4, 2, 4)
    assert torch.allclose(lr, torch.full_like(lr, 3.5))


def test_lr_scale_one_is_identity_and_bad_inputs_fail():
    hr = torch.randn(1, 1, 4, 4, 4)
    assert lr_from_hr(hr, 1) is hr
    with pytest.raises(ValueError, match="multiple"):
        lr_from_hr(torch.randn(1, 1, 5, 4, 4), 2)
    with pytest.raises(ValueError, match="operator"):
        lr_from_hr(hr, 2, "nearest")


def test_center_origin_and_cut():
    hr = torch.arange(2 * 1 * 8 * 10 * 12, dtype=torch.float32).reshape(2, 1, 8, 10, 12)
    origin = guidance_origin(hr, (4, 4, 6), "center")
    assert origin.dtype == torch.long and origin.tolist() == [[2, 3, 3]] * 2
    patch = cut_guidance(hr, origin, (4, 4, 6))
    assert torch.equal(patch, hr[:, :, 2:6, 3:7, 3:9])


def test_cut_guidance_per_sample_origin_and_channels():
    hr = torch.randn(2, 3, 8, 8, 8)
    origin = torch.tensor([[0, 1, 2], [4, 3, 0]])
    patch = cut_guidance(hr, origin, (4, 5, 3))
    assert patch.shape == (2, 3, 4, 5, 3)
    assert torch.equal(patch[0], hr[0, :, 0:4, 1:6, 2:5])
    assert torch.equal(patch[1], hr[1, :, 4:8, 3:8, 0:3])


def test_guidance_mask_marks_the_patch():
    origin = torch.tensor([[1, 2, 3], [0, 0, 0]])
    mask = guidance_mask((2, 1, 6, 7, 8), origin, (2, 3, 4))
    assert mask.shape == (2, 1, 6, 7, 8) and mask.dtype == torch.float32
    expected = torch.zeros(2, 1, 6, 7, 8)
    expected[0, :, 1:3, 2:5, 3:7] = 1
    expected[1, :, 0:2, 0:3, 0:4] = 1
    assert torch.equal(mask, expected)


def test_guidance_patch_must_fit():
    with pytest.raises(ValueError, match="does not fit"):
        guidance_origin(torch.randn(1, 1, 4, 4, 4), (8, 2, 2))


def _textured_volume(generator, texture_corner):
    """Brain (intensity 10) in z >= 4 with a strong brain/background edge, one noisy block."""
    hr = torch.zeros(1, 2, 32, 32, 32)
    hr[:, :, 4:] = 10 + 0.01 * torch.randn(1, 2, 28, 32, 32, generator=generator)
    z, y, x = texture_corner
    hr[:, 0, z:z + 16, y:y + 16, x:x + 16] += torch.randn(16, 16, 16, generator=generator)
    return hr


def test_textured_guidance_picks_the_high_variance_region():
    generator = torch.Generator().manual_seed(0)
    # The edge windows (z from 0) would win if background voxels counted: 10^2 * 0.75 * 0.25 > 1.
    hr = torch.cat([_textured_volume(generator, (16, 0, 16)), _textured_volume(generator, (8, 16, 0))])
    origin = guidance_origin(hr, (16, 16, 16), "textured")
    assert origin.tolist() == [[16, 0, 16], [8, 16, 0]]


def test_textured_guidance_of_an_empty_volume_is_the_centre():
    hr = torch.zeros(1, 1, 16, 16, 16)
    assert textured_origin(hr, (8, 8, 8)).tolist() == [[4, 4, 4]]
