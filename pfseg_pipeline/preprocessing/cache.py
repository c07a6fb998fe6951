"""The preprocessed cache: `cases/<case>.npz` + `cases/<case>.json`, written idempotently.

A case is skipped on a rerun when its json records the same plans hash and the same source
files (size and mtime match, or, when they differ, the sha256 still matches) and its npz loads
completely (every member read, so a truncated or corrupted file fails its zip CRC). Anything
else is rebuilt. Files are written atomically, npz first and json last, so a crash between the
two leaves a case that the next run rebuilds.

Cases run in worker processes (spawned, so a parent that already used torch's thread pools
never forks them), one case per task, so memory is bounded by the number of workers.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pfseg_pipeline.data.labels import LabelScheme
from pfseg_pipeline.data.layouts import Case
from pfseg_pipeline.errors import UserError, VerificationError
from pfseg_pipeline.fileio import file_sha256, load_npz, read_json, save_npz, write_json
from pfseg_pipeline.parallel import map_cases, workers_for_memory
from pfseg_pipeline.plans import Plans

log = logging.getLogger(__name__)

# Bytes a worker holds per voxel of the source grid for each image channel: the read volume,
# the cropped copy, the normalised copy, the resampled copy (float32 each), with slack.
BYTES_PER_VOXEL_PER_CHANNEL = 16
# ... and for the label: uint8 map, two float32 one-hot scores and the output (with slack).
BYTES_PER_VOXEL_LABEL = 12


def source_files(case: Case, modalities: Sequence[str]) -> dict[str, Path]:
    """The files a cached case depends on: each modality and the label."""
    files = {m: Path(case.images[m]) for m in modalities}
    if case.label is not None:
        files["label"] = Path(case.label)
    return files


def source_records(case: Case, modalities: Sequence[str]) -> dict[str, dict[str, Any]]:
    """path, size, mtime_ns and sha256 of each source file."""
    records = {}
    for key, path in source_files(case, modalities).items():
        st = path.stat()
        records[key] = {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                        "sha256": file_sha256(path)}
    return records


def _sources_unchanged(recorded: dict, case: Case, modalities: Sequence[str]) -> bool:
    files = source_files(case, modalities)
    if not isinstance(recorded, dict) or set(recorded) != set(files):
        return False
    for key, path in files.items():
        rec = recorded[key]
        if not isinstance(rec, dict) or rec.get("path") != str(path):
            return False
        try:
            st = path.stat()
        except OSError:
            return False
        if st.st_size == rec.get("size") and st.st_mtime_ns == rec.get("mtime_ns"):
            continue  # the fast check: same size and modification time
        if st.st_size != rec.get("size") or file_sha256(path) != rec.get("sha256"):
            return False  # touched and changed (a touched but identical file passes)
    return True


def cached_case_is_current(case: Case, plans: Plans, cases_dir: Path) -> bool:
    """Whether `cases_dir` holds a complete, loadable cache of `case` for these plans."""
    json_path = cases_dir / f"{case.case_id}.json"
    npz_path = cases_dir / f"{case.case_id}.npz"
    if not json_path.is_file() or not npz_path.is_file():
        return False
    try:
        properties = read_json(json_path)
    except UserError:
        return False
    if not isinstance(properties, dict) or properties.get("plans_hash") != plans.hash():
        return False
    if not _sources_unchanged(properties.get("sources"), case, plans.modalities):
        return False
    try:
        arrays = load_npz(npz_path)
    except UserError as exc:
        log.warning("%s; rebuilding it", exc)
        return False
    image = arrays.get("image")
    expected = (len(plans.modalities), *properties.get("resampled_shape_zyx", []))
    if image is None or image.shape != expected or image.dtype != np.float32:
        return False
    if case.label is not None:
        seg = arrays.get("seg")
        if seg is None or seg.shape != expected[1:] or seg.dtype != np.uint8:
            return False
    return True


def build_case(case: Case, plans: Plans, cases_dir: Path) -> dict[str, Any]:
    """Preprocess one case and write its npz and json (atomically, npz first)."""
    from pfseg_pipeline.preprocessing.case import preprocess_case

    image, seg, properties = preprocess_case(case, plans)
    properties["sources"] = source_records(case, plans.modalities)
    arrays = {"image": image.astype(np.float32, copy=False)}
    if seg is not None:
        arrays["seg"] = seg.astype(np.uint8, copy=False)
    save_npz(cases_dir / f"{case.case_id}.npz", **arrays)
    write_json(cases_dir / f"{case.case_id}.json", properties)
    return properties


def process_case(case_json: dict, plans_json: dict, cases_dir: str, force: bool = False) -> dict[str, Any]:
    """Worker task: skip a current case, else build it. Returns a small status record."""
    t0 = time.perf_counter()
    case = Case.from_json(case_json)
    plans = Plans.from_json(plans_json)
    cases_dir = Path(cases_dir)
    try:
        if not force and cached_case_is_current(case, plans, cases_dir):
            return {"case": case.case_id, "status": "skipped", "seconds": time.perf_counter() - t0}
        properties = build_case(case, plans, cases_dir)
    except UserError as exc:
        return {"case": case.case_id, "status": "error", "error": str(exc),
                "seconds": time.perf_counter() - t0}
    return {"case": case.case_id, "status": "written", "seconds": time.perf_counter() - t0,
            "shape_zyx": properties["resampled_shape_zyx"]}


def default_workers(max_source_voxels: int, n_channels: int, n_cases: int,
                    available_bytes: int | None = None, cpus: int | None = None) -> int:
    """Worker processes that fit both the CPUs and the free memory (at least 1).

    Per worker: `parallel.WORKER_BASE_BYTES` plus `BYTES_PER_VOXEL_*` times the largest case's
    voxels (`parallel.workers_for_memory`).
    """
    cpus = cpus if cpus is not None else (os.cpu_count() or 1)
    case_bytes = max_source_voxels * (BYTES_PER_VOXEL_PER_CHANNEL * n_channels + BYTES_PER_VOXEL_LABEL)
    return workers_for_memory(case_bytes, min(cpus, n_cases), available_bytes)


def preprocess_dataset(cases: Sequence[Case], plans: Plans, out_dir: str | os.PathLike,
                       workers: int = 1, force: bool = False, progress: bool = True,
                       remove_stale: bool = True) -> list[dict[str, Any]]:
    """Write `out_dir/cases/<case>.npz|json` for every case; skip those already current.

    Returns one status record per case ({"case", "status": "written" | "skipped", "seconds"}).
    Cases that fail are reported together at the end as a `VerificationError`.
    """
    cases_dir = Path(out_dir) / "cases"
    cases_dir.mkdir(parents=True, exist_ok=True)
    plans_json = plans.to_json()
    tasks = [(c.to_json(), plans_json, str(cases_dir), force) for c in cases]
    results = list(map_cases(process_case, tasks, workers, "preprocess", disable=not progress or None))
    results.sort(key=lambda r: r["case"])
    problems = [r["error"] for r in results if r["status"] == "error"]
    if problems:
        raise VerificationError(problems)
    if remove_stale:
        _remove_stale(cases_dir, {c.case_id for c in cases})
    return results


def _remove_stale(cases_dir: Path, keep: set[str]) -> None:
    """Drop cached cases that are no longer part of the dataset (e.g. newly excluded)."""
    for path in sorted(cases_dir.iterdir()):
        if path.suffix in (".npz", ".json") and path.stem not in keep and not path.name.startswith("."):
            log.info("removing stale cache file %s", path)
            path.unlink(missing_ok=True)


def write_dataset_json(path: str | os.PathLike, name: str, cases: Sequence[Case], modalities: Sequence[str],
                       scheme: LabelScheme, layout: str, target: str, raw_root: str | os.PathLike) -> dict:
    """dataset.json: what was found (cases with their source files, modalities, scheme, layout)."""
    dataset = {
        "name": name,
        "raw_root": str(raw_root),
        "layout": layout,
        "modalities": list(modalities),
        "label_scheme": scheme.to_json(),
        "target": target,
        "n_cases": len(cases),
        "cases": [c.to_json() for c in cases],
    }
    write_json(path, dataset)
    return dataset
