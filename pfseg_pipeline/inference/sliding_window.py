"""Gaussian-weighted sliding-window inference for the patch-based baselines.

A network trained on patches sees a whole volume as a grid of overlapping windows; each
window's prediction is weighted by a Gaussian centred on the window (voxels near a window's
border saw less context, so they count less) and the weighted predictions are averaged.

What is averaged: sigmoid PROBABILITIES by default (`activation="sigmoid"`), the usual choice
(nnU-Net averages softmax/sigmoid outputs too): averaging logits would let one over-confident
window dominate its neighbours. `activation=None` averages the raw outputs instead.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import torch

from pfseg_pipeline.inference.whole_volume import pad_centred

Predictor = Callable[[torch.Tensor], torch.Tensor]


def gaussian_importance_map(patch_zyx: Sequence[int], sigma_scale: float = 1 / 8,
                            device: torch.device | str | None = None,
                            dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Weights (Z, Y, X) of a window: a Gaussian centred on the patch, maximum 1.

    The standard deviation per axis is `sigma_scale * patch size` (1/8, nnU-Net's choice: the
    window centre dominates, its border still counts a little). The centre is at (p - 1) / 2,
    so the map is exactly symmetric under mirroring (what mirror TTA needs). Weights are
    floored at the smallest positive value of the map: no voxel of a window gets zero weight,
    so a voxel covered by border regions only is still defined.

    >>> w = gaussian_importance_map((8, 8, 8))
    >>> w.shape, float(w.max()) <= 1.0, bool((w > 0).all())
    (torch.Size([8, 8, 8]), True, True)
    """
    if len(patch_zyx) != 3 or any(int(p) < 1 for p in patch_zyx):
        raise ValueError(f"patch_zyx must be three positive sizes, got {tuple(patch_zyx)}")
    if sigma_scale <= 0:
        raise ValueError(f"sigma_scale must be positive, got {sigma_scale}")
    profiles = []
    for p in patch_zyx:
        p = int(p)
        coords = torch.arange(p, dtype=torch.float64) - (p - 1) / 2
        sigma = sigma_scale * p
        profiles.append(torch.exp(-0.5 * (coords / sigma) ** 2))
    weights = profiles[0][:, None, None] * profiles[1][None, :, None] * profiles[2][None, None, :]
    weights = weights / weights.max()
    weights = weights.to(dtype)
    smallest = weights[weights > 0].min()
    weights = torch.clamp(weights, min=float(smallest))
    return weights.to(device) if device is not None else weights


def window_starts(size: int, patch: int, step: float) -> list[int]:
    """Start indices along one axis: windows at most `step * patch` apart, first at 0, last at
    `size - patch`, evenly spread (so the layout is symmetric under mirroring)."""
    if size <= patch:
        return [0]
    stride = max(step * patch, 1e-8)
    n = math.ceil((size - patch) / stride) + 1
    span = size - patch
    return sorted({round(i * span / (n - 1)) for i in range(n)})


def sliding_window_inference(volume: torch.Tensor, predictor: Predictor, patch_zyx: Sequence[int],
                             step: float = 0.5, tile_batch: int = 2, gaussian: bool = True,
                             sigma_scale: float = 1 / 8, activation: str | None = "sigmoid",
                             pad_value: float = 0.0,
                             accumulate_device: torch.device | str | None = None) -> torch.Tensor:
    """Predict a volume window by window and blend the windows.

    Parameters
    ----------
    volume : (B, C, Z, Y, X) tensor, the image on the network's grid. An axis shorter than the
        patch is padded with `pad_value` (centred; 0 is the normalised background) and the
        padding is cropped from the result.
    predictor : callable mapping a batch of windows (N, C, pz, py, px) to raw outputs
        (N, K, pz, py, px), e.g. a network's `forward_infer`. Called under `torch.no_grad()`
        with at most `tile_batch` windows at a time (on the volume's device).
    patch_zyx : window size (z, y, x) in voxels.
    step : distance between neighbouring windows as a fraction of the patch (0.5: half
        overlap, the paper's and nnU-Net's setting; 1: no overlap).
    gaussian : weight each window by `gaussian_importance_map(patch_zyx, sigma_scale)`;
        False gives every voxel of a window the same weight.
    activation : "sigmoid" averages probabilities (default); None averages raw outputs.
    accumulate_device : where the (B, K, Z, Y, X) sums live (default: the volume's device);
        the CPU saves GPU memory for very large volumes.

    Returns
    -------
    (B, K, Z, Y, X) float32 tensor on `accumulate_device`: the weighted average over windows of
    the probabilities (or raw outputs when `activation` is None).

    Examples
    --------
    >>> net = torch.nn.Conv3d(1, 2, 1)
    >>> out = sliding_window_inference(torch.zeros(1, 1, 20, 20, 20), net, (8, 8, 8))
    >>> tuple(out.shape)
    (1, 2, 20, 20, 20)
    """
    if volume.ndim != 5:
        raise ValueError(f"volume must be (B, C, Z, Y, X), got shape {tuple(volume.shape)}")
    patch = tuple(int(p) for p in patch_zyx)
    if len(patch) != 3 or min(patch) < 1:
        raise ValueError(f"patch_zyx must be three positive sizes, got {tuple(patch_zyx)}")
    if not 0 < step <= 1:
        raise ValueError(f"step must be in (0, 1], got {step}")
    if activation not in ("sigmoid", None):
        raise ValueError(f"activation must be 'sigmoid' or None, got {activation!r}")
    tile_batch = max(1, int(tile_batch))
    accumulate_device = torch.device(accumulate_device) if accumulate_device is not None \
        else volume.device

    target = [max(int(s), p) for s, p in zip(volume.shape[2:], patch)]
    padded, crop = pad_centred(volume, target, pad_value)
    b, _, *size = padded.shape
    starts = [window_starts(s, p, step) for s, p in zip(size, patch)]
    windows = [(i, tuple(slice(s, s + p) for s, p in zip(corner, patch)))
               for i in range(b) for corner in itertools.product(*starts)]

    if gaussian:
        weight = gaussian_importance_map(patch, sigma_scale, device=accumulate_device)
    else:
        weight = torch.ones(patch, dtype=torch.float32, device=accumulate_device)
    summed: torch.Tensor | None = None
    weight_sum = torch.zeros(size, dtype=torch.float32, device=accumulate_device)

    with torch.no_grad():
        for first in range(0, len(windows), tile_batch):
            group = windows[first:first + tile_batch]
            tiles = torch.stack([padded[i][(slice(None), *sl)] for i, sl in group])
            out = predictor(tiles)
            if out.ndim != 5 or tuple(out.shape[2:]) != patch or out.shape[0] != len(group):
                raise ValueError(f"predictor returned shape {tuple(out.shape)} for windows "
                                 f"{tuple(tiles.shape)}; expected (N, K, {', '.join(map(str, patch))})")
            out = out.float()
            if activation == "sigmoid":
                out = torch.sigmoid(out)
            out = out.to(accumulate_device)
            if summed is None:
                summed = torch.zeros((b, out.shape[1], *size), dtype=torch.float32,
                                     device=accumulate_device)
            for (i, sl), tile_out in zip(group, out):
                summed[(i, slice(None), *sl)] += tile_out * weight
            # the weight map is the same for every sample: count it once, from sample 0's windows
            for i, sl in group:
                if i == 0:
                    weight_sum[sl] += weight
    result = summed / weight_sum
    return result[(slice(None), slice(None), *crop)]
