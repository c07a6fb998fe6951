"""nnU-Net's summary.json structure, beside ours, so scripts written for nnU-Net read our results.

nnU-Net v2 (`nnunetv2.evaluation.evaluate_predictions`) writes::

    {"metric_per_case": [{"prediction_file": PATH, "reference_file": PATH,
                          "metrics": {KEY: {"Dice", "IoU", "TP", "FP", "FN", "TN", "n_pred", "n_ref"}}}],
     "mean": {KEY: {same metrics, the NaN-skipping mean over cases}},
     "foreground_mean": {same metrics, the mean over the KEYs of "mean"}}

where a KEY is a region as the tuple of its label values written as text, "(1, 2, 4)" for
BraTS 2020's whole tumour (its `load_summary_json` turns it back into a tuple). Dice and IoU
are NaN (written as the JSON extension NaN, as nnU-Net writes it) when both masks are empty:
nnU-Net's convention, unlike our own `per_case` entries (Dice 1, the BraTS convention).
`region_keys` maps our region names to those keys.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from pfseg_pipeline.data.labels import LabelScheme, region_names

COUNT_METRICS = ("Dice", "IoU", "TP", "FP", "FN", "TN", "n_pred", "n_ref")


def region_key(values: Sequence[int]) -> str:
    """nnU-Net's text key of a region: its label values as a Python tuple, '(1, 2, 4)', '(4,)'."""
    return str(tuple(int(v) for v in values))


def region_keys(scheme: LabelScheme, target: str) -> dict[str, str]:
    """Our region name -> nnU-Net's key, for the regions a target scores."""
    return {name: region_key(scheme.regions[name]) for name in region_names(target)}


def confusion(reference: np.ndarray, prediction: np.ndarray) -> dict[str, float | int]:
    """nnU-Net's per-region counts of two boolean masks, with its Dice and IoU (NaN when both are empty)."""
    tp = int(np.count_nonzero(reference & prediction))
    fp = int(np.count_nonzero(~reference & prediction))
    fn = int(np.count_nonzero(reference & ~prediction))
    tn = int(reference.size - tp - fp - fn)
    denominator = tp + fp + fn
    return {"Dice": 2 * tp / (2 * tp + fp + fn) if denominator else math.nan,
            "IoU": tp / denominator if denominator else math.nan,
            "TP": tp, "FP": fp, "FN": fn, "TN": tn, "n_pred": tp + fp, "n_ref": tp + fn}


def case_counts(ref_regions: np.ndarray, pred_regions: np.ndarray,
                target: str) -> dict[str, dict[str, float | int]]:
    """Region name -> `confusion` of the reference's and the prediction's region masks (K, Z, Y, X)
    (`data.labels.labels_to_regions` of the two label maps)."""
    return {name: confusion(ref_regions[k], pred_regions[k]) for k, name in enumerate(region_names(target))}


def case_entry(reference_file: str, prediction_file: str | None, counts: dict[str, dict],
               keys: dict[str, str]) -> dict:
    """One `metric_per_case` entry (`prediction_file` is None for a missing prediction)."""
    return {"prediction_file": prediction_file, "reference_file": reference_file,
            "metrics": {keys[name]: dict(values) for name, values in counts.items()}}


def nnunet_structure(entries: Sequence[dict], keys: Sequence[str]) -> dict:
    """`metric_per_case`, `mean` and `foreground_mean` over per-case entries, as nnU-Net computes them."""
    mean = {}
    for key in keys:
        mean[key] = {}
        for metric in COUNT_METRICS:
            values = np.array([e["metrics"][key][metric] for e in entries], dtype=np.float64)
            finite = values[~np.isnan(values)]
            mean[key][metric] = float(finite.mean()) if finite.size else math.nan
    foreground = {metric: float(np.mean([mean[k][metric] for k in keys])) if keys else math.nan
                  for metric in COUNT_METRICS}
    return {"metric_per_case": list(entries), "mean": mean, "foreground_mean": foreground}
