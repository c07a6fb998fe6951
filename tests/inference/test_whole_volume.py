"""Whole-volume inference: padding to a valid shape, never cropping, one forward pass."""

import pytest
import torch

from pfseg_pipeline.inference.whole_volume import pad_centred, valid_shape, whole_volume_inference


@pytest.mark.parametrize("shape,divisor,minimum,expected", [
    ((150, 170, 140), (32, 32, 32), (128, 192, 160), (160, 192, 160)),  # larger than planned on z
    ((130, 200, 170), (32, 32, 32), None, (160, 224, 192)),
    ((64, 64, 64), (16, 32, 32), (64, 64, 64), (64, 64, 64)),
    ((10, 12, 9), (8, 8, 8), (16, 16, 16), (16, 16, 16)),                  # smaller: the planned shape
])
def test_valid_shape(shape, divisor, minimum, expected):
    assert valid_shape(shape, divisor, minimum) == expected


def test_pad_centred_round_trip():
    volume = torch.arange(2 * 3 * 5 * 7, dtype=torch.float32).reshape(1, 2, 3, 5, 7)
    padded, crop = pad_centred(volume, (8, 8, 8), value=-1.0)
    assert padded.shape == (1, 2, 8, 8, 8)
    assert torch.equal(padded[(slice(None), slice(None), *crop)], volume)
    assert float(padded[0, 0, 0, 0, 0]) == -1.0
    assert crop == (slice(2, 5), slice(1, 6), slice(0, 7))  # centred; odd surplus after
    with pytest.raises(ValueError):
        pad_centred(volume, (2, 8, 8))


def test_one_forward_at_a_valid_shape_and_nothing_cropped():
    seen = []

    def forward(x):
        seen.append(tuple(x.shape))
        return torch.cat([x[:, :1] * 2.0, -x[:, 1:2]], dim=1)

    volume = torch.randn(1, 2, 37, 20, 9)  # z larger than the planned 16
    logits = whole_volume_inference(volume, forward, divisor_zyx=(8, 8, 8), min_shape_zyx=(16, 16, 16),
                                    activation=None)
    assert seen == [(1, 2, 40, 24, 16)]
    torch.testing.assert_close(logits[:, 0], volume[:, 0] * 2.0)
    torch.testing.assert_close(logits[:, 1], -volume[:, 1])
    probs = whole_volume_inference(volume, forward, (8, 8, 8), (16, 16, 16))
    torch.testing.assert_close(probs, torch.sigmoid(logits))
