"""The seg head's starting prior of one training run: per region, the share of the training
region it fills, from the fold's own training cases and the network's own sampling.

`plans.training.region_prior_source`:
- `dataset`: the planner's `training.region_prior` (each region's mean share of the HR volume
  over every labelled case of the fingerprint, held-out cases included), the same for every
  network and fold;
- `fold`: computed here from the fold's TRAINING cases only, per network. A patch-free network
  trains on the whole HR volume placed around the brain; a patch-based one on patches centred
  on a tumour voxel for `patch_based.foreground_oversampling` of the samples and anywhere in
  the placement range otherwise, so its patches hold more tumour than the volume does. The
  expected share is computed exactly for the loader's own placement rule (the starts its
  sampling draws from: `data_loader.CachedCaseLoader.start_ranges` and `.foreground_starts`):
  box sums of an integral image over every start the rule can draw, no sampling. Augmentation is left out
  (rotation and mirroring keep a patch's tumour share; scaling moves it a little either way).

The result is recorded with the run (train_summary.json and the checkpoint's `run_info`), since
it differs per fold and per network.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pfseg_pipeline.data.labels import labels_to_regions, region_names
from pfseg_pipeline.errors import UserError
from pfseg_pipeline.fileio import load_npz
from pfseg_pipeline.planners.planner import PRIOR_MAX, PRIOR_MIN
from pfseg_pipeline.plans import Plans
from pfseg_pipeline.training.data_loader import CachedCaseLoader

log = logging.getLogger(__name__)

PRIOR_SOURCES = ("dataset", "fold")


def run_region_prior(plans: Plans, cases_dir: Path, train_ids: Sequence[str], whole_volume: bool,
                     max_shift_zyx: Sequence[int] = (0, 0, 0)) -> dict:
    """{"values": [prior per region] (empty: PyTorch's default init), "source": text} for one run."""
    source = plans.training.region_prior_source
    if source == "dataset":
        return {"values": list(plans.training.region_prior),
                "source": "dataset: plans.json training.region_prior (every labelled case of the "
                          "fingerprint)"}
    if source != "fold":
        raise UserError(f"plans.json: field 'training.region_prior_source' must be one of "
                        f"{', '.join(PRIOR_SOURCES)}, got {source!r}")
    values = fold_region_prior(plans, cases_dir, train_ids, whole_volume, max_shift_zyx)
    kind = "whole HR volumes" if whole_volume else "patches (the loader's foreground oversampling)"
    log.info("region prior from the %d training cases of this fold (%s): %s", len(train_ids), kind, values)
    return {"values": values, "source": f"fold: the {len(train_ids)} training cases of this run, {kind}"}


def fold_region_prior(plans: Plans, cases_dir: Path, case_ids: Sequence[str], whole_volume: bool,
                      max_shift_zyx: Sequence[int] = (0, 0, 0)) -> list[float]:
    """Per output region, the expected share of a training sample's voxels inside the region,
    averaged over `case_ids`, clamped to [PRIOR_MIN, PRIOR_MAX] (the planner's bounds)."""
    shape = list(plans.hr_shape_zyx if whole_volume else plans.patch_based.patch_shape_zyx)
    fraction = 0.0 if whole_volume else plans.patch_based.foreground_oversampling
    loader = CachedCaseLoader(cases_dir, list(case_ids), shape, 1, whole_volume=whole_volume,
                              foreground_fraction=fraction, max_shift_zyx=max_shift_zyx)
    shares = np.zeros((len(case_ids), len(region_names(plans.target))))
    for i, case_id in enumerate(case_ids):
        seg = _cached_seg(Path(cases_dir) / f"{case_id}.npz")
        masks = labels_to_regions(seg, plans.scheme, plans.target)
        uniform = np.stack(np.meshgrid(*(np.arange(lo, hi + 1) for lo, hi in loader.start_ranges(seg)),
                                       indexing="ij"), -1).reshape(-1, 3)
        centred = loader.foreground_starts(case_id, seg)    # the loader's own sample of tumour voxels
        for k, mask in enumerate(masks):
            share = box_sums(mask, uniform, shape).mean()
            if fraction and len(centred):
                share = fraction * box_sums(mask, centred, shape).mean() + (1 - fraction) * share
            shares[i, k] = share / float(np.prod(shape))
    return [float(f"{min(PRIOR_MAX, max(PRIOR_MIN, float(v))):.4g}") for v in shares.mean(axis=0)]


def box_sums(mask: np.ndarray, starts: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Voxels of `mask` (Z, Y, X) inside the box [start, start + shape) for each start (N, 3);
    the box may leave the array (that part counts as empty). Integral image, 8 corners."""
    shape = np.asarray(shape, dtype=np.int64)
    starts = np.asarray(starts, dtype=np.int64).reshape(-1, 3)
    integral = np.zeros(tuple(n + 1 for n in mask.shape), dtype=np.int64)
    integral[1:, 1:, 1:] = mask.astype(np.int64).cumsum(0).cumsum(1).cumsum(2)
    extent = np.asarray(mask.shape)
    lo = np.clip(starts, 0, extent)              # the part of each box inside the array
    hi = np.clip(starts + shape, 0, extent)
    total = np.zeros(len(starts), dtype=np.int64)
    for corner in range(8):
        pick = [(corner >> axis) & 1 for axis in range(3)]
        index = tuple(np.where(pick[a], hi[:, a], lo[:, a]) for a in range(3))
        sign = (-1) ** (3 - sum(pick))
        total += sign * integral[index]
    return total


def _cached_seg(path: Path) -> np.ndarray:
    arrays = load_npz(path, ("seg",))     # a corrupt file: one line naming it
    if "seg" not in arrays:
        raise UserError(f"{path}: no 'seg' array; the region prior needs labelled training cases")
    return arrays["seg"]
