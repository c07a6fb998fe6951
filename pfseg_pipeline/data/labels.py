"""BraTS label schemes and the tumour regions built from them (the one place that knows them).

Regions (nested, BraTS convention): WT (whole tumour), TC (tumour core), ET (enhancing tumour).
A scheme maps each region to the label values it contains, and gives the order in which
regions are painted back into a label map (`regions_class_order`: outer region first, each
later one overwriting the inner part), as nnU-Net's region-based training does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pfseg_pipeline.errors import UserError

REGION_NAMES = ("WT", "TC", "ET")
TARGETS = ("regions", "wt")


@dataclass(frozen=True)
class LabelScheme:
    name: str
    labels: dict[str, int]                   # label name -> value (background 0 not listed)
    regions: dict[str, tuple[int, ...]]      # region name -> label values inside it
    regions_class_order: tuple[int, ...]     # label value painted for each region, in order

    @property
    def values(self) -> tuple[int, ...]:
        """Every valid label value, background included."""
        return (0, *sorted(self.labels.values()))

    def to_json(self) -> dict:
        return {"name": self.name, "labels": dict(self.labels),
                "regions": {k: list(v) for k, v in self.regions.items()},
                "regions_class_order": list(self.regions_class_order)}

    @classmethod
    def from_json(cls, d: dict) -> LabelScheme:
        try:
            scheme = cls(str(d["name"]), {str(k): int(v) for k, v in d["labels"].items()},
                         {str(k): tuple(int(x) for x in v) for k, v in d["regions"].items()},
                         tuple(int(x) for x in d["regions_class_order"]))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise UserError(f"label scheme: malformed ({type(exc).__name__}: {exc})") from exc
        if len(scheme.regions_class_order) != len(scheme.regions):
            raise UserError("label scheme: regions_class_order must have one value per region")
        return scheme


BRATS2020 = LabelScheme(
    name="brats2020",
    labels={"NCR/NET": 1, "ED": 2, "ET": 4},
    regions={"WT": (1, 2, 4), "TC": (1, 4), "ET": (4,)},
    regions_class_order=(2, 1, 4),
)
BRATS2023 = LabelScheme(
    name="brats2023",
    labels={"NETC": 1, "SNFH": 2, "ET": 3},
    regions={"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)},
    regions_class_order=(2, 1, 3),
)
# The Medical Segmentation Decathlon's BrainTumour task (Task01; nnU-Net's Dataset001): 1 edema,
# 2 non-enhancing tumour, 3 enhancing tumour.
MSD = LabelScheme(
    name="msd",
    labels={"edema": 1, "non-enhancing tumor": 2, "enhancing tumour": 3},
    regions={"WT": (1, 2, 3), "TC": (2, 3), "ET": (3,)},
    regions_class_order=(1, 2, 3),
)
SCHEMES = {s.name: s for s in (BRATS2020, BRATS2023, MSD)}


def get_scheme(name: str) -> LabelScheme:
    try:
        return SCHEMES[name]
    except KeyError:
        raise UserError(f"unknown label scheme {name!r} (choose from {', '.join(SCHEMES)})") from None


def region_names(target: str) -> tuple[str, ...]:
    """Output channels for a target: ('WT', 'TC', 'ET') for `regions`, ('WT',) for `wt`."""
    if target == "regions":
        return REGION_NAMES
    if target == "wt":
        return ("WT",)
    raise UserError(f"unknown target {target!r} (choose from {', '.join(TARGETS)})")


def labels_to_regions(seg: np.ndarray, scheme: LabelScheme, target: str = "regions") -> np.ndarray:
    """Label map (Z, Y, X) -> boolean region masks (K, Z, Y, X) in the order of `region_names`."""
    return np.stack([np.isin(seg, scheme.regions[name]) for name in region_names(target)])


def regions_to_labels(masks: np.ndarray, scheme: LabelScheme, target: str = "regions") -> np.ndarray:
    """Boolean region masks (K, Z, Y, X) -> uint8 label map.

    Regions are painted outer to inner with `regions_class_order`, each kept inside the ones
    before it (WT contains TC contains ET, as BraTS defines them). Independent sigmoids can mark
    a voxel TC but not WT; painting it would add tumour that the WT channel did not predict (an
    undertrained TC channel would then inflate the written whole tumour), so it stays outside:
    the written WT is exactly the WT channel. For the `wt` target the whole tumour is written
    as 1 (binary, the paper's protocol).
    """
    masks = np.asarray(masks, dtype=bool)
    names = region_names(target)
    if masks.shape[0] != len(names):
        raise ValueError(f"expected {len(names)} region channels, got {masks.shape[0]}")
    out = np.zeros(masks.shape[1:], dtype=np.uint8)
    if target == "wt":
        out[masks[0]] = 1
        return out
    inside = np.ones(masks.shape[1:], dtype=bool)
    for mask, value in zip(masks, scheme.regions_class_order):
        inside &= mask
        out[inside] = value
    return out


def check_label_values(seg: np.ndarray, scheme: LabelScheme) -> list[int]:
    """Label values present in `seg` that the scheme does not declare (empty when all valid)."""
    present = np.unique(seg)
    return [int(v) for v in present if int(v) not in scheme.values]
