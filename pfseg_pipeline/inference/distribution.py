"""Is a new case like the training cases? Its raw appearance held against the training fingerprint.

A network trained on one kind of scan fails quietly on another: modalities swapped or
mislabelled, a CT, a scan of a much coarser resolution, an image already normalised elsewhere.
Before the network runs, each case's raw appearance (`data.appearance`, computed while it is
preprocessed) is compared with the training cases' (the fingerprint.json that training copies
into the model folder). The ranges are those of the training cases, widened as each rule
says; a case outside any of them gets one warning line and is flagged in the prediction
summary (timings.json). Nothing is refused: the prediction is still written.

Rules (training range [lo, hi] over the training cases):
- spacing per axis outside [lo / 1.2, hi * 1.2];
- brain extent (mm) per axis outside [lo / 1.3, hi * 1.3];
- per modality, the median raw intensity in the brain outside [lo / 4, hi * 4];
- negative intensities (0.5th percentile below zero) when no training case had any;
- per pair of modalities, the correlation in the brain outside [lo - 0.25, hi + 0.25].
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pfseg_pipeline.fileio import read_json

log = logging.getLogger(__name__)

FINGERPRINT_FILE = "fingerprint.json"
# Resampling to the target spacing absorbs small differences; beyond 20 % the network sees
# structures at a scale no training case had (a 5 mm scan for a 4 mm model: 1.25).
SPACING_FACTOR = 1.2
# Heads and skull-stripping differ by some tens of percent; a field of view 30 % outside every
# training brain is a different kind of image (a whole head, a partial scan, another organ).
EXTENT_FACTOR = 1.3
# Scanners and sites differ in raw gain by a factor of a few; a median four times outside the
# training range is another kind of image (CT in HU, a normalised volume).
INTENSITY_FACTOR = 4.0
# Correlations are scale-free; held-out cases of the same protocol stay within about 0.15 of
# the training range, a swap of two modalities moves several pairs by 0.4 or more.
CORRELATION_MARGIN = 0.25
MAX_REASONS_SHOWN = 4   # the warning line stays one readable line; the summary lists them all


@dataclass
class TrainingDistribution:
    """Ranges of the training cases' raw appearance (from fingerprint.json)."""

    n_cases: int
    spacing_zyx: list[tuple[float, float]]
    extent_mm_zyx: list[tuple[float, float]]
    median_intensity: dict[str, tuple[float, float]]
    negative_intensities: dict[str, bool]             # whether any training case had them
    correlation: dict[str, tuple[float, float]] = field(default_factory=dict)

    @classmethod
    def from_fingerprint(cls, fingerprint: dict[str, Any]) -> TrainingDistribution:
        """Ranges over the fingerprint's cases (`planners.fingerprint`); a fingerprint written
        before correlations were recorded gives no correlation ranges."""
        cases = fingerprint["cases"]
        modalities = list(fingerprint["modalities"])

        def span(values) -> tuple[float, float]:
            values = [v for v in values if v is not None]
            return (float(min(values)), float(max(values))) if values else (float("nan"), float("nan"))

        spacing = [span(c["spacing_zyx"][a] for c in cases) for a in range(3)]
        extent = [span(c["brain_box_shape_zyx"][a] * c["spacing_zyx"][a] for c in cases) for a in range(3)]
        median = {m: span(c["intensity"][m]["p50"] for c in cases) for m in modalities}
        negative = {m: any(c["intensity"][m]["p0.5"] < 0 for c in cases) for m in modalities}
        correlation = {}
        if all("correlation" in c for c in cases):
            for key in cases[0]["correlation"]:
                lo, hi = span(c["correlation"].get(key) for c in cases)
                if np.isfinite(lo):
                    correlation[key] = (lo, hi)
        return cls(len(cases), spacing, extent, median, negative, correlation)

    def check(self, appearance: dict[str, Any]) -> list[str]:
        """Why a case's appearance (`data.appearance.case_appearance`) lies outside the training
        cases', one short phrase per rule broken (empty when it lies inside)."""
        reasons = []
        for axis, name in enumerate("zyx"):
            lo, hi = self.spacing_zyx[axis]
            value = appearance["spacing_zyx"][axis]
            if not lo / SPACING_FACTOR <= value <= hi * SPACING_FACTOR:
                reasons.append(f"spacing {name} {value:.3g} mm (training {_range(lo, hi)})")
        for axis, name in enumerate("zyx"):
            lo, hi = self.extent_mm_zyx[axis]
            value = appearance["brain_extent_mm_zyx"][axis]
            if not lo / EXTENT_FACTOR <= value <= hi * EXTENT_FACTOR:
                reasons.append(f"brain extent {name} {value:.0f} mm (training {_range(lo, hi, 0)})")
        for modality, stats in appearance["intensity"].items():
            if modality not in self.median_intensity:
                continue
            lo, hi = self.median_intensity[modality]
            if stats["p0.5"] < 0 and not self.negative_intensities[modality]:
                reasons.append(f"{modality} has negative intensities (no training case had any)")
            if not lo / INTENSITY_FACTOR <= stats["p50"] <= hi * INTENSITY_FACTOR:
                reasons.append(f"{modality} median intensity {stats['p50']:.4g} (training {_range(lo, hi)})")
        for key, value in appearance.get("correlation", {}).items():
            if key not in self.correlation or value is None:
                continue
            lo, hi = self.correlation[key]
            if not lo - CORRELATION_MARGIN <= value <= hi + CORRELATION_MARGIN:
                a, b = key.split("|")
                reasons.append(f"{a}-{b} contrast: correlation {value:+.2f} (training {lo:+.2f}..{hi:+.2f})")
        return reasons

    def check_case(self, case_id: str, appearance: dict[str, Any] | None) -> list[str]:
        """`check`, with one warning line for a case outside the training data."""
        if not appearance:
            return []
        reasons = self.check(appearance)
        if reasons:
            shown = "; ".join(reasons[:MAX_REASONS_SHOWN])
            hidden = len(reasons) - MAX_REASONS_SHOWN
            more = f"; and {hidden} more" if hidden > 0 else ""
            log.warning("case %s: unlike the %d training cases (%s%s); check the scan and its modality "
                        "order: this prediction may be unreliable", case_id, self.n_cases, shown, more)
        return reasons


def _range(lo: float, hi: float, digits: int = 3) -> str:
    text = (lambda v: f"{v:.{digits}f}") if digits == 0 else (lambda v: f"{v:.{digits}g}")
    return text(lo) if np.isclose(lo, hi) else f"{text(lo)}..{text(hi)}"


def load_training_distribution(model_dir: str | Path | None) -> TrainingDistribution | None:
    """The ranges of `model_dir/fingerprint.json`; None (logged) when the folder has none."""
    if model_dir is None:
        return None
    path = Path(model_dir) / FINGERPRINT_FILE
    if not path.is_file():
        log.info("%s: not found, so new cases are not checked against the training data "
                 "(a model trained by an older pfseg)", path)
        return None
    return TrainingDistribution.from_fingerprint(read_json(path))

