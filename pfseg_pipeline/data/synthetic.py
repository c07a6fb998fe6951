"""Synthetic BraTS datasets: the demo's data and the tests' data, written like BraTS 2020.

Two anatomies:
- `blobs` (`data/blobs.py`): a made-up brain of any shape at 1 mm, fast and tiny; the unit
  tests' data. Its output is pinned and never changes.
- `mni152` (`data/mni152.py`): the MNI152 2009 template, warped per case, with gliomas grown
  along its white matter, on the BraTS grid (240 x 240 x 155 mm) at 1, 2 or 4 mm.

Geometry of the written files, stored (X, Y, Z) like every NIfTI, with the affine real BraTS
files carry: diag(-s, -s, s) for spacing s, LPS voxel axes (nibabel's `aff2axcodes` gives
('L', 'P', 'S')), qform_code = sform_code = 1 (scanner); at 1 mm the translation puts voxel
(0, Y-1, 0) at the world origin, and coarser grids cover the same field of view. Images are
int16 (scl_slope 1), labels uint8 with BraTS 2020 values 0, 1 (necrosis / non-enhancing core),
2 (edema), 4 (enhancing tumour); every voxel outside the brain is exactly 0 in every modality
and every brain voxel is >= 1.

Determinism: case k is generated from `numpy.random.default_rng([seed, k])` alone, so it is
the same bytes whatever the number of cases written or the order they are written in.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from pfseg_pipeline.data.blobs import MIN_SHAPE_XYZ, make_case
from pfseg_pipeline.data.nifti import make_reference, write_label_map, write_volume
from pfseg_pipeline.errors import UserError

log = logging.getLogger(__name__)

CASE_PREFIX = "BraTS20_Training_"
DEFAULT_SHAPE_XYZ = (240, 240, 155)
ANATOMIES = ("blobs", "mni152")

__all__ = ["ANATOMIES", "CASE_PREFIX", "DEFAULT_SHAPE_XYZ", "MIN_SHAPE_XYZ", "brats_affine",
           "case_id_for", "make_case", "write_dataset"]


def case_id_for(index: int) -> str:
    """BraTS 2020 training-set name of case `index` (1 -> 'BraTS20_Training_001')."""
    return f"{CASE_PREFIX}{index:03d}"


def brats_affine(shape_zyx: tuple[int, int, int]) -> np.ndarray:
    """The 4x4 voxel (i, j, k) -> world matrix of a BraTS file: LPS axes, 1 mm."""
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    affine[1, 3] = float(shape_zyx[1] - 1)
    return affine


def _write_case(out: Path, index: int, seed: int, anatomy: str, shape_zyx: tuple[int, int, int] | None,
                spacing_mm: int, wheel: str | None, tumour_probability: float) -> tuple[str, float]:
    start = time.perf_counter()
    case_id = case_id_for(index)
    if anatomy == "blobs":
        images, seg = make_case(shape_zyx, (seed, index), tumour_probability=tumour_probability)
        affine = brats_affine(shape_zyx)
    else:
        from pfseg_pipeline.data.anatomy import brats_grid
        from pfseg_pipeline.data.mni152 import make_mni152_case

        images, seg = make_mni152_case(wheel, spacing_mm, (seed, index))
        shape_zyx, affine = brats_grid(spacing_mm)
    reference = make_reference(shape_zyx, affine, qform_code=1, sform_code=1)
    folder = out / case_id
    for modality, image in images.items():
        write_volume(image, reference, folder / f"{case_id}_{modality}.nii.gz", dtype=np.int16)
    write_label_map(seg, reference, folder / f"{case_id}_seg.nii.gz")
    return case_id, time.perf_counter() - start


def write_dataset(out: str | os.PathLike, n_cases: int, shape_xyz: tuple[int, int, int] | None = None,
                  seed: int = 0, start_index: int = 1, overwrite: bool = False,
                  tumour_probability: float = 1.0, workers: int = 1, progress: bool = False,
                  anatomy: str = "blobs", spacing_mm: int = 1,
                  template_cache: str | os.PathLike | None = None) -> list[str]:
    """Write `n_cases` synthetic cases in the BraTS 2020 layout under `out`.

    Writes `out/<case>/<case>_{t1,t1ce,t2,flair,seg}.nii.gz` for the case ids
    `BraTS20_Training_{start_index:03d}` onwards. With `anatomy="blobs"`, `shape_xyz` is the
    shape as the NIfTI stores it (x y z; default 240 240 155) at 1 mm. With `"mni152"` the grid
    is BraTS's at `spacing_mm` (1, 2 or 4) and `shape_xyz` must be None; the template is fetched
    into `template_cache` (default: `paths.template_cache_dir()`) when it is not there yet.
    Existing case folders are a `UserError` unless `overwrite`. Files are written atomically.
    `progress` logs one line per case at INFO (else DEBUG). Returns the case ids written, in order.

    Examples
    --------
    >>> write_dataset("raw", 2, (24, 20, 16), seed=3)   # doctest: +SKIP
    ['BraTS20_Training_001', 'BraTS20_Training_002']
    >>> write_dataset("raw", 2, anatomy="mni152", spacing_mm=4)   # doctest: +SKIP
    ['BraTS20_Training_001', 'BraTS20_Training_002']
    """
    out = Path(out)
    if anatomy not in ANATOMIES:
        raise UserError(f"--anatomy must be one of {', '.join(ANATOMIES)} (got {anatomy!r})")
    if n_cases < 1:
        raise UserError(f"--cases must be at least 1 (got {n_cases})")
    if start_index < 0:
        raise UserError(f"--start-index must be >= 0 (got {start_index})")
    if not 0.0 <= tumour_probability <= 1.0:
        raise UserError(f"tumour probability must be in [0, 1] (got {tumour_probability})")
    shape_zyx, wheel = None, None
    if anatomy == "blobs":
        if spacing_mm != 1:
            raise UserError(f"--spacing {spacing_mm} applies to --anatomy mni152 only (blobs are 1 mm)")
        shape_xyz = tuple(int(s) for s in (shape_xyz or DEFAULT_SHAPE_XYZ))
        if len(shape_xyz) != 3 or any(s < m for s, m in zip(shape_xyz, MIN_SHAPE_XYZ)):
            raise UserError(f"--shape {' '.join(map(str, shape_xyz))} is too small: at least "
                            f"{' '.join(map(str, MIN_SHAPE_XYZ))} (x y z)")
        shape_zyx = (shape_xyz[2], shape_xyz[1], shape_xyz[0])
        grid = f"{'x'.join(map(str, shape_xyz))} voxels (x y z)"
    else:
        if shape_xyz is not None:
            raise UserError("--shape applies to --anatomy blobs only: mni152 cases lie on the BraTS "
                            "grid (240 x 240 x 155 mm); choose its voxel size with --spacing 1, 2 or 4")
        if spacing_mm not in (1, 2, 4):
            raise UserError(f"--spacing must be 1, 2 or 4 mm (got {spacing_mm})")
        if tumour_probability != 1.0:
            raise UserError("mni152 cases always hold a tumour (tumour probability 1)")
        grid = f"the BraTS grid at {spacing_mm} mm"
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    indices = list(range(start_index, start_index + n_cases))
    if not overwrite:
        existing = [out / case_id_for(i) for i in indices if (out / case_id_for(i)).exists()]
        if existing:
            more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
            raise UserError(f"{existing[0]}: already exists{more} (use --overwrite to replace)")
    if anatomy == "mni152":
        wheel = str(_template_wheel(template_cache, spacing_mm))
    log.info("writing %d synthetic %s case(s) on %s to %s (seed %d)", n_cases, anatomy, grid, out, seed)
    args = [(out, i, seed, anatomy, shape_zyx, spacing_mm, wheel, tumour_probability) for i in indices]
    level = logging.INFO if progress else logging.DEBUG
    written = []
    if workers <= 1 or len(args) == 1:
        results = map(_write_case, *zip(*args))
        pool = None
    else:
        pool = ProcessPoolExecutor(max_workers=min(workers, len(args)))
        results = pool.map(_write_case, *zip(*args))
    try:
        for case_id, seconds in results:
            written.append(case_id)
            log.log(level, "case %d/%d: %s (%.1f s)", len(written), len(args), case_id, seconds)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return written


def _template_wheel(template_cache: str | os.PathLike | None, spacing_mm: int) -> Path:
    """The checked template wheel; its maps are prepared here once, before any worker starts,
    so that forked workers share them instead of each preparing its own copy."""
    from pfseg_pipeline.data.mni152 import prepare_template
    from pfseg_pipeline.data.template import ensure_template_wheel
    from pfseg_pipeline.paths import template_cache_dir

    wheel = ensure_template_wheel(template_cache if template_cache is not None else template_cache_dir())
    prepare_template(wheel, spacing_mm)
    return wheel
