"""Validation: the per-epoch Dice and the end-of-training evaluation of held-out cases.

Both go through inference's `Predictor`, so a patch-based baseline is validated with the same
Gaussian sliding window as `pfseg_predict`, and a patch-free network with the same
whole-volume padding (never a crop).

- Per epoch (`ValidationCases`, the callable the trainer gets, through `validation_dice`): mean
  Dice per region on the cached (preprocessed) grid. On the fold's reported cases it is a
  progress curve only; on the monitor cases (carved from the training cases) it drives the
  plateau schedule, early stopping and `checkpoint_best.pt` (training/trainer.py).
- After the last epoch (`evaluate_cases`): the held-out cases are predicted from their SOURCE
  files, exported to their native grid exactly as `pfseg_predict` does, and scored by
  `evaluation` against their native label files (Dice, HD95 in mm, ...). It writes
  `validation/<case>.nii.gz`, `summary.json`, `summary.csv` and `timings.json`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from pfseg_pipeline.data.labels import labels_to_regions, region_names
from pfseg_pipeline.data.layouts import Case
from pfseg_pipeline.errors import UserError
from pfseg_pipeline.evaluation.metrics import dice
from pfseg_pipeline.fileio import write_json
from pfseg_pipeline.inference.predictor import Predictor
from pfseg_pipeline.plans import Plans
from pfseg_pipeline.training.data_loader import load_case

log = logging.getLogger(__name__)


class ValidationCases:
    """Whole cached cases with their region masks, read one at a time.

    Calling it, `(network, device, amp) -> [Dice per region]`, is the trainer's per-epoch
    validation (`training.trainer.Validation`).
    """

    def __init__(self, cases_dir: Path, case_ids: list[str], plans: Plans):
        self.cases_dir = Path(cases_dir)
        self.case_ids = list(case_ids)
        self.plans = plans
        self.regions = region_names(plans.target)

    def __len__(self) -> int:
        return len(self.case_ids)

    def __iter__(self) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        for case_id in self.case_ids:
            image, seg = load_case(self.cases_dir, case_id)
            yield case_id, image, labels_to_regions(seg, self.plans.scheme, self.plans.target)

    def __call__(self, network: torch.nn.Module, device: torch.device, amp: bool = False) -> list[float]:
        return validation_dice(network, self, device, amp)


@contextlib.contextmanager
def predictor_for(network: torch.nn.Module, plans: Plans, device: torch.device,
                  amp: bool = False, tta: bool = False) -> Iterator[Predictor]:
    """A one-model `Predictor` around the network being trained; its train/eval mode is restored."""
    was_training = network.training
    try:
        yield Predictor([network], plans, network.network_name, device=device, amp=amp, tta=tta)
    finally:
        network.train(was_training)


def validation_dice(network: torch.nn.Module, cases: ValidationCases, device: torch.device,
                    amp: bool = False) -> list[float]:
    """Mean Dice per region over the validation cases, on the cached grid (threshold > 0.5)."""
    scores = []
    with predictor_for(network, cases.plans, device, amp) as predictor:
        for _, image, regions in cases:
            predicted = predictor.predict_preprocessed(image) > 0.5
            scores.append([dice(r, p) for r, p in zip(regions, predicted)])
    return np.mean(np.asarray(scores, dtype=np.float64), axis=0).tolist()


def evaluate_cases(network: torch.nn.Module, plans: Plans, cases: Sequence[Case], device: torch.device,
                   out_dir: Path, amp: bool = False, extra: dict | None = None,
                   postprocess: bool = False) -> dict:
    """Predict held-out cases from their source files and score them on their native grid.

    Writes `out_dir/<case>.nii.gz`, `timings.json` (per-case read / preprocess / network /
    export seconds), `summary.json` and `summary.csv`; returns the summary. `extra` adds
    fields (which checkpoint, which cases). With `postprocess` (validation cases only), the
    summary also holds `postprocessed`: the postprocessing chosen on these same cases and the
    metrics with it, labelled as chosen on them (the predictions written stay raw).
    """
    from pfseg_pipeline.evaluation.evaluate import evaluate_folder, write_per_case_csv
    from pfseg_pipeline.inference.pipeline import predict_folder

    out_dir = Path(out_dir)
    # as pfseg_predict will predict with this model: mirror TTA where the plan says (training.tta)
    with predictor_for(network, plans, device, amp, tta=plans.training.tta) as predictor:
        report = predict_folder(None, out_dir, predictor=predictor, cases=list(cases), overwrite=True,
                                workers=1, progress=False)
    for failure in report.failed:
        log.error("validation: %s", failure.line())
    labelled = {c.case_id: c.label for c in cases if c.label is not None}
    summary = evaluate_folder(None, out_dir, scheme=plans.scheme, target=plans.target,
                              references=labelled, progress=False, write=False)
    summary.update(extra or {})
    if postprocess and labelled:
        from pfseg_pipeline.evaluation.postprocessing import postprocessed_summary

        summary["postprocessed"] = postprocessed_summary(out_dir, labelled, plans.scheme, plans.target,
                                                         raw=summary)
    write_json(out_dir / "summary.json", summary)
    write_per_case_csv(summary, out_dir / "summary.csv")
    return summary


def evaluate_held_out(trainer, case_ids: Sequence[str], cases_from: str, split: str, dataset_file: Path,
                      use_best: bool = False) -> dict | None:
    """After training: score the held-out cases (the fold's validation cases, or the test set of
    a named split) on their native grid, from the source files dataset.json lists, with the
    final checkpoint (the best one with `use_best`, where validation chose one). Writes
    `validation/` beside the checkpoints; returns the summary (None without held-out cases)."""
    from pfseg_pipeline.checkpoints import checkpoint_path, load_weights, read_checkpoint
    from pfseg_pipeline.fileio import read_json

    if not case_ids:
        log.info("no held-out cases in this split: no validation/summary.json")
        return None
    which = "final"
    extra = {}
    if use_best:
        if trainer.best["epoch"] is None:
            log.warning("--use-best: no monitor or validation cases chose a best checkpoint; reporting the "
                        "final one")
        else:
            which = "best"
            extra["best_selected_on"] = trainer.best["on"]
    path = checkpoint_path(trainer.output_dir, which)
    load_weights(trainer.network, read_checkpoint(path, trainer.device)["model"], path, "this run's plans")
    sources = {c["case"]: Case.from_json(c) for c in read_json(dataset_file).get("cases", [])}
    unknown = sorted(set(case_ids) - set(sources))
    if unknown:
        raise UserError(f"{dataset_file}: held-out case {unknown[0]} is not listed (re-run "
                        "pfseg_plan_and_preprocess)")
    summary = evaluate_cases(trainer.network, trainer.plans, [sources[c] for c in case_ids], trainer.device,
                             trainer.output_dir / "validation", trainer.amp,
                             extra={"checkpoint": which, "cases_from": cases_from, "split": split, **extra},
                             postprocess=cases_from == "validation")
    for region, metrics in summary["summary"].items():
        log.info("%s (%s cases, %s checkpoint): Dice %.4f", region, cases_from, which,
                 metrics["dice"]["mean"])
    return summary
