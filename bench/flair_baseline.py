"""A FLAIR-threshold baseline: the floor a trained network has to clear.

Whole tumour = FLAIR (as cached: z-scored inside the brain) above one global threshold, chosen
to maximise the mean WT Dice over the fold's TRAINING cases on the cached grid, then applied to
the fold's validation cases. Their masks are exported to the native grid and scored by the same
evaluation as the networks, into `results/NAME/flair_threshold/fold_K/validation/`, so the row
appears in `pfseg_compare`'s table. It predicts the whole tumour only: TC and ET stay empty.

    python -m bench.flair_baseline NAME [-f FOLD] [--workspace DIR]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from pfseg_pipeline.data.labels import labels_to_regions, region_names
from pfseg_pipeline.data.layouts import Case
from pfseg_pipeline.data.scheme_record import write_scheme_record
from pfseg_pipeline.errors import UserError
from pfseg_pipeline.fileio import load_npz, read_json, write_json
from pfseg_pipeline.paths import Workspace
from pfseg_pipeline.plans import load_plans

log = logging.getLogger(__name__)
METHOD = "flair_threshold"
THRESHOLDS = np.linspace(0.0, 4.0, 81)   # z-scores: from the brain mean to 4 standard deviations

def _flair_and_wt(cases_dir: Path, case_id: str, channel: int, plans) -> tuple[np.ndarray, np.ndarray]:
    arrays = load_npz(cases_dir / f"{case_id}.npz")
    wt = labels_to_regions(arrays["seg"], plans.scheme, "wt")[0]
    return arrays["image"][channel].astype(np.float32), wt

def fit_threshold(cases_dir: Path, case_ids: list[str], channel: int, plans) -> tuple[float, float]:
    """The threshold of best mean WT Dice over `case_ids`, and that Dice."""
    sums = np.zeros(len(THRESHOLDS))
    for case_id in case_ids:
        flair, wt = _flair_and_wt(cases_dir, case_id, channel, plans)
        in_brain = flair[flair != 0]
        truth = wt[flair != 0]
        for i, t in enumerate(THRESHOLDS):
            predicted = in_brain > t
            denominator = predicted.sum() + truth.sum()
            sums[i] += 1.0 if denominator == 0 else 2.0 * np.sum(predicted & truth) / denominator
    best = int(np.argmax(sums))
    return float(THRESHOLDS[best]), float(sums[best] / max(1, len(case_ids)))

def run_baseline(workspace: Workspace, name: str, fold: str = "0") -> dict:
    """Fit on the fold's training cases, score its validation cases; returns the summary."""
    from pfseg_pipeline.evaluation.evaluate import evaluate_folder, write_per_case_csv
    from pfseg_pipeline.inference.export import export_prediction
    from pfseg_pipeline.splits import select_split

    plans = load_plans(workspace.plans_file(name))
    if "flair" not in plans.modalities:
        raise UserError(f"{workspace.plans_file(name)}: the plan has no flair channel")
    channel = plans.modalities.index("flair")
    preprocessed = workspace.preprocessed(name)
    cases_dir = workspace.cases_dir(name)
    train_ids, val_ids = select_split(read_json(preprocessed / "splits.json"), "folds", fold)
    if not val_ids:
        raise UserError(f"fold {fold} has no validation cases")
    threshold, train_dice = fit_threshold(cases_dir, train_ids, channel, plans)
    log.info("FLAIR threshold %.2f (z-score): mean WT Dice %.4f on %d training cases", threshold,
             train_dice, len(train_ids))

    sources = {c["case"]: Case.from_json(c) for c in read_json(workspace.dataset_file(name))["cases"]}
    out_dir = workspace.fold_dir(name, METHOD, fold) / "validation"
    names = region_names(plans.target)
    for case_id in val_ids:
        flair, _ = _flair_and_wt(cases_dir, case_id, channel, plans)
        regions = np.zeros((len(names), *flair.shape), np.float32)
        regions[0] = flair > threshold
        case = sources[case_id]
        export_prediction(regions, read_json(cases_dir / f"{case_id}.json"), next(iter(case.images.values())),
                          out_dir / f"{case_id}.nii.gz", plans.scheme, plans.target, names)
    write_scheme_record(out_dir, plans.scheme, plans.target)   # as every prediction folder does
    summary = evaluate_folder(None, out_dir, scheme=plans.scheme, target=plans.target, progress=False,
                              write=False, references={c: sources[c].label for c in val_ids})
    summary.update({"method": "FLAIR > threshold fitted on the training cases (whole tumour only)",
                    "threshold_zscore": threshold, "train_wt_dice": train_dice, "checkpoint": "none",
                    "cases_from": "validation"})
    write_json(out_dir / "summary.json", summary)
    write_per_case_csv(summary, out_dir / "summary.csv")
    write_json(out_dir.parent / "train_summary.json", {"parameters": 0, "network": METHOD,
                                                       "threshold_zscore": threshold})
    return summary

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.flair_baseline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name")
    parser.add_argument("-f", "--fold", default="0")
    parser.add_argument("--workspace", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    summary = run_baseline(Workspace.resolve(args.workspace), args.name, args.fold)
    wt = summary["summary"]["WT"]["dice"]
    print(f"FLAIR threshold baseline, validation WT Dice {wt['mean']:.4f} ({wt['std']:.4f}), n={wt['n']}")
    return 0

if __name__ == "__main__":
    sys.exit(main())
