"""The dataset fingerprint: what the planner needs to know about every case, and the summary.

Per case: shape, spacing, orientation (axis codes of the affine), the brain box (union of the
non-zero voxels of every modality), per-modality intensity percentiles inside the brain and the
correlations between modalities (`data.appearance`, which prediction compares new cases with),
label voxel counts, and the sizes of the tumour's connected components per region (WT, TC, ET).
Dataset-wide: medians and percentiles of those. Cases are read in worker processes, one case
per task, so memory is bounded by the number of workers. Written as `fingerprint.json`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pfseg_pipeline.data.appearance import case_appearance
from pfseg_pipeline.data.labels import LabelScheme, region_names
from pfseg_pipeline.data.layouts import Case
from pfseg_pipeline.errors import UserError, VerificationError
from pfseg_pipeline.fileio import read_json, write_json
from pfseg_pipeline.parallel import map_cases

log = logging.getLogger(__name__)

FINGERPRINT_VERSION = 1


def fingerprint_case(case: Case, modalities: Sequence[str], scheme: LabelScheme) -> dict[str, Any]:
    """The fingerprint of one case (JSON-ready)."""
    import nibabel as nib
    from scipy import ndimage

    from pfseg_pipeline.data.case_reader import box_of_mask, read_case

    images, seg, geometry = read_case(case, list(modalities))
    brain = np.any(images != 0, axis=0)
    box = box_of_mask(brain)
    n_brain = int(brain.sum())
    appearance = case_appearance(images, modalities, geometry.spacing_zyx, brain)
    del images
    out = {
        "case": case.case_id,
        "shape_zyx": list(geometry.shape_zyx),
        "spacing_zyx": list(geometry.spacing_zyx),
        "orientation": "".join(nib.aff2axcodes(np.asarray(geometry.affine))),
        "brain_box_zyx": box,
        "brain_box_shape_zyx": [b1 - b0 for b0, b1 in box],
        "brain_voxels": n_brain,
        "intensity": appearance["intensity"],
        "correlation": appearance["correlation"],
        "label_voxels": None,
        "components": None,
    }
    if seg is not None:
        values, counts = np.unique(seg, return_counts=True)
        out["label_voxels"] = {str(int(v)): int(n) for v, n in zip(values, counts)}
        structure = np.ones((3, 3, 3), dtype=bool)  # 26-connectivity: touching corners join
        components = {}
        for region in region_names("regions"):
            mask = np.isin(seg, scheme.regions[region])
            labelled, n = ndimage.label(mask, structure=structure)
            sizes = np.bincount(labelled.ravel())[1:] if n else np.zeros(0, np.int64)
            components[region] = sorted(int(s) for s in sizes)
        out["components"] = components
    return out


def _fingerprint_task(case_json: dict, modalities: list[str], scheme_json: dict) -> dict[str, Any]:
    case = Case.from_json(case_json)
    try:
        return fingerprint_case(case, modalities, LabelScheme.from_json(scheme_json))
    except UserError as exc:
        return {"case": case.case_id, "error": str(exc)}


def compute_fingerprint(cases: Sequence[Case], modalities: Sequence[str], scheme: LabelScheme,
                        workers: int = 1, progress: bool = True) -> dict[str, Any]:
    """Fingerprint every case (in `workers` processes) and summarise the dataset."""
    if not cases:
        raise UserError("cannot fingerprint an empty dataset")
    tasks = [(c.to_json(), list(modalities), scheme.to_json()) for c in cases]
    per_case = list(map_cases(_fingerprint_task, tasks, workers, "fingerprint", disable=not progress or None))
    problems = [r["error"] for r in per_case if "error" in r]
    if problems:
        raise VerificationError(problems)
    per_case.sort(key=lambda r: r["case"])
    return {"version": FINGERPRINT_VERSION, "modalities": list(modalities), "label_scheme": scheme.to_json(),
            "cases": per_case, "dataset": summarise(per_case, modalities)}


def _percentiles(values, qs=(0, 5, 50, 95, 100)) -> dict[str, Any]:
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return {f"p{q:g}": None for q in qs}
    axis = 0
    return {f"p{q:g}": np.percentile(arr, q, axis=axis).tolist() for q in qs}


def weighted_size_percentile(sizes: Sequence[int], q: float) -> float | None:
    """The component size below which `q` % of the voxels lie (voxel-weighted percentile).

    Unlike a plain percentile of sizes, a crowd of one-voxel specks barely moves it: it asks
    how small the structures are that hold a given share of the tumour.

    >>> weighted_size_percentile([1, 1, 98], 5)
    98.0
    """
    sizes = np.sort(np.asarray(sizes, dtype=np.float64))
    if sizes.size == 0:
        return None
    cumulative = np.cumsum(sizes) / sizes.sum()
    return float(sizes[np.searchsorted(cumulative, q / 100.0)])


def summarise(per_case: Sequence[dict], modalities: Sequence[str]) -> dict[str, Any]:
    """Dataset-wide statistics of the per-case fingerprints."""
    shapes = [c["shape_zyx"] for c in per_case]
    spacings = [c["spacing_zyx"] for c in per_case]
    boxes = [c["brain_box_shape_zyx"] for c in per_case]
    boxes_mm = [[n * s for n, s in zip(b, sp)] for b, sp in zip(boxes, spacings)]
    median_spacing = np.median(np.asarray(spacings, dtype=np.float64), axis=0).tolist()
    intensity = {}
    for m in modalities:
        stats = [c["intensity"][m] for c in per_case]
        intensity[m] = {k: float(np.median([s[k] for s in stats])) for k in stats[0]}
    labelled = [c for c in per_case if c.get("components") is not None]
    components: dict[str, Any] = {}
    for region in region_names("regions"):
        sizes_mm3 = []
        for c in labelled:
            voxel_mm3 = float(np.prod(c["spacing_zyx"]))
            sizes_mm3 += [s * voxel_mm3 for s in c["components"][region]]
        components[region] = {
            "n_components": len(sizes_mm3),
            "n_cases_with_region": sum(1 for c in labelled if c["components"][region]),
            "size_mm3": _percentiles(sizes_mm3),
            "size_mm3_voxel_weighted_p5": weighted_size_percentile(sizes_mm3, 5),
        }
    label_totals: dict[str, int] = {}
    for c in labelled:
        for value, count in c["label_voxels"].items():
            label_totals[value] = label_totals.get(value, 0) + count
    orientations: dict[str, int] = {}
    for c in per_case:
        orientations[c["orientation"]] = orientations.get(c["orientation"], 0) + 1
    return {
        "n_cases": len(per_case),
        "n_labelled": len(labelled),
        "median_shape_zyx": np.median(np.asarray(shapes, dtype=np.float64), axis=0).tolist(),
        "max_shape_zyx": np.max(np.asarray(shapes), axis=0).tolist(),
        "max_source_voxels": int(max(int(np.prod(s)) for s in shapes)),
        "median_spacing_zyx": median_spacing,
        "spacing_zyx": _percentiles(spacings),
        "brain_box_shape_zyx": _percentiles(boxes),
        "brain_box_mm_zyx": _percentiles(boxes_mm),
        "orientations": orientations,
        "intensity": intensity,
        "label_voxels": label_totals,
        "components": components,
    }


def save_fingerprint(fingerprint: dict, path: str | os.PathLike) -> None:
    write_json(path, fingerprint)


def load_fingerprint(path: str | os.PathLike) -> dict:
    """Read fingerprint.json; a file from another version or without cases is a UserError."""
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, dict) or data.get("version") != FINGERPRINT_VERSION:
        raise UserError(f"{path}: not a version {FINGERPRINT_VERSION} fingerprint (re-run "
                        "pfseg_plan_and_preprocess)")
    if not data.get("cases"):
        raise UserError(f"{path}: field 'cases' is empty")
    return data
