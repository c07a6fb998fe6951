"""Intensity normalisation per modality.

- `zscore`: (v - mean) / std over the brain voxels (the union non-zero mask); the background
  stays exactly 0, so the network sees where the brain ends (as nnU-Net does for BraTS).
- `minmax`: per-volume (v - min) / (max - min) to [0, 1], the paper's protocol.
Each returns the statistics it used, recorded in the case's json.
"""

from __future__ import annotations

import numpy as np

# A modality that is constant inside the brain (a blank scan) would divide by ~0: clamp the std
# so the result stays finite (it becomes all zeros, which is what the scan carries).
MIN_STD = 1e-8


def zscore_in_brain(volume: np.ndarray, brain: np.ndarray) -> tuple[np.ndarray, dict]:
    """Z-score a (Z, Y, X) volume over the `brain` mask; voxels outside stay 0.

    >>> v = np.array([[[0., 1., 3.]]]); out, stats = zscore_in_brain(v, v > 0)
    >>> out.tolist(), stats["mean"]
    ([[[0.0, -1.0, 1.0]]], 2.0)
    """
    volume = np.asarray(volume, dtype=np.float32)
    brain = np.asarray(brain, dtype=bool)
    out = np.zeros_like(volume, dtype=np.float32)
    if not brain.any():
        return out, {"kind": "zscore", "mean": 0.0, "std": 1.0, "brain_voxels": 0}
    values = volume[brain].astype(np.float64)
    mean = float(values.mean())
    std = float(max(values.std(), MIN_STD))
    out[brain] = ((values - mean) / std).astype(np.float32)
    return out, {"kind": "zscore", "mean": mean, "std": std, "brain_voxels": int(values.size)}


def minmax(volume: np.ndarray) -> tuple[np.ndarray, dict]:
    """Min-max a (Z, Y, X) volume to [0, 1] over all its voxels (the paper's protocol).

    >>> minmax(np.array([[[2., 4., 6.]]]))[0].tolist()
    [[[0.0, 0.5, 1.0]]]
    """
    volume = np.asarray(volume, dtype=np.float32)
    lo, hi = float(volume.min()), float(volume.max())
    scale = hi - lo if hi > lo else 1.0
    out = ((volume - lo) / scale).astype(np.float32)
    return out, {"kind": "minmax", "min": lo, "max": hi}


def normalise_channels(images: np.ndarray, brain: np.ndarray, method: str,
                       modalities: list[str]) -> tuple[np.ndarray, dict]:
    """Normalise each channel of (C, Z, Y, X) in place of a copy; stats by modality name."""
    if method not in ("zscore", "minmax"):
        raise ValueError(f"unknown normalisation {method!r}")
    out = np.empty(images.shape, dtype=np.float32)
    stats = {}
    for c, modality in enumerate(modalities):
        if method == "zscore":
            out[c], stats[modality] = zscore_in_brain(images[c], brain)
        else:
            out[c], stats[modality] = minmax(images[c])
    return out, stats
