"""verify -> fingerprint -> plan -> preprocess: what `pfseg_plan_and_preprocess` runs.

The preprocessing stage from a raw dataset: it calls the planners (fingerprint, plan) and then
this package's cache writer; the splits (splits.py) are written here, with the plans' seed.

Writes into `preprocessed/NAME/` of the workspace: fingerprint.json, plans.json, dataset.json,
splits.json, cases/, and plan_and_preprocess.log (the log of this run, appended). Nothing is
written when verification finds a problem. The folder is locked while it is written
(`locks.exclusive`): a second run on it, or one started while a training reads it, is refused.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pfseg_pipeline import locks, presets
from pfseg_pipeline.data.labels import LabelScheme
from pfseg_pipeline.data.layouts import MODALITIES
from pfseg_pipeline.errors import UserError
from pfseg_pipeline.fileio import write_json
from pfseg_pipeline.paths import Workspace
from pfseg_pipeline.plans import save_plans

log = logging.getLogger(__name__)

LOG_FILE = "plan_and_preprocess.log"


def default_modalities(preset: str) -> tuple[str, ...]:
    """The modalities a preset reads when none are asked for: the paper's T2, else all four."""
    return tuple(presets.PAPER_MODALITIES) if preset == "paper" else MODALITIES


def plan_and_preprocess(raw: str | os.PathLike, name: str,
                        workspace: Workspace | str | os.PathLike | None = None,
                        preset: str = "default", modalities: Sequence[str] | None = None,
                        gpu_memory_gb: float = 11.0, lr_scale: Sequence[int] | int | None = None,
                        workers: int | None = None, exclude: Sequence[str] = (),
                        label_scheme: LabelScheme | str | None = None, target: str | None = None,
                        force: bool = False, progress: bool = True) -> dict[str, Any]:
    """Verify a raw dataset, fingerprint it, plan it and preprocess it into the workspace.

    Parameters
    ----------
    raw : the raw dataset folder (BraTS layout, nnU-Net raw, or flat).
    name : the dataset's name in the workspace (preprocessed/NAME).
    workspace : a `Workspace` or its root (default: $PFSEG_HOME, else ./pfseg_data).
    preset, modalities, gpu_memory_gb, lr_scale, target : passed to the planner.
    workers : worker processes (default: from the CPU count and the free memory).
    exclude : case ids to leave out.
    label_scheme : a scheme or its name (default: what the dataset declares, else brats2020).
    force : rebuild every cached case even when it is current.

    Returns a summary dict: cases, plan highlights, predicted memory, seconds per stage.
    """
    from pfseg_pipeline.data.verify import verify_dataset
    from pfseg_pipeline.planners.fingerprint import compute_fingerprint, save_fingerprint
    from pfseg_pipeline.planners.planner import plan, plan_summary
    from pfseg_pipeline.preprocessing.cache import default_workers, preprocess_dataset, write_dataset_json
    from pfseg_pipeline.splits import write_splits

    ws = workspace if isinstance(workspace, Workspace) else Workspace.resolve(workspace)
    out = ws.preprocessed(name)
    locks.check_free(out, "preprocessed dataset")  # before a long verification, not after it
    requested_modalities = list(modalities) if modalities else None
    modalities = tuple(modalities) if modalities else default_modalities(preset)
    requested_workers = workers
    cpu_workers = workers or max(1, min(8, os.cpu_count() or 1))
    seconds: dict[str, float] = {}
    t_start = time.perf_counter()

    t0 = time.perf_counter()
    report = verify_dataset(raw, modalities=modalities, require_label=True, exclude=tuple(exclude),
                            label_scheme=label_scheme, workers=cpu_workers, progress=progress)
    report.raise_for_problems()
    if not report.cases:
        raise UserError(f"{raw}: no usable cases")
    seconds["verify"] = time.perf_counter() - t0

    # one run rewrites a dataset at a time, and never while a training reads it (locks.py)
    with locks.exclusive(out, "preprocessed dataset"), _log_to(out / LOG_FILE):
        log.info("plan_and_preprocess %s -> %s (preset %s, modalities %s, budget %g GiB)", raw, out, preset,
                 " ".join(modalities), gpu_memory_gb)
        log.info("verified %d case(s), layout %s, label scheme %s (%.1f s)", len(report.cases), report.layout,
                 report.label_scheme.name, seconds["verify"])
        scheme = report.label_scheme

        t0 = time.perf_counter()
        # a fingerprint worker holds a whole case, as a preprocessing worker does: the same bound
        largest = max((math.prod(g.shape_zyx) for g in report.geometries.values()), default=0)
        fingerprint_workers = default_workers(largest, len(modalities), len(report.cases), cpus=cpu_workers)
        fingerprint = compute_fingerprint(report.cases, modalities, scheme, workers=fingerprint_workers,
                                          progress=progress)
        save_fingerprint(fingerprint, out / "fingerprint.json")
        seconds["fingerprint"] = time.perf_counter() - t0
        log.info("fingerprint: %d case(s), median shape %s, median spacing %s (%.1f s)", len(report.cases),
                 fingerprint["dataset"]["median_shape_zyx"], fingerprint["dataset"]["median_spacing_zyx"],
                 seconds["fingerprint"])

        t0 = time.perf_counter()
        plans = plan(fingerprint, {"name": name}, preset=preset, modalities=requested_modalities,
                     gpu_memory_gb=gpu_memory_gb, lr_scale=lr_scale, target=target, label_scheme=scheme)
        save_plans(plans, out / "plans.json")
        seconds["plan"] = time.perf_counter() - t0
        highlights = plan_summary(plans)
        log.info("plan: HR %s, LR scale %s (LR %s), guidance %s, batch %d, PFSeg branches %s, baseline patch "
                 "%s (%.1f s)", _x(plans.hr_shape_zyx), _x(plans.lr_scale_zyx), _x(plans.lr_shape_zyx),
                 _x(plans.guidance.patch_shape_zyx), plans.batch_size, plans.training.pfseg_branches,
                 _x(plans.patch_based.patch_shape_zyx), seconds["plan"])
        log.info("predicted training-step peak (GiB, budget %g): %s", gpu_memory_gb,
                 ", ".join(f"{k} {v:.2f}" for k, v in highlights["predicted_peak_gb"].items()))

        write_dataset_json(out / "dataset.json", name, report.cases, list(modalities), scheme, report.layout,
                           plans.target, Path(raw).absolute())
        write_splits(out / "splits.json", [c.case_id for c in report.cases], plans.training.split_seed)

        t0 = time.perf_counter()
        n_workers = default_workers(fingerprint["dataset"]["max_source_voxels"], len(modalities),
                                    len(report.cases), cpus=cpu_workers)
        if requested_workers:
            n_workers = min(n_workers, requested_workers)
        results = preprocess_dataset(report.cases, plans, out, workers=n_workers, force=force,
                                     progress=progress)
        seconds["preprocess"] = time.perf_counter() - t0
        written = sum(1 for r in results if r["status"] == "written")
        skipped = sum(1 for r in results if r["status"] == "skipped")
        log.info("preprocessed %d case(s) with %d worker(s): %d written, %d unchanged (%.1f s)", len(results),
                 n_workers, written, skipped, seconds["preprocess"])
        seconds["total"] = time.perf_counter() - t_start
        summary = {
            "dataset": name,
            "preprocessed": str(out),
            "cases": len(report.cases),
            "written": written,
            "skipped": skipped,
            "workers": n_workers,
            "plan": highlights,
            "seconds": {k: round(v, 2) for k, v in seconds.items()},
        }
        write_json(out / "plan_and_preprocess_summary.json", summary)
        log.info("done in %.1f s: %s", seconds["total"], out)
    return summary


def _x(values: Sequence) -> str:
    return "x".join(str(v) for v in values)


class _log_to:
    """Send this package's log records (INFO and up) to `path` for the duration of a block."""

    def __init__(self, path: Path):
        self.path = path
        self.logger = logging.getLogger("pfseg_pipeline")

    def __enter__(self):
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.handler = logging.FileHandler(self.path, encoding="utf-8")
        except PermissionError as exc:
            raise UserError(f"{self.path.parent}: cannot write, permission denied "
                            "(read-only folder?)") from exc
        except OSError as exc:
            raise UserError(f"{self.path.parent}: cannot write ({exc.strerror or exc})") from exc
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.handler.setLevel(logging.INFO)
        self.old_level = self.logger.level
        if self.logger.getEffectiveLevel() > logging.INFO:
            self.logger.setLevel(logging.INFO)
        self.logger.addHandler(self.handler)
        return self

    def __exit__(self, *exc):
        self.logger.removeHandler(self.handler)
        self.handler.close()
        self.logger.setLevel(self.old_level)
        return False
