"""Gaussian sliding window: weights, window layout, and agreement with plain forward passes."""

import pytest
import torch

from pfseg_pipeline.inference.sliding_window import (
    gaussian_importance_map,
    sliding_window_inference,
    window_starts,
)
from pfseg_pipeline.inference.whole_volume import whole_volume_inference


def test_gaussian_map_is_symmetric_positive_and_peaks_at_the_centre():
    w = gaussian_importance_map((6, 9, 8))
    assert w.shape == (6, 9, 8) and w.dtype == torch.float32
    assert float(w.max()) == pytest.approx(1.0, abs=1e-6)
    assert bool((w > 0).all())
    for axis in range(3):
        assert torch.allclose(w, torch.flip(w, [axis]))
    assert float(w[3, 4, 4]) > float(w[0, 4, 4]) > float(w[0, 0, 0])
    # sigma = patch / 8: one sigma from the centre along z (odd size 9 puts the centre on a voxel)
    w = gaussian_importance_map((9, 1, 1), sigma_scale=1 / 8)
    sigma = 9 / 8
    expected = torch.exp(torch.tensor(-0.5 * (2 / sigma) ** 2))
    assert float(w[6, 0, 0]) == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.parametrize("size,patch,step", [(20, 8, 0.5), (8, 8, 0.5), (5, 8, 0.5), (155, 64, 0.5),
                                             (100, 30, 0.25), (33, 16, 1.0)])
def test_window_starts_cover_the_axis_with_the_requested_overlap(size, patch, step):
    starts = window_starts(size, patch, step)
    assert starts[0] == 0
    assert starts[-1] == max(0, size - patch)
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert all(0 < g <= step * patch for g in gaps)


def test_a_volume_of_one_patch_gives_the_plain_forward_result():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(2, 4, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv3d(4, 3, 3, padding=1)).eval()
    volume = torch.randn(2, 2, 8, 12, 10)
    with torch.no_grad():
        logits = net(volume)
    raw = sliding_window_inference(volume, net, (8, 12, 10), activation=None)
    probs = sliding_window_inference(volume, net, (8, 12, 10))
    torch.testing.assert_close(raw, logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(probs, torch.sigmoid(logits), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(19, 23, 17), (5, 30, 9)])  # second: smaller than the patch on z and x
def test_pointwise_network_matches_the_whole_volume_everywhere(shape):
    torch.manual_seed(1)
    net = torch.nn.Conv3d(3, 2, 1).eval()  # a linear stand-in: every window predicts the same per voxel
    volume = torch.randn(1, 3, *shape)
    windows = sliding_window_inference(volume, net, (8, 8, 8), step=0.5, tile_batch=3)
    whole = whole_volume_inference(volume, net, divisor_zyx=(1, 1, 1))
    assert windows.shape == (1, 2, *shape)
    torch.testing.assert_close(windows, whole, rtol=1e-5, atol=1e-6)


def test_overlapping_windows_are_averaged_with_their_weights():
    # two windows along x (size 12, patch 8, step 0.5 -> starts 0 and 4); each predicts a constant
    calls = []

    def constant_per_window(tiles):
        out = torch.zeros(tiles.shape[0], 1, *tiles.shape[2:])
        for i in range(tiles.shape[0]):
            calls.append(1)
            out[i] = float(len(calls))  # first window 1.0, second 2.0
        return out

    volume = torch.zeros(1, 1, 4, 4, 12)
    flat = sliding_window_inference(volume, constant_per_window, (4, 4, 8), gaussian=False,
                                    activation=None, tile_batch=1)
    assert torch.allclose(flat[..., :4], torch.tensor(1.0))
    assert torch.allclose(flat[..., 4:8], torch.tensor(1.5))  # equal weights: the plain mean
    assert torch.allclose(flat[..., 8:], torch.tensor(2.0))
    calls.clear()
    weighted = sliding_window_inference(volume, constant_per_window, (4, 4, 8), gaussian=True,
                                        activation=None, tile_batch=2)
    w = gaussian_importance_map((4, 4, 8))[0, 0]  # profile along x
    x = 5  # voxel 5: offset 5 in window 0, offset 1 in window 1
    expected = (1.0 * w[5] + 2.0 * w[1]) / (w[5] + w[1])
    assert float(weighted[0, 0, 0, 0, x]) == pytest.approx(float(expected), rel=1e-5)


def test_bad_arguments_are_refused():
    net = torch.nn.Conv3d(1, 1, 1)
    with pytest.raises(ValueError):
        sliding_window_inference(torch.zeros(1, 8, 8, 8), net, (4, 4, 4))
    with pytest.raises(ValueError):
        sliding_window_inference(torch.zeros(1, 1, 8, 8, 8), net, (4, 4, 4), step=0)
    with pytest.raises(ValueError):
        sliding_window_inference(torch.zeros(1, 1, 8, 8, 8), lambda t: t[..., :2], (4, 4, 4))
