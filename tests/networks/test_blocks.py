import pytest
import torch
from torch import nn

from pfseg_pipeline.networks.blocks import (
    DoubleConvBlock,
    ResidualBlock,
    UpStage,
    make_up_stage,
    norm3d,
    up_stage_geometry,
)


def test_residual_block_shape_and_parts():
    block = ResidualBlock(3, 5)
    out = block(torch.randn(2, 3, 4, 6, 5))
    assert out.shape == (2, 5, 4, 6, 5)
    convs = [m for m in block.modules() if isinstance(m, nn.Conv3d)]
    assert [c.kernel_size for c in convs] == [(3, 3, 3), (3, 3, 3), (1, 1, 1)]
    norms = [m for m in block.modules() if isinstance(m, nn.InstanceNorm3d)]
    assert len(norms) == 3 and not any(n.affine for n in norms)
    # LeakyReLU(0.01) at the end: negative outputs are exactly 0.01 times something negative
    assert block.activation.negative_slope == 0.01


def test_residual_block_parameter_count():
    # conv3 (3->5) + conv3 (5->5) + 1x1 shortcut (3->5), each with bias; no norm parameters
    expected = (27 * 3 * 5 + 5) + (27 * 5 * 5 + 5) + (3 * 5 + 5)
    assert sum(p.numel() for p in ResidualBlock(3, 5).parameters()) == expected


def test_double_conv_block_shape():
    assert DoubleConvBlock(2, 4)(torch.randn(1, 2, 4, 4, 4)).shape == (1, 4, 4, 4, 4)


def test_up_stage_geometry_per_axis():
    assert up_stage_geometry((2, 3, 1)) == ((4, 3, 1), (2, 3, 1), (1, 0, 0))
    with pytest.raises(ValueError):
        up_stage_geometry((0, 2, 2))


@pytest.mark.parametrize("scale", [(2, 2, 2), (1, 2, 2), (3, 3, 3), (2, 3, 1), (4, 1, 2)])
def test_up_stage_scales_each_axis_exactly(scale):
    x = torch.randn(1, 3, 2, 3, 4)
    out = UpStage(3, 2, scale)(x)
    assert out.shape == (1, 2, 2 * scale[0], 3 * scale[1], 4 * scale[2])


def test_no_up_stage_at_scale_one():
    assert make_up_stage(4, 4, (1, 1, 1)) is None
    assert isinstance(make_up_stage(4, 4, (1, 1, 2)), UpStage)


def test_unknown_norm_is_rejected():
    with pytest.raises(ValueError, match="network.norm"):
        norm3d("layer", 4)
