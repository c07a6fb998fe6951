"""Choose the postprocessing on cross-validation predictions, and score a folder with it.

The rules are `inference.postprocessing`'s; this module decides which to switch on, from
predicted label maps on the native grid (each fold's `validation/<case>.nii.gz`) and their
references, as nnU-Net does: a step is applied where it improves the mean over the same cases.

1. For each region, outer first (WT, then TC, then ET), on top of the steps already chosen:
   keep the largest connected component where the region's mean Dice rises (strictly) and no
   region it changes (itself and those inside it) loses mean Dice.
2. The small-ET rule on top of those: the threshold of `SMALL_ET_THRESHOLDS_MM3` with the
   highest mean ET Dice (the BraTS empty-mask convention: a case without ET whose prediction
   has none scores 1), the smallest on a tie; 0 (off) unless it beats 0 strictly.

Each case is read once: `score_case` measures the Dice of every combination of largest-component
steps (2**K, sharing their component labellings) and the ET volume each leaves, so the choice is
arithmetic on those tables (`decide`). Figures chosen on a set of cases are optimistic for those
cases: every report of them says so (`CHOSEN_ON`); a separate test set gives the clean ones.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pfseg_pipeline.data.image_io import read_label
from pfseg_pipeline.data.labels import LabelScheme, labels_to_regions, region_names
from pfseg_pipeline.errors import UserError
from pfseg_pipeline.evaluation.metrics import dice
from pfseg_pipeline.inference.postprocessing import (
    SMALL_ET_REGION,
    Postprocessing,
    keep_largest_component,
    nest,
    voxel_mm3,
)
from pfseg_pipeline.parallel import map_cases

log = logging.getLogger(__name__)

# ET volumes (mm^3) below which a case's ET is relabelled as necrosis; 0 = off. A 1-2-5 series
# around the thresholds BraTS entries used (a few hundred 1 mm voxels), up to 5 cm^3.
SMALL_ET_THRESHOLDS_MM3 = (0.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0)
CHOSEN_ON = ("postprocessing chosen on these cases (optimistic for them; a separate test set gives "
             "clean figures)")


@dataclass
class CaseTable:
    """One case's Dice per region under each combination of largest-component steps."""

    case: str
    dice: dict[tuple[str, ...], list[float]]      # kept regions -> Dice per region
    et_mm3: dict[tuple[str, ...], float]          # kept regions -> predicted ET volume (mm^3)
    et_dice_cleared: float | None                 # ET Dice with no predicted ET (None: no ET region)

    def region_dice(self, keep: tuple[str, ...], threshold_mm3: float, et_index: int | None) -> list[float]:
        values = list(self.dice[keep])
        if et_index is not None and self.et_mm3[keep] < threshold_mm3:
            values[et_index] = self.et_dice_cleared
        return values


def _combinations(masks: np.ndarray, names: Sequence[str], k: int = 0,
                  kept: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], np.ndarray]]:
    """Every subset of largest-component steps, applied outer to inner, with the masks it leaves."""
    if k == len(names):
        yield kept, masks
        return
    yield from _combinations(masks, names, k + 1, kept)
    largest = masks.copy()
    largest[k] = keep_largest_component(largest[k])
    yield from _combinations(nest(largest), names, k + 1, kept + (names[k],))


def score_case(case: str, prediction: str | Path, reference: str | Path, scheme_json: dict,
               target: str) -> dict[str, Any]:
    """Dice per region of every step combination for one case (JSON-like, for a worker pool);
    {"case", "error"} for a case that cannot be read or whose grids differ."""
    try:
        scheme = LabelScheme.from_json(scheme_json)
        pred, pred_geometry = read_label(prediction)
        ref, ref_geometry = read_label(reference)
        if pred.shape != ref.shape:
            raise UserError(f"{prediction}: shape {pred.shape} differs from the reference {reference} "
                            f"{ref.shape}")
    except UserError as exc:
        return {"case": case, "error": str(exc)}
    names = region_names(target)
    ref_masks = labels_to_regions(ref, scheme, target)
    pred_masks = nest(labels_to_regions(pred, scheme, target))
    et = names.index(SMALL_ET_REGION) if SMALL_ET_REGION in names else None
    volume = voxel_mm3(ref_geometry.spacing_zyx)
    rows = []
    for kept, masks in _combinations(pred_masks, names):
        rows.append({"keep": list(kept), "dice": [dice(r, p) for r, p in zip(ref_masks, masks)],
                     "et_mm3": float(masks[et].sum()) * volume if et is not None else 0.0})
    cleared = dice(ref_masks[et], np.zeros_like(ref_masks[et])) if et is not None else None
    return {"case": case, "rows": rows, "et_dice_cleared": cleared}


def _table(result: dict) -> CaseTable:
    rows = result["rows"]
    return CaseTable(result["case"], {tuple(r["keep"]): r["dice"] for r in rows},
                     {tuple(r["keep"]): r["et_mm3"] for r in rows}, result["et_dice_cleared"])


@dataclass
class Choice:
    """The chosen postprocessing and the figures it was chosen on."""

    postprocessing: Postprocessing
    raw_dice: dict[str, float]
    postprocessed_dice: dict[str, float]
    steps: list[dict[str, Any]]
    cases: list[str]
    failed: list[str] = field(default_factory=list)
    folds: list[str] = field(default_factory=list)    # where the cases came from, when known

    def summary_line(self) -> str:
        """What was chosen and the mean Dice per region it moves, raw -> postprocessed."""
        moves = ", ".join(f"{r} {raw:.4f} -> {self.postprocessed_dice[r]:.4f}"
                          for r, raw in self.raw_dice.items())
        return f"{self.postprocessing.describe()}; mean Dice {moves}"

    def to_json(self, **context: Any) -> dict[str, Any]:
        """postprocessing.json: what to apply, then the figures and cases it was chosen on."""
        return {**self.postprocessing.to_json(), **context,
                "chosen_on": {"folds": list(self.folds), "n_cases": len(self.cases),
                              "cases": list(self.cases), "note": CHOSEN_ON},
                "mean_dice": {"raw": self.raw_dice, "postprocessed": self.postprocessed_dice},
                "steps": self.steps, "failed": list(self.failed)}


def decide(tables: Sequence[CaseTable], names: Sequence[str],
           thresholds: Sequence[float] = SMALL_ET_THRESHOLDS_MM3) -> Choice:
    """The choice from per-case tables (see the module docstring for the rule)."""
    if not tables:
        raise UserError("no case to choose the postprocessing on")
    names = tuple(names)
    et = names.index(SMALL_ET_REGION) if SMALL_ET_REGION in names else None

    def mean_dice(keep: tuple[str, ...], threshold: float = 0.0) -> list[float]:
        values = np.asarray([t.region_dice(keep, threshold, et) for t in tables], dtype=np.float64)
        return [float(v) for v in values.mean(axis=0)]

    kept: tuple[str, ...] = ()
    steps = []
    for k, region in enumerate(names):
        before, after = mean_dice(kept), mean_dice(kept + (region,))
        applied = after[k] > before[k] and all(a >= b for a, b in zip(after, before))
        steps.append({"step": "keep_largest_component", "region": region, "applied": applied,
                      "mean_dice_before": dict(zip(names, before)),
                      "mean_dice_after": dict(zip(names, after))})
        if applied:
            kept += (region,)
    threshold = 0.0
    if et is not None:
        grid = sorted({0.0, *(float(t) for t in thresholds)})
        by_threshold = {t: mean_dice(kept, t)[et] for t in grid}
        best = max(grid, key=lambda t: (by_threshold[t], -t))
        threshold = best if by_threshold[best] > by_threshold[0.0] else 0.0
        steps.append({"step": "small_et", "threshold_mm3": threshold,
                      "mean_et_dice_by_threshold_mm3": {f"{t:g}": v for t, v in by_threshold.items()}})
    return Choice(Postprocessing(names, kept, threshold), dict(zip(names, mean_dice(()))),
                  dict(zip(names, mean_dice(kept, threshold))), steps, [t.case for t in tables])


def choose_postprocessing(predictions: dict[str, Path], references: dict[str, Path], scheme: LabelScheme,
                          target: str, workers: int = 1, progress: bool = False,
                          thresholds: Sequence[float] = SMALL_ET_THRESHOLDS_MM3) -> Choice:
    """Choose on every case with both a predicted label map and a reference (case id -> file).

    A case that cannot be read is left out with one line (listed in `Choice.failed`); with no
    case left, a UserError.
    """
    cases = sorted(set(predictions) & set(references))
    for case in sorted(set(references) - set(predictions)):
        log.warning("case %s: no prediction, left out of the postprocessing choice", case)
    tasks = [(c, str(predictions[c]), str(references[c]), scheme.to_json(), target) for c in cases]
    tables, failed = [], []
    for result in map_cases(score_case, tasks, workers, "postprocessing", disable=not progress or None):
        if "error" in result:
            log.error("case %s: %s", result["case"], result["error"])
            failed.append(f"case {result['case']}: {result['error']}")
        else:
            tables.append(_table(result))
    tables.sort(key=lambda t: t.case)
    choice = decide(tables, region_names(target), thresholds)
    choice.failed = failed
    return choice


def postprocessed_summary(pred_dir: Path, references: dict[str, Path], scheme: LabelScheme, target: str,
                          workers: int = 1, raw: dict[str, Any] | None = None) -> dict[str, Any]:
    """The `postprocessed` section of a fold's summary.json: the postprocessing chosen on the
    folder's cases and every metric with it applied, labelled as chosen on those cases.

    raw : the folder's summary without postprocessing (`evaluate_folder` on the same references),
        when the caller has it: where the choice is to change nothing, its figures are those, and
        the cases are not scored again.
    """
    from pfseg_pipeline.evaluation.evaluate import evaluate_folder, find_predictions

    predictions, _ = find_predictions(pred_dir)
    try:
        choice = choose_postprocessing(predictions, references, scheme, target, workers)
    except UserError as exc:  # no case could be read: the raw figures above stand alone
        log.warning("no postprocessing chosen: %s", exc)
        return {"note": CHOSEN_ON, "error": str(exc)}
    if raw is not None and choice.postprocessing.is_identity:
        scored = raw
    else:
        scored = evaluate_folder(None, pred_dir, scheme=scheme, target=target, references=references,
                                 num_processes=workers, progress=False, write=False,
                                 postprocessing=choice.postprocessing)
    log.info("postprocessing chosen on these %d case(s): %s", len(choice.cases), choice.summary_line())
    return {"note": CHOSEN_ON, "postprocessing": choice.to_json(), "summary": scored["summary"],
            "per_case": scored["per_case"], "missing": scored["missing"]}


def validation_predictions(network_dir: Path, folds: Sequence[str] | None = None
                           ) -> tuple[list[str], dict[str, Path]]:
    """(folds, case id -> predicted label map) of the folds' validation cases.

    Default folds: every `fold_*` whose `validation/summary.json` scored validation cases. A
    fold whose validation/ holds a named split's test cases is refused: postprocessing is
    chosen on validation cases only.
    """
    from pfseg_pipeline.evaluation.evaluate import find_predictions
    from pfseg_pipeline.fileio import read_json

    if folds:
        names = list(dict.fromkeys(str(f) for f in folds))
        summaries = {f: read_json(_summary_path(network_dir, f)) for f in names}
    else:
        found = [p.parent.parent.name[len("fold_"):]
                 for p in network_dir.glob("fold_*/validation/summary.json")]
        summaries = {f: read_json(_summary_path(network_dir, f))
                     for f in sorted(found, key=lambda f: (not f.isdigit(), f))}
        summaries = {f: s for f, s in summaries.items() if _cases_from(s, f) == "validation"}
        names = list(summaries)
        if not names:
            raise UserError(f"{network_dir}: no fold_*/validation/summary.json of validation cases "
                            "(train the cross-validation folds to their end first)")
    predictions: dict[str, Path] = {}
    for fold in names:
        path, summary = _summary_path(network_dir, fold), summaries[fold]
        scored = _cases_from(summary, fold)
        if scored != "validation":
            raise UserError(f"{path}: fold {fold} scored {scored} cases; postprocessing is chosen on "
                            "cross-validation cases only (folds 0-4)")
        written, _ = find_predictions(path.parent)   # in the cases' own format: .nii.gz, .mha, ...
        for case in [e.get("case") for e in summary.get("per_case", [])] + list(summary.get("missing", [])):
            if str(case) in written:
                predictions[str(case)] = written[str(case)]
            else:
                log.warning("fold %s: no prediction of case %s in %s, left out", fold, case, path.parent)
    return names, predictions


def _summary_path(network_dir: Path, fold: str) -> Path:
    return network_dir / f"fold_{fold}" / "validation" / "summary.json"


def _cases_from(summary: Any, fold: str) -> str:
    """'validation' or 'test' (a summary written before `cases_from` existed: by the fold's name)."""
    if not isinstance(summary, dict):
        return "unreadable"
    return str(summary.get("cases_from") or ("validation" if fold.isdigit() else "test"))


def find_postprocessing(network_dir: str | Path, folds: Sequence[str] | None = None, workers: int = 1,
                        progress: bool = True) -> tuple[Choice, Path]:
    """Choose the postprocessing of a results network folder on its folds' validation cases and
    write it to `postprocessing.json` there (what pfseg_predict applies); returns (choice, path).

    References are the label files the folder's dataset.json lists; the scheme and target come
    from its plans.json.
    """
    from pfseg_pipeline.fileio import read_json, write_json
    from pfseg_pipeline.inference.postprocessing import POSTPROCESSING_FILE
    from pfseg_pipeline.plans import load_plans

    network_dir = Path(network_dir)
    if not network_dir.is_dir():
        raise UserError(f"{network_dir}: no such results folder (train the network first)")
    plans = load_plans(network_dir / "plans.json")
    dataset_file = network_dir / "dataset.json"
    entries = read_json(dataset_file).get("cases", [])
    references = {str(c["case"]): Path(c["label"]) for c in entries if isinstance(c, dict) and c.get("label")}
    folds, predictions = validation_predictions(network_dir, folds)
    for case in sorted(set(predictions) - set(references)):
        log.warning("case %s: no label file in %s, left out", case, dataset_file)
    predictions = {c: p for c, p in predictions.items() if c in references}
    choice = choose_postprocessing(predictions, {c: references[c] for c in predictions}, plans.scheme,
                                   plans.target, workers, progress)
    choice.folds = folds
    out = network_dir / POSTPROCESSING_FILE
    write_json(out, choice.to_json(dataset=plans.dataset_name, network=network_dir.name))
    return choice, out
