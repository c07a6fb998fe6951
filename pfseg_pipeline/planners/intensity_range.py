"""The dataset's brain-intensity range after normalisation, per modality, from the fingerprint.

`plans.training.aux_intensity = "bounded"` maps images and SR output through it to about [0, 1]
inside the auxiliary losses (networks/losses.py), the scale the paper's loss weights were meant
for. For z-scored data the range of case c is ((p0.5_c - mean_c) / std_c, (p99.5_c - mean_c) /
std_c) with the case's own brain statistics (the ones preprocessing z-scores with); the dataset's
is the median over cases. Min-max normalised data (the paper preset) is [0, 1] already.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

REASON = ("per modality, the median over cases of the normalised brain intensities' p0.5 and p99.5 "
          "(fingerprint): what aux_intensity 'bounded' maps to [0, 1] inside SR, guidance, TEL and SSL")


def normalised_brain_range(fingerprint: dict, modalities: Sequence[str], normalization: str
                           ) -> dict[str, list[float]]:
    """{modality: [low, high]} of the brain intensities as the cache holds them (normalised).

    >>> fp = {"cases": [{"intensity": {"t2": {"p0.5": 10.0, "p99.5": 90.0, "mean": 50.0, "std": 20.0}}}]}
    >>> normalised_brain_range(fp, ["t2"], "zscore")
    {'t2': [-2.0, 2.0]}
    """
    if normalization == "minmax":
        return {m: [0.0, 1.0] for m in modalities}
    out = {}
    for m in modalities:
        stats = [c["intensity"][m] for c in fingerprint.get("cases", [])
                 if m in (c.get("intensity") or {}) and c["intensity"][m].get("std", 0) > 0]
        if not stats:
            continue   # a modality without brain voxels anywhere: no range (bounded is then refused)
        low = np.median([(s["p0.5"] - s["mean"]) / s["std"] for s in stats])
        high = np.median([(s["p99.5"] - s["mean"]) / s["std"] for s in stats])
        out[m] = [float(f"{low:.4g}"), float(f"{high:.4g}")]
    return out
