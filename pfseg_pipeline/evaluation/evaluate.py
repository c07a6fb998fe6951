"""Score a folder of predicted label maps against reference label maps (BraTS metrics).

References may be laid out as BraTS case folders (``<case>/<case>_seg.nii[.gz]``, at any
depth; BraTS 2023's ``<case>-seg`` too), an nnU-Net raw dataset (``labelsTr/<case>.nii[.gz]``,
its ``dataset.json`` giving the label scheme), or a flat folder of ``<case>.nii[.gz]`` /
``<case>_seg.nii[.gz]`` files. Predictions are ``<case>.nii[.gz]`` files (or .mha, .nrrd) in one
folder. When the prediction folder records its label scheme (``label_scheme.json``, written by
``pfseg_predict``) and the references' scheme puts other values in a region, nothing is scored:
one error says so.

Pairing is by case id. A reference without a prediction is scored against an empty mask (so a
case with tumour gets Dice 0 and HD95 = the image diagonal) and listed under ``missing``; a
prediction without a reference is ignored with a warning and listed under
``ignored_predictions``. A case that cannot be scored (unreadable file, prediction on another
grid, label values outside the scheme) is reported with one line under ``failed`` and the
others go on; the command then exits 2.

summary.json (DESIGN.md's schema, plus metadata)::

    {"per_case": [{"case": ID, "WT": {"dice", "hd95", "sensitivity", "specificity"}, ...}],
     "summary": {"WT": {"dice": {"mean", "std", "median", "n"}, ...}, ...},
     "missing": [ID, ...],
     "failed": [{"case": ID, "error": LINE}, ...], "ignored_predictions": [ID, ...],
     "target", "regions", "label_scheme", "hd95_definition", "units", "paper_grid", ...,
     "metric_per_case", "mean", "foreground_mean", "region_keys"}

The last four carry nnU-Net's structure (`evaluation.nnunet_summary`), so scripts written for
nnU-Net's summary.json read this one too.

Undefined values (sensitivity with an empty reference) are ``null`` and left out of the
summary, whose ``n`` counts the values that went in; ``std`` is the population standard
deviation (ddof 0). A per-case CSV with one column per region and metric is written beside
the JSON (same name, ``.csv``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from pfseg_pipeline.data.image_io import read_label
from pfseg_pipeline.data.labels import (
    LabelScheme,
    check_label_values,
    get_scheme,
    labels_to_regions,
    region_names,
)
from pfseg_pipeline.data.layouts import LabelMaps, find_label_maps
from pfseg_pipeline.data.nifti import Geometry
from pfseg_pipeline.data.scheme_record import SCHEME_FILE, read_scheme_record, same_regions
from pfseg_pipeline.errors import UserError
from pfseg_pipeline.evaluation.metrics import HD95_DEFINITIONS, METRIC_NAMES, region_metrics
from pfseg_pipeline.evaluation.nnunet_summary import case_counts, case_entry, nnunet_structure, region_keys
from pfseg_pipeline.evaluation.paper_grid import PAPER_GRID_ZYX, to_paper_grid_labels
from pfseg_pipeline.fileio import atomic_path, write_json
from pfseg_pipeline.inference.postprocessing import Postprocessing
from pfseg_pipeline.parallel import map_cases

log = logging.getLogger(__name__)

GRID_TOLERANCE_MM = 1e-3
HD95_TEXT = {
    "pooled": "MedPy hd95: 95th percentile of the pooled surface distances of both directions",
    "directed-max": "BraTS tool: the larger of the two directed 95th percentiles of surface distances",
}


References = LabelMaps  # what `find_references` returns


def find_references(ref_dir: str | os.PathLike, label_scheme: LabelScheme | None = None) -> LabelMaps:
    """Reference label maps in a BraTS, nnU-Net (labelsTr) or flat layout (`layouts.find_label_maps`);
    an nnU-Net dataset.json's labels must agree with `label_scheme` when one is given."""
    return find_label_maps(_existing_dir(ref_dir, "reference"), label_scheme=label_scheme)


def find_predictions(pred_dir: str | os.PathLike) -> tuple[dict[str, Path], dict[str, str]]:
    """Predicted label maps `<case>.nii[.gz]` in one folder: (by case id, problems by case id)."""
    found = find_label_maps(_existing_dir(pred_dir, "prediction"), flat=True)
    return found.labels, found.problems


def evaluate_arrays(reference: np.ndarray, prediction: np.ndarray,
                    spacing_zyx: Sequence[float] | None = None,
                    scheme: LabelScheme | str = "brats2020", target: str = "regions",
                    hd95_definition: str = "pooled") -> dict[str, dict[str, float | None]]:
    """Metrics of one case: label maps (Z, Y, X) -> {region: {dice, hd95, sensitivity, specificity}}.

    `spacing_zyx` is in mm (None: 1 per axis, i.e. voxels). Regions follow `target`
    (WT, TC, ET for ``regions``; WT for ``wt``) and the scheme's label values.
    """
    scheme = get_scheme(scheme) if isinstance(scheme, str) else scheme
    reference, prediction = np.asarray(reference), np.asarray(prediction)
    if reference.shape != prediction.shape:
        raise ValueError(f"reference {reference.shape} and prediction {prediction.shape} differ in shape")
    return _region_metrics(labels_to_regions(reference, scheme, target),
                           labels_to_regions(prediction, scheme, target), spacing_zyx, target,
                           hd95_definition)


def _region_metrics(ref_regions: np.ndarray, pred_regions: np.ndarray, spacing_zyx: Sequence[float] | None,
                    target: str, hd95_definition: str) -> dict[str, dict[str, float | None]]:
    """`evaluate_arrays` on region masks (K, Z, Y, X) already made from the label maps."""
    return {name: region_metrics(ref_regions[k], pred_regions[k], spacing_zyx, hd95_definition)
            for k, name in enumerate(region_names(target))}


def summarise(per_case: Sequence[dict], regions: Sequence[str]) -> dict:
    """Mean, population std, median and count of every metric of every region (nulls skipped)."""
    summary = {}
    for region in regions:
        summary[region] = {}
        for metric in METRIC_NAMES:
            values = [(c.get(region) or {}).get(metric) for c in per_case]
            values = np.array([v for v in values if v is not None], dtype=np.float64)
            if values.size == 0:
                summary[region][metric] = {"mean": None, "std": None, "median": None, "n": 0}
            else:
                summary[region][metric] = {"mean": float(values.mean()), "std": float(values.std()),
                                           "median": float(np.median(values)), "n": int(values.size)}
    return summary


def evaluate_folder(ref_dir: str | os.PathLike | None, pred_dir: str | os.PathLike,
                    output: str | os.PathLike | None = None, scheme: LabelScheme | str | None = None,
                    target: str = "regions", hd95_definition: str = "pooled", num_processes: int = 1,
                    paper_grid: bool = False, exclude: Iterable[str] = (), progress: bool = True,
                    write: bool = True, references: dict[str, Path] | None = None,
                    postprocessing: Postprocessing | None = None) -> dict:
    """Score every reference case against its prediction; write summary.json and .csv.

    Returns the summary.json content (see the module docstring). `output` defaults to
    ``pred_dir/summary.json``; `scheme` defaults to the one an nnU-Net dataset.json declares,
    else BraTS 2020. With `paper_grid` both maps go to the paper's 128 x 192 x 192 grid first
    and distances are in voxels. Failed cases are listed, never raised: the caller decides.
    `references` (case id -> label file) replaces the search of `ref_dir`: training scores its
    held-out cases this way, straight from the source files dataset.json lists.
    `postprocessing` is applied to each prediction before it is scored (recorded in the result).
    """
    if hd95_definition not in HD95_DEFINITIONS:
        raise UserError(f"unknown HD95 definition {hd95_definition!r} "
                        f"(choose from {', '.join(HD95_DEFINITIONS)})")
    regions = region_names(target)
    pred_dir = Path(pred_dir)
    if isinstance(scheme, str):
        scheme = get_scheme(scheme)
    if references is not None:
        references = LabelMaps(layout="given", labels={c: Path(p) for c, p in references.items()})
        ref_dir = ref_dir or "the given reference files"
    else:
        references = find_references(ref_dir, scheme)
    predictions, pred_problems = find_predictions(pred_dir)
    recorded = read_scheme_record(ref_dir) if references.layout != "given" else None
    scheme = scheme or references.label_scheme or recorded or get_scheme("brats2020")
    check_prediction_scheme(pred_dir, scheme)

    excluded = set(exclude)
    ref_ids = (set(references.labels) | set(references.problems)) - excluded
    for case_id in sorted(excluded - set(references.labels) - set(references.problems)):
        log.warning("--exclude names case %s, which has no reference in %s", case_id, ref_dir)
    if not ref_ids:
        raise UserError(f"{ref_dir}: no reference label maps found (expected <case>/<case>_seg.nii.gz, "
                        "labelsTr/<case>.nii.gz or <case>.nii.gz files)")
    ignored = sorted(set(predictions) - ref_ids - excluded)
    for case_id in ignored:
        log.warning("prediction %s has no reference in %s: ignored", predictions[case_id], ref_dir)
    missing = sorted(c for c in ref_ids if c not in predictions and c not in pred_problems
                     and c in references.labels)
    for case_id in missing:
        log.warning("case %s: no prediction in %s, scored as an empty mask", case_id, pred_dir)

    failed = {c: references.problems[c] for c in ref_ids if c in references.problems}
    failed.update({c: pred_problems[c] for c in ref_ids if c in pred_problems and c not in failed})
    for case_id in sorted(failed):
        log.error("case %s: %s", case_id, failed[case_id])
    tasks = [dict(case=c, reference=references.labels[c], prediction=predictions.get(c), scheme=scheme,
                  target=target, hd95_definition=hd95_definition, paper_grid=paper_grid,
                  postprocessing=postprocessing)
             for c in sorted(ref_ids) if c not in failed]

    per_case, counts = {}, {}
    for result in _run(tasks, num_processes, progress):
        if "error" in result:
            failed[result["case"]] = result["error"]
            log.error("case %s: %s", result["case"], result["error"])
        else:
            per_case[result["case"]] = {"case": result["case"], **result["metrics"]}
            counts[result["case"]] = result["counts"]
    per_case_list = [per_case[c] for c in sorted(per_case)]
    keys = region_keys(scheme, target)
    entries = [case_entry(str(references.labels[c]), str(predictions[c]) if c in predictions else None,
                          counts[c], keys) for c in sorted(per_case)]

    result = {
        "per_case": per_case_list,
        "summary": summarise(per_case_list, regions),
        "missing": missing,
        "failed": [{"case": c, "error": failed[c]} for c in sorted(failed)],
        "ignored_predictions": ignored,
        "target": target,
        "regions": list(regions),
        "label_scheme": scheme.name,
        "label_scheme_definition": scheme.to_json(),
        "hd95_definition": hd95_definition,
        "hd95_definition_text": HD95_TEXT[hd95_definition],
        "units": "voxels" if paper_grid else "mm",
        "paper_grid": list(PAPER_GRID_ZYX) if paper_grid else None,
        "empty_mask_convention": "both empty: dice 1, hd95 0; one empty: dice 0, hd95 = image diagonal",
        "std": "population (ddof 0)",
        "reference_dir": str(Path(ref_dir).absolute()) if references.layout != "given" else None,
        "prediction_dir": str(pred_dir.absolute()),
        **nnunet_structure(entries, list(keys.values())),
        "region_keys": keys,
    }
    if postprocessing is not None:
        result["postprocessing"] = postprocessing.describe()
    if write:
        output = Path(output) if output is not None else pred_dir / "summary.json"
        write_json(output, result)
        write_per_case_csv(result, output.with_suffix(".csv"))
        log.info("wrote %s and %s", output, output.with_suffix(".csv").name)
    return result


def write_per_case_csv(result: dict, path: str | os.PathLike) -> None:
    """One row per scored case: `case`, `missing`, then `<REGION>_<metric>` columns."""
    import pandas as pd

    missing = set(result["missing"])
    rows = []
    for entry in result["per_case"]:
        row = {"case": entry["case"], "missing": entry["case"] in missing}
        for region in result["regions"]:
            for metric in METRIC_NAMES:
                row[f"{region}_{metric}"] = entry[region][metric]
        rows.append(row)
    columns = ["case", "missing"] + [f"{r}_{m}" for r in result["regions"] for m in METRIC_NAMES]
    frame = pd.DataFrame(rows, columns=columns)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def evaluate_case(case: str, reference: Path, prediction: Path | None, scheme: LabelScheme,
                  target: str = "regions", hd95_definition: str = "pooled", paper_grid: bool = False,
                  postprocessing: Postprocessing | None = None) -> dict:
    """Read and score one case: {"case", "metrics"} or {"case", "error": one line} (never raises
    for a user-fixable problem, so a batch goes on)."""
    try:
        ref_seg, ref_geometry = read_label(reference)
        _check_values(ref_seg, scheme, reference)
        if prediction is None:
            pred_seg = np.zeros_like(ref_seg)
        else:
            pred_seg, pred_geometry = read_label(prediction)
            _check_grid(ref_geometry, reference, pred_geometry, prediction)
            _check_values(pred_seg, scheme, prediction)
        spacing = ref_geometry.spacing_zyx
        if postprocessing is not None:
            pred_seg = postprocessing.apply_to_labels(pred_seg, scheme, target, spacing)
        if paper_grid:
            try:
                ref_seg, pred_seg = to_paper_grid_labels(ref_seg), to_paper_grid_labels(pred_seg)
            except UserError as exc:
                raise UserError(f"{reference}: {exc}") from exc
            spacing = (1.0, 1.0, 1.0)
        ref_regions = labels_to_regions(ref_seg, scheme, target)
        pred_regions = labels_to_regions(pred_seg, scheme, target)
        metrics = _region_metrics(ref_regions, pred_regions, spacing, target, hd95_definition)
    except UserError as exc:
        return {"case": case, "error": str(exc)}
    return {"case": case, "metrics": metrics, "counts": case_counts(ref_regions, pred_regions, target)}


def _evaluate_task(task: dict) -> dict:
    return evaluate_case(**task)


def _run(tasks: list[dict], num_processes: int, progress: bool) -> Iterable[dict]:
    return map_cases(_evaluate_task, [(task,) for task in tasks], num_processes, "evaluate",
                     disable=not progress)


def check_prediction_scheme(pred_dir: Path, scheme: LabelScheme) -> None:
    """Refuse (one line) predictions whose recorded label scheme puts other values in a region."""
    recorded = read_scheme_record(pred_dir)
    if recorded is not None and not same_regions(recorded, scheme):
        raise UserError(f"{pred_dir / SCHEME_FILE}: the predictions are in the {recorded.name} label scheme "
                        f"({_describe(recorded)}), the references in {scheme.name} ({_describe(scheme)}); "
                        f"the same numbers mean other regions: predict with --label-scheme {scheme.name}, or "
                        f"score against references in {recorded.name}")


def _describe(scheme: LabelScheme) -> str:
    return ", ".join(f"{region} {'+'.join(map(str, values))}" for region, values in scheme.regions.items())


def _check_grid(ref: Geometry, ref_path: Path, pred: Geometry, pred_path: Path) -> None:
    if ref.shape_zyx != pred.shape_zyx:
        raise UserError(f"prediction {pred_path} is on another grid than reference {ref_path}: "
                        f"shape (z, y, x) {pred.shape_zyx} vs {ref.shape_zyx}")
    difference = float(np.max(np.abs(np.asarray(ref.affine) - np.asarray(pred.affine))))
    if difference > GRID_TOLERANCE_MM:
        raise UserError(f"prediction {pred_path} is on another grid than reference {ref_path}: "
                        f"affines differ by up to {difference:.4g} mm (tolerance {GRID_TOLERANCE_MM})")


def _check_values(seg: np.ndarray, scheme: LabelScheme, path: Path) -> None:
    unknown = check_label_values(seg, scheme)
    if unknown:
        raise UserError(f"{path}: label values {unknown} are not in the {scheme.name} scheme "
                        f"{scheme.values} (wrong --label-scheme?)")


def _existing_dir(path: str | os.PathLike, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: {what} folder does not exist")
    if not path.is_dir():
        raise UserError(f"{path}: {what} path is not a folder")
    return path
