"""Reports to look at: per case, three slices through the tumour with its contours, in one HTML page.

- `write_evaluation_report` (`pfseg_evaluate --report`): for every scored case a PNG
  (`evaluation.figures`: reference and predicted WT / TC / ET contours over the scan, through
  the reference tumour's centre) and `report.html`, the cases worst first (mean Dice over the
  regions) with their metrics and figures.
- `write_preview` (`pfseg_predict --preview`): the same slices with the predicted contours
  only, through the predicted tumour's centre, and `preview.html`.

The background scan is the case's FLAIR (else T2, T1ce, T1), found with the layouts' discovery
in the folder given; a case without one is drawn on black and says so.
"""

from __future__ import annotations

import html
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np

from pfseg_pipeline.data.image_io import read_label, read_volume
from pfseg_pipeline.data.labels import LabelScheme, labels_to_regions, region_names
from pfseg_pipeline.data.layouts import Case, discover
from pfseg_pipeline.errors import UserError
from pfseg_pipeline.evaluation.figures import CONTOURS, render_figure, tumour_centre, write_png
from pfseg_pipeline.fileio import read_json, write_text

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"
PREVIEW_FILE = "preview.html"
SCAN_PREFERENCE = ("flair", "t2", "t1ce", "t1")   # tumour (edema) shows best on FLAIR


@dataclass
class ReportCase:
    """One case of a report: its files, its metrics (empty for a preview) and where it is drawn."""

    case: str
    prediction: Path | None
    reference: Path | None = None
    scan: Case | None = None
    metrics: dict | None = None
    figure: str | None = None           # file name under the figures folder
    centre_zyx: tuple[int, ...] | None = None
    note: str = ""


def find_scans(root: str | os.PathLike | None,
               modalities: Sequence[str] = SCAN_PREFERENCE) -> dict[str, Case]:
    """case id -> a `Case` holding one background scan (the first of `modalities` found)."""
    if root is None or not Path(root).is_dir():
        return {}
    scans: dict[str, Case] = {}
    for modality in modalities:
        try:
            found = discover(root, (modality,), require_label=False)
        except UserError:
            continue
        for case in found.cases:
            scans.setdefault(case.case_id, case)
    return scans


def _read_scan(case: Case | None, shape_zyx: tuple[int, ...]) -> tuple[np.ndarray | None, str]:
    if case is None:
        return None, "no scan found: contours on black"
    modality = next(iter(case.images))
    try:
        scan, geometry = read_volume(case.images[modality], channel=case.channels.get(modality))
    except UserError as exc:
        return None, f"scan unreadable ({exc}): contours on black"
    if geometry.shape_zyx != tuple(shape_zyx):
        return None, f"the {modality} scan is on another grid: contours on black"
    return scan, f"over {modality.upper() if modality == 'flair' else modality}"


def draw_case(item: ReportCase, figures_dir: Path, scheme: LabelScheme, target: str) -> ReportCase:
    """Render one case's figure into `figures_dir` (reference optional); fills `figure`, `centre_zyx`."""
    base = item.reference or item.prediction
    seg, geometry = read_label(base)
    regions: dict[str, dict[str, np.ndarray]] = {}
    for source, path in (("reference", item.reference), ("prediction", item.prediction)):
        if path is None:
            continue
        labels = seg if path == base else read_label(path)[0]
        masks = labels_to_regions(labels, scheme, target)
        regions[source] = dict(zip(region_names(target), masks))
    if item.prediction is None:
        regions["prediction"] = {r: np.zeros(seg.shape, bool) for r in region_names(target)}
    scan, note = _read_scan(item.scan, geometry.shape_zyx)
    background = scan if scan is not None else np.zeros(seg.shape, np.float32)
    centre = tumour_centre([regions.get("reference", {}).get("WT"), regions["prediction"]["WT"]], scan)
    figure, _ = render_figure(background, geometry, centre, regions)
    item.figure = f"{item.case}.png"
    item.centre_zyx = centre
    item.note = note
    write_png(figure, figures_dir / item.figure)
    return item


def _mean_dice(metrics: dict | None, regions: Sequence[str]) -> float:
    values = [(metrics or {}).get(r, {}).get("dice") for r in regions]
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else -1.0


def write_evaluation_report(result: dict, output: str | os.PathLike, scans_root: str | os.PathLike | None,
                            scheme: LabelScheme) -> Path:
    """`report.html` beside `output` (summary.json) and one PNG per case in `report/`.

    Parameters
    ----------
    result : what `evaluate_folder` returned (its `per_case` and `metric_per_case` entries).
    output : the summary.json path; the report goes to its folder.
    scans_root : where the cases' images are (default of the command: the reference folder).
    scheme : the label scheme the maps were scored in.
    """
    folder = Path(output).parent
    target = result["target"]
    regions = list(result["regions"])
    scans = find_scans(scans_root)
    items = []
    for metrics, files in zip(result["per_case"], result["metric_per_case"]):
        prediction = Path(files["prediction_file"]) if files["prediction_file"] else None
        item = ReportCase(metrics["case"], prediction, Path(files["reference_file"]),
                          scans.get(metrics["case"]), metrics)
        items.append(draw_case(item, folder / "report", scheme, target))
    flagged = _flagged_at_prediction(result.get("prediction_dir"))
    for item in items:
        if item.case in flagged:
            item.note += "; flagged at prediction as unlike the training cases: " + \
                "; ".join(flagged[item.case])
    items.sort(key=lambda i: (_mean_dice(i.metrics, regions), i.case))
    failed = [f"{f['case']}: {f['error']}" for f in result.get("failed", [])]
    title = f"pfseg evaluation: {len(items)} case(s), worst first"
    path = folder / REPORT_FILE
    write_text(path, _page(title, items, regions, "report", result.get("missing", []), failed))
    log.info("wrote %s (%d figures in %s)", path, len(items), folder / "report")
    return path


def write_preview(cases: Sequence[tuple[str, Path, Case | None]], output_dir: str | os.PathLike,
                  scheme: LabelScheme, target: str) -> Path:
    """`preview.html` and `preview/<case>.png` in `output_dir`: each (case id, prediction file,
    case with the scan) drawn with its predicted contours."""
    folder = Path(output_dir)
    items = [draw_case(ReportCase(case_id, Path(prediction), scan=scan), folder / "preview", scheme, target)
             for case_id, prediction, scan in cases]
    path = folder / PREVIEW_FILE
    write_text(path, _page(f"pfseg predictions: {len(items)} case(s)", items, region_names(target),
                           "preview", [], []))
    log.info("wrote %s", path)
    return path


def _flagged_at_prediction(prediction_dir: str | None) -> dict[str, list[str]]:
    """The cases the prediction's distribution check flagged (timings.json), when it is there."""
    path = Path(prediction_dir or "") / "timings.json"
    if not prediction_dir or not path.is_file():
        return {}
    try:
        flagged = read_json(path).get("out_of_distribution") or {}
    except (UserError, AttributeError):
        return {}
    return {str(k): [str(r) for r in v] for k, v in flagged.items() if isinstance(v, list)}


def _legend(sources: Sequence[str], regions: Sequence[str]) -> str:
    cells = []
    for source in sources:
        for region in regions:
            r, g, b = CONTOURS[(source, region)]
            cells.append(f'<span class="key"><span class="swatch" style="background:rgb({r},{g},{b})"></span>'
                         f"{source} {region}</span>")
    kind = "reference: inside each region's border; prediction: just outside it" if len(sources) > 1 else \
        "predicted regions: the line runs just outside each"
    return f'<p class="legend">{" ".join(cells)}<br>{html.escape(kind)}</p>'


def _metrics_cells(metrics: dict | None, regions: Sequence[str]) -> str:
    if not metrics:
        return ""
    cells = []
    for region in regions:
        values = metrics.get(region) or {}
        dice, hd95 = values.get("dice"), values.get("hd95")
        cells.append(f"<td>{region}</td><td>{'-' if dice is None else f'{dice:.3f}'}</td>"
                     f"<td>{'-' if hd95 is None else f'{hd95:.1f}'}</td>")
    return '<table class="metrics"><tr><th></th><th>Dice</th><th>HD95 (mm)</th></tr>' + "".join(
        f"<tr>{c}</tr>" for c in cells) + "</table>"


def _page(title: str, items: Sequence[ReportCase], regions: Sequence[str], figures: str,
          missing: Sequence[str], failed: Sequence[str]) -> str:
    sources = ("prediction",) if figures == "preview" else ("reference", "prediction")
    rows = []
    for rank, item in enumerate(items, start=1):
        case = html.escape(item.case)
        centre = ",".join(str(c) for c in item.centre_zyx)
        flag = " (no prediction: scored as empty)" if item.case in missing else ""
        rows.append(
            f'<section class="case" id="{html.escape(quote(item.case))}"><h2>{rank}. {case}{flag}</h2>'
            f'{_metrics_cells(item.metrics, regions)}'
            f'<p class="where">axial, coronal, sagittal through voxel (z, y, x) = ({centre}), '
            f"{html.escape(item.note)}</p>"
            f'<img src="{figures}/{quote(item.figure)}" alt="{case}" data-case="{case}" '
            f'data-centre-zyx="{centre}"></section>')
    problems = "".join(f"<li>{html.escape(line)}</li>" for line in failed)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; background: #fafafa; }}
.case {{ margin-bottom: 2em; }} img {{ image-rendering: pixelated; display: block; }}
.metrics td, .metrics th {{ padding: 0 0.6em; text-align: right; }}
.swatch {{ display: inline-block; width: 1em; height: 1em; margin: 0 0.3em 0 1em; vertical-align: middle; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
{_legend(sources, regions)}
{"<h2>Not scored</h2><ul>" + problems + "</ul>" if problems else ""}
{"".join(rows)}
</body></html>
"""
