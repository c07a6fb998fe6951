"""Postprocessing of predicted tumour regions, as chosen on validation and stored with the model.

Two rules, each on or off per region (`evaluation.postprocessing` chooses them on the
cross-validation predictions; `pfseg_find_postprocessing` writes the choice):

- keep the largest connected component of a region (WT, TC, ET; 26-connectivity, as the
  fingerprint counts components). Applied outer region first; a removed part of an inner region
  falls back to the region around it (a stray core speck inside the whole tumour becomes
  edema), so the step changes that region and those inside it, never the ones outside;
- the BraTS small-ET rule: a case whose predicted ET volume (mm^3, on its own grid) is under a
  threshold has no ET; its voxels stay tumour core, i.e. necrosis (label 1 in brats2020 and
  brats2023: the scheme's label of the core outside ET).

Both work on boolean region masks (K, Z, Y, X) in `data.labels.region_names` order, so a label
map is converted with the scheme both ways (`apply_to_labels`). The stored form is
`postprocessing.json` in the results network folder (`POSTPROCESSING_FILE`, versioned); what is
applied is read from it by `load_postprocessing`, every field checked.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from pfseg_pipeline.data.labels import (
    REGION_NAMES,
    LabelScheme,
    labels_to_regions,
    region_names,
    regions_to_labels,
)
from pfseg_pipeline.errors import UserError
from pfseg_pipeline.fileio import read_json

POSTPROCESSING_FILE = "postprocessing.json"
POSTPROCESSING_VERSION = 1
SMALL_ET_REGION, SMALL_ET_FALLBACK = "ET", "TC"   # ET under the threshold stays core (necrosis)
_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)    # 26-neighbourhood: touching corners join


def keep_largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest connected component (26-connectivity) of a boolean mask (Z, Y, X).

    An empty mask stays empty. On a tie every component of the largest size is kept: any rule
    that picks one of them (the first met in C order, the lowest voxel) picks by position, and
    so another component on the same mask in another axis order or direction.

    >>> m = np.zeros((1, 1, 7), bool); m[0, 0, [0, 2, 3, 4]] = True
    >>> keep_largest_component(m)[0, 0].astype(int).tolist()
    [0, 0, 1, 1, 1, 0, 0]
    """
    labelled, n = ndimage.label(np.asarray(mask, dtype=bool), structure=_CONNECTIVITY)
    if n <= 1:
        return labelled > 0
    sizes = np.bincount(labelled.ravel())
    sizes[0] = 0                  # the background is no component (n > 1: the largest has voxels)
    return sizes[labelled] == sizes.max()


def nest(masks: np.ndarray) -> np.ndarray:
    """Each region kept inside the ones before it (WT contains TC contains ET), in place."""
    for k in range(1, masks.shape[0]):
        masks[k] &= masks[k - 1]
    return masks


@dataclass(frozen=True)
class Postprocessing:
    """What to apply to a case's predicted regions.

    Parameters
    ----------
    regions : the model's output regions, `region_names(target)` ("WT", "TC", "ET" or "WT").
    keep_largest : regions whose largest connected component alone is kept.
    small_et_threshold_mm3 : a case whose ET volume is under this has its ET relabelled as
        tumour core (0: off).
    """

    regions: tuple[str, ...]
    keep_largest: tuple[str, ...] = ()
    small_et_threshold_mm3: float = 0.0

    @property
    def is_identity(self) -> bool:
        return not self.keep_largest and not self.small_et_threshold_mm3

    def describe(self) -> str:
        steps = [f"largest component of {r}" for r in self.regions if r in self.keep_largest]
        if self.small_et_threshold_mm3:
            steps.append(f"ET under {self.small_et_threshold_mm3:g} mm^3 relabelled as necrosis")
        return "; ".join(steps) or "none"

    def apply_to_regions(self, masks: np.ndarray, spacing_zyx: Sequence[float]) -> np.ndarray:
        """Boolean region masks (K, Z, Y, X), nested, on a grid of `spacing_zyx` mm -> a new array."""
        masks = nest(np.array(masks, dtype=bool, copy=True))
        if masks.shape[0] != len(self.regions):
            raise ValueError(f"expected {len(self.regions)} region masks, got {masks.shape[0]}")
        for k, region in enumerate(self.regions):
            if region in self.keep_largest:
                masks[k] = keep_largest_component(masks[k])
                nest(masks)
        if self.small_et_threshold_mm3 and SMALL_ET_REGION in self.regions:
            k = self.regions.index(SMALL_ET_REGION)
            if masks[k].sum() * voxel_mm3(spacing_zyx) < self.small_et_threshold_mm3:
                masks[k] = False
        return masks

    def apply_to_labels(self, labels: np.ndarray, scheme: LabelScheme, target: str,
                        spacing_zyx: Sequence[float]) -> np.ndarray:
        """A label map (Z, Y, X) of `scheme` -> the postprocessed label map (uint8)."""
        if self.is_identity:
            return np.asarray(labels, dtype=np.uint8)
        masks = self.apply_to_regions(labels_to_regions(labels, scheme, target), spacing_zyx)
        return regions_to_labels(masks, scheme, target)

    def to_json(self) -> dict[str, Any]:
        return {"version": POSTPROCESSING_VERSION, "regions": list(self.regions),
                "keep_largest_component": [r for r in self.regions if r in self.keep_largest],
                "small_et": {"threshold_mm3": float(self.small_et_threshold_mm3),
                             "relabelled_as": SMALL_ET_FALLBACK}}

    @classmethod
    def from_json(cls, data: Any, source: str = POSTPROCESSING_FILE) -> Postprocessing:
        """Read what to apply from postprocessing.json's content; any problem is one UserError line."""
        def bad(problem: str) -> UserError:
            return UserError(f"{source}: {problem} (re-run pfseg_find_postprocessing, or predict with "
                             "--no-postprocessing)")

        if not isinstance(data, dict):
            raise bad("not a JSON object")
        if data.get("version") != POSTPROCESSING_VERSION:
            raise bad(f"field 'version' must be {POSTPROCESSING_VERSION}, got {data.get('version')!r}")
        regions = data.get("regions")
        if regions not in ([*REGION_NAMES], ["WT"]):
            raise bad(f"field 'regions' must be {list(REGION_NAMES)} or ['WT'], got {regions!r}")
        keep = data.get("keep_largest_component")
        if not isinstance(keep, list) or any(r not in regions for r in keep) or len(set(keep)) != len(keep):
            raise bad(f"field 'keep_largest_component' must list regions of {regions}, got {keep!r}")
        small = data.get("small_et")
        threshold = small.get("threshold_mm3") if isinstance(small, dict) else None
        if (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                or not math.isfinite(threshold) or threshold < 0):
            raise bad(f"field 'small_et.threshold_mm3' must be a number >= 0, got {threshold!r}")
        if threshold and SMALL_ET_REGION not in regions:
            raise bad("field 'small_et.threshold_mm3' must be 0 for a model without an ET region")
        return cls(tuple(regions), tuple(keep), float(threshold))

    def check_target(self, target: str, source: str) -> None:
        """A UserError unless this was chosen for a model with `target`'s regions."""
        if tuple(region_names(target)) != self.regions:
            raise UserError(f"{source}: chosen for regions {list(self.regions)}, but the model predicts "
                            f"{list(region_names(target))} (re-run pfseg_find_postprocessing)")


def voxel_mm3(spacing_zyx: Sequence[float]) -> float:
    return float(np.prod(np.asarray(spacing_zyx, dtype=np.float64)))


def model_postprocessing(model_dir: str | os.PathLike, target: str) -> Postprocessing | None:
    """The model folder's (or unpacked package's) postprocessing.json, or None without one."""
    path = Path(model_dir) / POSTPROCESSING_FILE
    return load_postprocessing(path, target) if path.is_file() else None


def load_postprocessing(path: str | os.PathLike, target: str) -> Postprocessing:
    """postprocessing.json -> `Postprocessing`, checked against the model's target."""
    path = Path(path)
    choice = Postprocessing.from_json(read_json(path), str(path))
    choice.check_target(target, str(path))
    return choice
