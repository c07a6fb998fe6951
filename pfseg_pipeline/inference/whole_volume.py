"""Whole-volume (patch-free) inference: pad to a valid shape, one forward pass, unpad.

A patch-free network (PFSeg, ResUNet3D-up, HDC) accepts HR shapes that are multiples of
`plans.hr_divisor_zyx` (LR scale x 2**n_pool) per axis. A case is padded, centred, to the next
such multiple, and to at least the planned HR shape where it is smaller (the shape the network
and its guidance patch were trained at). It is never cropped: a brain larger than the planned
shape is predicted whole (PFSeg resizes its guidance features to the bottleneck).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F


def valid_shape(shape_zyx: Sequence[int], divisor_zyx: Sequence[int],
                min_shape_zyx: Sequence[int] | None = None) -> tuple[int, int, int]:
    """The smallest shape >= `shape_zyx` (and >= `min_shape_zyx`) that is a multiple of the divisor.

    >>> valid_shape((150, 170, 140), (32, 32, 32), (128, 192, 160))
    (160, 192, 160)
    """
    out = []
    for axis, (s, d) in enumerate(zip(shape_zyx, divisor_zyx)):
        target = max(int(s), int(min_shape_zyx[axis]) if min_shape_zyx is not None else 1)
        out.append(int(math.ceil(target / d) * d))
    return tuple(out)


def pad_centred(volume: torch.Tensor, shape_zyx: Sequence[int], value: float = 0.0
                ) -> tuple[torch.Tensor, tuple[slice, slice, slice]]:
    """Pad a (B, C, Z, Y, X) volume, centred, to `shape_zyx` (every axis must be <= the target).

    Returns the padded volume and the spatial slices that cut the original back out of it.
    """
    size = tuple(volume.shape[2:])
    if any(s > t for s, t in zip(size, shape_zyx)):
        raise ValueError(f"cannot pad shape {size} to the smaller {tuple(shape_zyx)}")
    before = [(t - s) // 2 for s, t in zip(size, shape_zyx)]
    after = [t - s - b for s, t, b in zip(size, shape_zyx, before)]
    crop = tuple(slice(b, b + s) for b, s in zip(before, size))
    if any(before) or any(after):
        pads = [v for axis in (2, 1, 0) for v in (before[axis], after[axis])]  # F.pad: x first
        volume = F.pad(volume, pads, mode="constant", value=value)
    return volume, crop


def whole_volume_inference(volume: torch.Tensor, forward: Callable[[torch.Tensor], torch.Tensor],
                           divisor_zyx: Sequence[int], min_shape_zyx: Sequence[int] | None = None,
                           activation: str | None = "sigmoid", pad_value: float = 0.0) -> torch.Tensor:
    """One forward pass over a whole volume.

    Parameters
    ----------
    volume : (B, C, Z, Y, X) HR image on the network's grid.
    forward : maps (B, C, Z', Y', X') at a valid shape to HR logits (B, K, Z', Y', X'),
        e.g. a network's `forward_infer`. Called once, under `torch.no_grad()`.
    divisor_zyx : every padded axis is a multiple of this (`plans.hr_divisor_zyx`).
    min_shape_zyx : pad to at least this shape (`plans.hr_shape_zyx`); None for no minimum.
    activation : "sigmoid" returns probabilities, None the raw logits.

    Returns
    -------
    (B, K, Z, Y, X) float32 tensor on the volume's device, cropped back to the input's shape.
    """
    if volume.ndim != 5:
        raise ValueError(f"volume must be (B, C, Z, Y, X), got shape {tuple(volume.shape)}")
    if activation not in ("sigmoid", None):
        raise ValueError(f"activation must be 'sigmoid' or None, got {activation!r}")
    target = valid_shape(volume.shape[2:], divisor_zyx, min_shape_zyx)
    padded, crop = pad_centred(volume, target, pad_value)
    with torch.no_grad():
        out = forward(padded)
    if out.ndim != 5 or tuple(out.shape[2:]) != target:
        raise ValueError(f"network returned shape {tuple(out.shape)} for input {tuple(padded.shape)}")
    out = out[(slice(None), slice(None), *crop)].float()
    return torch.sigmoid(out) if activation == "sigmoid" else out
