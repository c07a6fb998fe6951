"""Dataset verification: read every voxel of every file and report all problems at once.

`verify_dataset` finds the cases (data/layouts.py), then checks each case's files:
unreadable, zero-byte, truncated or mislabelled-compression files; images that are not 3D (or,
for the MSD's stacked modalities, 4D files without the channel dataset.json names);
NaN or Inf voxels; all-zero images; modalities on different grids (shape or affine, 1e-3 mm
tolerance; both files named); a label map on another grid than its images; label values the
scheme does not declare (listed). Every problem is one line that starts with the file (or the
case) it is about, so a user can fix them all in one pass.

Cases are checked in worker processes, one case per worker at a time, so memory stays bounded
by `workers` cases whatever the dataset size (BraTS 2020: 369 cases x 5 files).
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path

import numpy as np

from pfseg_pipeline.data.image_io import image_format
from pfseg_pipeline.data.labels import BRATS2020, SCHEMES, LabelScheme, get_scheme
from pfseg_pipeline.data.layouts import MODALITIES, Case, discover
from pfseg_pipeline.data.nifti import (
    AFFINE_TOLERANCE_MM,
    Geometry,
    data_error,
    file_problem,
    geometry_of,
    grid_problem,
    load_header,
)
from pfseg_pipeline.data.sitk_io import read_sitk_channels
from pfseg_pipeline.errors import UserError, VerificationError
from pfseg_pipeline.parallel import workers_for_memory

log = logging.getLogger(__name__)

# Memory of a verify worker beyond the process itself (parallel.WORKER_BASE_BYTES): per voxel of
# the largest case one float32 image (4), one file's raw data (up to 4) and boolean temporaries.
VERIFY_BYTES_PER_VOXEL = 12



@dataclass
class VerifyReport:
    """The outcome of `verify_dataset`.

    cases : the cases whose files all passed (sorted by case id).
    problems : one line per problem, each naming the file or case; empty when all is well.
    layout : 'brats' or 'nnunet'.
    label_scheme : the scheme the labels were checked against.
    geometries : case id -> Geometry of its images (for the cases that passed).
    """

    cases: list[Case]
    problems: list[str]
    layout: str
    label_scheme: LabelScheme
    geometries: dict[str, Geometry] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def raise_for_problems(self) -> None:
        """Raise a `VerificationError` listing every problem (no-op when there are none)."""
        if self.problems:
            raise VerificationError(self.problems)


def verify_dataset(root: str | os.PathLike, modalities: tuple[str, ...] = MODALITIES,
                   require_label: bool = True, exclude: tuple[str, ...] = (),
                   label_scheme: LabelScheme | str | None = None, workers: int = 1,
                   progress: bool = False) -> VerifyReport:
    """Find every case under `root` and check all of its files, voxel by voxel.

    Parameters
    ----------
    root : dataset folder (BraTS layout at any depth, nnU-Net raw, or flat).
    modalities : the image modalities every case must have.
    require_label : whether a missing label map is a problem (training data).
    exclude : case ids to leave out (their problems are not reported either).
    label_scheme : a `LabelScheme` or its name; default: what an nnU-Net dataset.json
        declares (its labels read by name), else BraTS 2020.
    workers : processes reading cases in parallel (each holds one case at a time); lowered
        when the free memory cannot hold that many (`memory_bounded_workers`).
    progress : show a progress bar over cases.

    Returns
    -------
    VerifyReport; call `report.raise_for_problems()` to turn problems into a
    `VerificationError`.
    """
    given = get_scheme(label_scheme) if isinstance(label_scheme, str) else label_scheme
    found = discover(root, tuple(modalities), require_label=require_label, exclude=tuple(exclude),
                     label_scheme=given)
    scheme = given or found.label_scheme or BRATS2020
    problems = list(found.problems)
    passed: list[Case] = []
    geometries: dict[str, Geometry] = {}
    workers = memory_bounded_workers(found.cases, workers)
    results = _map_cases(found.cases, scheme, workers, progress)
    for case, (case_problems, geometry) in zip(found.cases, results):
        problems.extend(case_problems)
        if not case_problems:
            passed.append(case)
            if geometry is not None:
                geometries[case.case_id] = geometry
    log.info("verified %d case(s) under %s: %d problem(s)", len(found.cases), root, len(problems))
    return VerifyReport(passed, problems, found.layout, scheme, geometries)


def memory_bounded_workers(cases: list[Case], workers: int, available_bytes: int | None = None) -> int:
    """`workers`, lowered so that every worker fits in the free memory (`parallel.workers_for_memory`).

    A worker holds one image of its case as float32 plus one file's raw data and the check's
    temporaries (`VERIFY_BYTES_PER_VOXEL` per voxel of the largest case, read from the headers
    of each case's first image, which costs no voxel reading) on top of the process itself.
    """
    if workers <= 1 or len(cases) <= 1:
        return max(1, workers)
    voxels = 0
    for case in cases:
        try:
            shape = load_header(next(iter(case.images.values()))).header.get_data_shape()
        except UserError:
            continue  # verify_case reports it
        voxels = max(voxels, int(np.prod(shape[:3])))
    bounded = workers_for_memory(voxels * VERIFY_BYTES_PER_VOXEL, workers, available_bytes)
    if bounded < workers:
        log.info("verify: %d worker(s) instead of %d, to fit the free memory", bounded, workers)
    return bounded


def _map_cases(cases: list[Case], scheme: LabelScheme, workers: int, progress: bool):
    from tqdm import tqdm

    bar = tqdm(total=len(cases), desc="verify", unit="case", leave=False,
               disable=True if not progress else None)
    try:
        if workers <= 1 or len(cases) <= 1:
            for case in cases:
                yield verify_case(case, scheme)
                bar.update(1)
            return
        with ProcessPoolExecutor(max_workers=min(workers, len(cases))) as pool:
            # map() hands one case to a worker at a time (chunksize 1): memory stays bounded
            for result in pool.map(verify_case, cases, repeat(scheme), chunksize=1):
                yield result
                bar.update(1)
    finally:
        bar.close()


def verify_case(case: Case, scheme: LabelScheme = BRATS2020) -> tuple[list[str], Geometry | None]:
    """Check one case's files; return (problems, Geometry of its images or None)."""
    problems: list[str] = []
    reference: tuple[Path, Geometry] | None = None
    files: dict[Path, list[str]] = {}
    for modality, path in case.images.items():
        files.setdefault(Path(path), []).append(modality)
    for path, modalities in files.items():
        modality = modalities[0]
        data, geometry, problem = _read(path, stacked=modality in case.channels)
        if problem:
            problems.append(problem)
            continue
        for m in modalities:
            channel = case.channels.get(m)
            if channel is None:
                problems.extend(_image_problems(path, data))
            elif channel >= data.shape[-1]:
                problems.append(f"{path}: has {data.shape[-1]} volume(s), no channel {channel} ({m})")
            else:
                problems.extend(_image_problems(path, data[..., channel], f" (channel {channel}, {m})"))
        del data
        if reference is None:
            reference = (path, geometry)
        else:
            problems.extend(_grid_problems(path, geometry, *reference, what=f"{modality} image"))
    if case.label is not None:
        data, geometry, problem = _read(case.label, label=True)
        if problem:
            problems.append(problem)
        else:
            problems.extend(_label_problems(case.label, data, scheme))
            if reference is not None:
                problems.extend(_grid_problems(case.label, geometry, *reference, what="label"))
    return problems, (reference[1] if reference else None)


def _read(path: Path, label: bool = False, stacked: bool = False
          ) -> tuple[np.ndarray | None, Geometry | None, str | None]:
    """Read a whole image (a NIfTI in storage order, scaling applied; `stacked`: 4D with the
    channels last); (None, None, problem) on failure."""
    if image_format(path) in ("mha", "nrrd"):
        return _read_sitk(path, label, stacked)
    problem = file_problem(path)  # missing, empty, compression unlike the name
    if problem:
        return None, None, problem
    size = path.stat().st_size
    gz_name = path.name.lower().endswith(".gz")
    try:
        img = load_header(path)
        geometry = geometry_of(img, path, stacked=stacked)
    except UserError as exc:
        return None, None, str(exc)
    if not gz_name:
        # the proxy keeps the file's vox_offset (the loaded header's is reset to 0)
        offset = int(getattr(img.dataobj, "offset", img.header.get_data_offset()))
        needed = offset + int(np.prod(img.header.get_data_shape())) * img.header.get_data_dtype().itemsize
        if size < needed:
            return None, None, f"{path}: truncated file ({size} bytes, the header needs {needed})"
    try:
        if label:
            data = np.asanyarray(img.dataobj)
        else:
            data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as exc:  # EOFError, zlib.error, OSError, ValueError from a short file
        return None, None, f"{path}: {data_error(exc)}"
    if stacked and data.ndim == 3:
        data = data[..., None]
    return data, geometry, None


def _read_sitk(path: Path, label: bool, stacked: bool
               ) -> tuple[np.ndarray | None, Geometry | None, str | None]:
    """An .mha / .nrrd read whole: (Z, Y, X), or (Z, Y, X, C) when `stacked`."""
    try:
        data, geometry = read_sitk_channels(path)
    except UserError as exc:
        return None, None, str(exc)
    if stacked:
        return np.moveaxis(data, 0, -1), geometry, None
    if data.shape[0] != 1:
        return None, None, f"{path}: expected a 3D image, found {data.shape[0]} volumes"
    return data[0], geometry, None


def _image_problems(path: Path, data: np.ndarray, where: str = "") -> list[str]:
    finite = np.isfinite(data)
    if not finite.all():
        n_bad = int(finite.size - np.count_nonzero(finite))
        return [f"{path}: {n_bad} NaN or Inf voxel(s){where}"]
    if not data.any():
        return [f"{path}: image is all zero{where}"]
    return []


def _label_problems(path: Path, data: np.ndarray, scheme: LabelScheme) -> list[str]:
    if data.dtype.kind == "f":
        if not np.isfinite(data).all():
            return [f"{path}: label map holds NaN or Inf voxels"]
        fractional = data != np.rint(data)
        if fractional.any():
            example = float(data[fractional].flat[0])
            return [f"{path}: label map holds non-integer values (e.g. {example:g})"]
    values = _present_values(data)
    bad = [v for v in values if v not in scheme.values]
    if not bad:
        return []
    # BraTS 2023 and the MSD share the values 0-3 (not their meaning): name every candidate
    fitting = [o.name for o in SCHEMES.values() if o.name != scheme.name and set(values) <= set(o.values)]
    hint = f" (labels of {' or '.join(fitting)}? use --label-scheme {'|'.join(fitting)})" if fitting else ""
    return [f"{path}: label values {bad} outside the {scheme.name} scheme "
            f"{list(scheme.values)}{hint}"]


def _present_values(data: np.ndarray) -> list[int]:
    """The distinct (integer) values of a label map, cheaply for the usual 0..255 range."""
    low, high = data.min(), data.max()
    if low >= 0 and high <= 255:
        counts = np.bincount(data.astype(np.uint8, copy=False).ravel(), minlength=256)
        return [int(v) for v in np.flatnonzero(counts)]
    return [int(v) for v in np.unique(data)]


def _grid_problems(path: Path, geometry: Geometry, ref_path: Path, ref: Geometry, what: str) -> list[str]:
    problem = grid_problem(path, geometry, ref_path, ref, what, AFFINE_TOLERANCE_MM)
    return [problem] if problem else []
