"""Predict a folder of cases: read and preprocess ahead, run the network, export behind.

    reader threads (at most `workers` cases ahead) -> network (this thread) -> writer thread

Reading + preprocessing of the next cases and exporting of finished ones overlap the network's
work; both queues are bounded, so memory holds at most `workers` preprocessed cases and two
cases waiting to be written. A bad case (unreadable, missing modality, modalities on different
grids) is reported in one line and skipped; the rest are predicted, and the report lists every
failure. `predict_folder` is what `pfseg_predict`, the trainer's validation and the demo call.

Per-case timings (seconds) go to `timings.json` in the output folder:
`{"per_case": [{"case", "read", "preprocess", "network", "export", "total"}], "device",
"network", "folds", "tta", ...}`; `total` is the sum of the four stages for that case (with
the overlap, the folder's wall time is less than the sum of the totals: see `wall_seconds`).
With a training distribution (`inference.distribution`), each per-case entry also has
`out_of_distribution` (the reasons, empty when the case looks like the training cases) and the
top level lists the flagged cases. The folder's `label_scheme.json` records the label values
written (`data.scheme_record`). Label maps are written in the input's format, or `output_format`.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import traceback
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pfseg_pipeline.data.image_io import image_format
from pfseg_pipeline.data.labels import LabelScheme, region_names
from pfseg_pipeline.data.layouts import Case, discover
from pfseg_pipeline.data.scheme_record import read_scheme_record, same_regions, write_scheme_record
from pfseg_pipeline.errors import UserError
from pfseg_pipeline.fileio import read_json, write_json
from pfseg_pipeline.inference.distribution import TrainingDistribution
from pfseg_pipeline.inference.export import export_prediction
from pfseg_pipeline.inference.postprocessing import Postprocessing
from pfseg_pipeline.inference.predictor import Predictor
from pfseg_pipeline.plans import Plans

log = logging.getLogger(__name__)

OUTPUT_SUFFIX = ".nii.gz"
TIMINGS_FILE = "timings.json"


@dataclass
class CaseFailure:
    case: str
    reason: str
    internal: bool = False   # an unexpected error (a bug), not a problem with the input

    def line(self) -> str:
        return f"case {self.case}: {self.reason}" if self.case else self.reason


@dataclass
class PredictionReport:
    """What `predict_folder` did: predicted, skipped (output present) and failed cases."""

    output_dir: Path
    predicted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[CaseFailure] = field(default_factory=list)
    timings: list[dict[str, Any]] = field(default_factory=list)
    wall_seconds: float = 0.0
    out_of_distribution: dict[str, list[str]] = field(default_factory=dict)   # case -> reasons

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        text = (f"{len(self.predicted)} case(s) predicted, {len(self.skipped)} skipped (output present), "
                f"{len(self.failed)} failed")
        if self.failed:
            text += ":\n" + "\n".join(f"  {f.line()}" for f in self.failed)
        return text


@dataclass
class _Loaded:
    case: Case
    image: np.ndarray
    properties: dict[str, Any]
    read: float
    preprocess: float


def output_path(output_dir: Path, case_id: str, case: Case | None = None,
                output_format: str = "auto") -> Path:
    """`<case>.<format>`: the format asked for, or (`auto`) the case's first image's: .mha and .nrrd
    as they came, NIfTI (.nii or .nii.gz) as .nii.gz."""
    if output_format == "auto":
        kind = image_format(next(iter(case.images.values()))) if case is not None else "nii.gz"
        suffix = OUTPUT_SUFFIX if kind in ("nii", "nii.gz") else f".{kind}"
    else:
        suffix = f".{output_format}"
    return output_dir / f"{case_id}{suffix}"


def check_folders(input_dir: Path | None, output_dir: Path) -> None:
    """Refuse, with one line each, a missing or empty input, an output inside the input, or an
    output folder that cannot be written."""
    out = output_dir.expanduser().resolve()
    if input_dir is not None:
        if not input_dir.exists():
            raise UserError(f"{input_dir}: input folder does not exist")
        if not input_dir.is_dir():
            raise UserError(f"{input_dir}: input path is not a folder")
        inp = input_dir.expanduser().resolve()
        if out == inp or inp in out.parents:
            raise UserError(f"{output_dir}: the output folder lies inside the input folder {input_dir}; "
                            "choose an output outside it (predictions would mix with the scans)")
        if not any(inp.iterdir()):
            raise UserError(f"{input_dir}: input folder is empty")
    if out.exists() and not out.is_dir():
        raise UserError(f"{output_dir}: output path exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".pfseg-write-test.", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(f"{output_dir}: output folder is not writable ({exc.strerror or exc})") from exc


def _read_and_preprocess(case: Case, plans: Plans) -> _Loaded:
    from pfseg_pipeline.preprocessing.case import preprocess_case

    t0 = time.perf_counter()
    result = preprocess_case(case, plans, with_label=False)
    elapsed = time.perf_counter() - t0
    image, properties = result[0], result[-1]
    timing = properties.get("timings", {}) if isinstance(properties, dict) else {}
    read = float(timing.get("read", 0.0))
    return _Loaded(case, np.asarray(image, dtype=np.float32), properties, read, max(0.0, elapsed - read))


def predict_folder(input_dir: str | os.PathLike | None, output_dir: str | os.PathLike,
                   model_dir: str | os.PathLike | None = None, *, predictor: Predictor | None = None,
                   cases: Sequence[Case] | None = None, problems: Sequence[str] = (),
                   folds: Sequence[str | int] | None = None,
                   checkpoint: str = "final", device: str = "auto", tta: bool | None = None,
                   save_probabilities: bool = False, overwrite: bool = False, workers: int = 2,
                   exclude: Sequence[str] = (), label_scheme: LabelScheme | None = None,
                   progress: bool = True, output_format: str = "auto",
                   distribution: TrainingDistribution | None = None,
                   postprocessing: Postprocessing | None = None) -> PredictionReport:
    """Segment every case of a folder; one `<case>.nii.gz` per case in `output_dir`.

    Parameters
    ----------
    input_dir : cases in any layout `data.layouts.discover` reads (BraTS, nnU-Net raw, flat);
        labels are not needed. None when `cases` is given.
    output_dir : where label maps, `timings.json` (and `<case>.npz` probabilities) go.
    model_dir : a results network folder (plans.json + fold_*/checkpoint_*.pt); not needed
        when a ready `predictor` is passed (the trainer's validation does that).
    cases : predict these cases instead of discovering `input_dir`.
    problems : with `cases`, the lines of the discovery that found them (bad cases of the
        folder): reported as failures, as when this function discovers the folder itself.
    folds, checkpoint, device, tta : how to build the predictor from `model_dir` (`tta` None:
        the plan's `training.tta`).
    save_probabilities : also write `<case>.npz` (source-grid probabilities, float16).
    overwrite : predict cases whose output exists (they are skipped otherwise).
    workers : reader threads; at most this many cases are read ahead (0: no threads).
    exclude : case ids to leave out.
    label_scheme : label values to write (default: the plans' scheme).
    output_format : "auto" (each case's input format), "nii.gz", "nii", "mha" or "nrrd".
    distribution : the training cases' ranges; each case is checked against them.
    postprocessing : applied to every label map before it is written (pfseg_predict passes the
        model folder's postprocessing.json); recorded in `timings.json` either way.

    Returns a `PredictionReport`; a bad case is in `report.failed`, never an exception. A
    problem with the folders or the model is a `UserError`.
    """
    t_start = time.perf_counter()
    output_dir = Path(output_dir)
    input_path = Path(input_dir) if input_dir is not None else None
    if input_path is None and cases is None:
        raise ValueError("predict_folder needs input_dir or cases")
    check_folders(input_path if cases is None else None, output_dir)

    if predictor is None:
        if model_dir is None:
            raise ValueError("predict_folder needs model_dir or predictor")
        predictor = Predictor.from_model_dir(model_dir, folds, checkpoint, device=device, tta=tta)
    plans = predictor.plans
    scheme = label_scheme or plans.scheme
    names = region_names(plans.target)
    report = PredictionReport(output_dir)
    recorded = read_scheme_record(output_dir)
    if recorded is not None and not same_regions(recorded, scheme) and not overwrite:
        raise UserError(f"{output_dir}: holds predictions in the {recorded.name} label scheme; this run "
                        f"writes {scheme.name} (choose another folder, or --overwrite)")

    if cases is None:
        found = discover(input_path, tuple(plans.modalities), require_label=False, exclude=tuple(exclude))
        if not found.cases and len(found.problems) == 1 and "no cases found" in found.problems[0]:
            raise UserError(found.problems[0])
        report.failed.extend(CaseFailure("", p) for p in found.problems)
        cases = found.cases
    else:
        cases = [c for c in cases if c.case_id not in set(exclude)]
        report.failed.extend(CaseFailure("", p) for p in problems)

    todo = []
    for case in cases:
        done = output_path(output_dir, case.case_id, case, output_format).is_file() and (
            not save_probabilities or (output_dir / f"{case.case_id}.npz").is_file())
        if done and not overwrite:
            report.skipped.append(case.case_id)
        else:
            todo.append(case)
    if report.skipped:
        log.info("%d case(s) already predicted in %s: skipped (--overwrite to redo them)",
                 len(report.skipped), output_dir)
    for failure in report.failed:
        log.error("%s", failure.line())

    if todo:
        log.info("predicting %d case(s) with %s (%s, fold(s) %s%s) on %s", len(todo), predictor.network_name,
                 "whole volume" if predictor.patch_free else "sliding window",
                 ", ".join(predictor.folds) or "given", ", mirror TTA" if predictor.tta else "",
                 predictor.device)
        _run_pipeline(todo, predictor, plans, scheme, names, output_dir, save_probabilities,
                      max(0, int(workers)), report, progress, output_format, distribution, postprocessing)
    write_scheme_record(output_dir, scheme, plans.target)

    report.wall_seconds = time.perf_counter() - t_start
    # cases skipped this time keep the timings of the run that predicted them
    previous = _previous_timings(output_dir / TIMINGS_FILE)
    order = {case.case_id: i for i, case in enumerate(cases)}
    per_case = [previous[c] for c in report.skipped if c in previous] + report.timings
    per_case.sort(key=lambda t: order.get(t["case"], len(order)))
    write_json(output_dir / TIMINGS_FILE, {
        "per_case": per_case,
        "device": str(predictor.device),
        "network": predictor.network_name,
        "folds": list(predictor.folds),
        "tta": predictor.tta,
        "checkpoint": predictor.checkpoint,
        "patch_free": predictor.patch_free,
        "wall_seconds": round(report.wall_seconds, 4),
        "failed": [f.line() for f in report.failed],
        "postprocessing": {"applied": postprocessing is not None,
                           "steps": postprocessing.describe() if postprocessing is not None else "none"},
        "out_of_distribution": report.out_of_distribution,
    })
    log.info("%s", report.summary())
    return report


def _previous_timings(path: Path) -> dict[str, dict]:
    """Per-case entries of an earlier timings.json (empty when absent or unreadable)."""
    if not path.is_file():
        return {}
    try:
        entries = read_json(path).get("per_case", [])
        return {str(e["case"]): e for e in entries if isinstance(e, dict) and "case" in e}
    except (UserError, AttributeError, TypeError):
        return {}


def _run_pipeline(todo: list[Case], predictor: Predictor, plans: Plans, scheme: LabelScheme,
                  names: Sequence[str], output_dir: Path, save_probabilities: bool, workers: int,
                  report: PredictionReport, progress: bool, output_format: str = "auto",
                  distribution: TrainingDistribution | None = None,
                  postprocessing: Postprocessing | None = None) -> None:
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    readers = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pfseg-read") if workers else None
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pfseg-write")
    ahead: deque[tuple[Case, Future | None]] = deque()
    writes: deque[tuple[Case, Future, dict]] = deque()
    queue = iter(todo)

    def fill() -> None:
        while len(ahead) < max(1, workers):
            case = next(queue, None)
            if case is None:
                return
            ahead.append((case, readers.submit(_read_and_preprocess, case, plans) if readers else None))

    def finish_write(bar) -> None:
        case, future, timing = writes.popleft()
        try:
            timing["export"] = future.result()
        except Exception as exc:
            _record_failure(report, case, exc)
        else:
            timing["total"] = sum(timing[k] for k in ("read", "preprocess", "network", "export"))
            log.info("%s: read %.2f s, preprocess %.2f s, network %.2f s, export %.2f s", case.case_id,
                     *(timing[k] for k in ("read", "preprocess", "network", "export")))
            report.timings.append({k: round(v, 4) if isinstance(v, float) else v
                                   for k, v in timing.items()})
            report.predicted.append(case.case_id)
        bar.update(1)

    try:
        with logging_redirect_tqdm(), tqdm(total=len(todo), unit="case", disable=not progress,
                                           desc="predict") as bar:
            fill()
            while ahead:
                case, future = ahead.popleft()
                try:
                    loaded = future.result() if future is not None else _read_and_preprocess(case, plans)
                except Exception as exc:
                    _record_failure(report, case, exc)
                    bar.update(1)
                    fill()
                    continue
                fill()  # start reading the next case before the network starts on this one
                unusual = distribution.check_case(case.case_id, loaded.properties.get("appearance")) \
                    if distribution is not None else None
                if unusual:
                    report.out_of_distribution[case.case_id] = unusual
                try:
                    t0 = time.perf_counter()
                    probabilities = predictor.predict_preprocessed(loaded.image)
                    network = time.perf_counter() - t0
                except Exception as exc:
                    _record_failure(report, case, exc)
                    bar.update(1)
                    continue
                del loaded.image
                timing = {"case": case.case_id, "read": loaded.read, "preprocess": loaded.preprocess,
                          "network": network}
                if unusual is not None:
                    timing["out_of_distribution"] = unusual
                while len(writes) >= 2:  # bounded: at most two finished cases wait for the writer
                    finish_write(bar)
                writes.append((case, writer.submit(_export, loaded, probabilities, plans, scheme, names,
                                                   output_dir, save_probabilities, output_format,
                                                   postprocessing), timing))
            while writes:
                finish_write(bar)
    finally:
        for _, future in ahead:
            if future is not None:
                future.cancel()
        if readers:
            readers.shutdown(wait=True, cancel_futures=True)
        writer.shutdown(wait=True)


def _export(loaded: _Loaded, probabilities: np.ndarray, plans: Plans, scheme: LabelScheme,
            names: Sequence[str], output_dir: Path, save_probabilities: bool,
            output_format: str = "auto", postprocessing: Postprocessing | None = None) -> float:
    t0 = time.perf_counter()
    case = loaded.case
    reference = case.images[plans.modalities[0]]
    export_prediction(probabilities, loaded.properties, reference,
                      output_path(output_dir, case.case_id, case, output_format),
                      scheme, plans.target, names,
                      probabilities_path=output_dir / f"{case.case_id}.npz" if save_probabilities else None,
                      postprocessing=postprocessing)
    return time.perf_counter() - t0


def _record_failure(report: PredictionReport, case: Case, exc: BaseException) -> None:
    if isinstance(exc, UserError):
        failure = CaseFailure(case.case_id, str(exc))
    elif isinstance(exc, (OSError, MemoryError)):
        failure = CaseFailure(case.case_id, f"{type(exc).__name__}: {exc}")
    else:
        failure = CaseFailure(case.case_id, f"internal error ({type(exc).__name__}: {exc}); "
                              "traceback in the log file", internal=True)
        # the traceback must reach the log file even without --verbose
        log.error("case %s: unexpected error\n%s", case.case_id, "".join(traceback.format_exception(exc)))
    if not failure.internal:
        log.error("%s", failure.line())
    report.failed.append(failure)
