"""What a case looks like before normalisation: the raw intensities and contrasts inside the brain.

The fingerprint records it for every training case and prediction computes it for every new
case (`preprocessing.case.preprocess_case`), both through `case_appearance`, so the two are
comparable (`inference.distribution`):

- `intensity`: per modality, percentiles 0.5 / 50 / 99.5, mean and std of the raw values
  inside the brain (the non-zero voxels of any modality);
- `correlation`: the Pearson correlation of every pair of modalities over the brain's voxels:
  scale-free (a scanner's gain does not move it), it is the contrast signature of the
  sequences (CSF dark on T1, bright on T2; edema bright on T2 and FLAIR), which swapped or
  mislabelled modalities change;
- `brain_extent_mm_zyx`: the brain box in mm, and the grid's `spacing_zyx` and `shape_zyx`.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from typing import Any

import numpy as np

INTENSITY_PERCENTILES = (0.5, 50.0, 99.5)
# Statistics from at most this many brain voxels per case (a fixed, seeded sample):
# percentiles of 10^5 samples are within a fraction of a percent of the full-volume ones.
MAX_INTENSITY_SAMPLES = 100_000


def brain_sample(brain: np.ndarray) -> np.ndarray | None:
    """Sorted indices (into the brain's voxels) of the fixed sample; None to use every voxel."""
    n_brain = int(brain.sum())
    if n_brain <= MAX_INTENSITY_SAMPLES:
        return None
    return np.sort(np.random.default_rng(0).choice(n_brain, MAX_INTENSITY_SAMPLES, replace=False))


def intensity_stats(values: np.ndarray) -> dict[str, float]:
    """Percentiles 0.5 / 50 / 99.5, mean and std of 1D values (zeros when empty)."""
    if values.size == 0:
        return {"p0.5": 0.0, "p50": 0.0, "p99.5": 0.0, "mean": 0.0, "std": 0.0}
    p = np.percentile(values, INTENSITY_PERCENTILES)
    return {"p0.5": float(p[0]), "p50": float(p[1]), "p99.5": float(p[2]),
            "mean": float(values.mean(dtype=np.float64)), "std": float(values.std(dtype=np.float64))}


def pair_key(a: str, b: str) -> str:
    """The JSON key of a modality pair: 't1|t2'."""
    return f"{a}|{b}"


def case_appearance(images: np.ndarray, modalities: Sequence[str], spacing_zyx: Sequence[float],
                    brain: np.ndarray | None = None) -> dict[str, Any]:
    """Raw intensity statistics, modality correlations and brain extent of one case.

    Parameters
    ----------
    images : (C, Z, Y, X) raw (not normalised) modalities, zero outside the brain.
    modalities : the C modality names.
    spacing_zyx : voxel size in mm.
    brain : (Z, Y, X) bool, the voxels non-zero in any modality, when the caller has it already.

    Returns a JSON-ready dict (see the module docstring); a correlation is None when a
    modality is constant inside the brain.
    """
    if brain is None:
        brain = np.any(images != 0, axis=0)
    picks = brain_sample(brain)
    samples = np.empty((len(modalities), int(brain.sum()) if picks is None else picks.size), np.float64)
    for c in range(len(modalities)):
        values = images[c][brain]
        samples[c] = values if picks is None else values[picks]
    intensity = {m: intensity_stats(samples[c]) for c, m in enumerate(modalities)}
    correlation = {}
    for (i, a), (j, b) in combinations(enumerate(modalities), 2):
        with np.errstate(invalid="ignore", divide="ignore"):
            r = float(np.corrcoef(samples[i], samples[j])[0, 1]) if samples.shape[1] > 1 else float("nan")
        correlation[pair_key(a, b)] = r if np.isfinite(r) else None
    hits = [np.flatnonzero(np.any(brain, axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    extent = [float((h[-1] - h[0] + 1) * s) if h.size else 0.0 for h, s in zip(hits, spacing_zyx)]
    return {"intensity": intensity, "correlation": correlation, "brain_extent_mm_zyx": extent,
            "spacing_zyx": [float(s) for s in spacing_zyx], "shape_zyx": list(images.shape[1:])}
