"""Cases written as NIfTI files by hand: a brain ellipsoid with nested tumour spheres."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pfseg_pipeline.data.labels import BRATS2020
from pfseg_pipeline.data.layouts import Case
from pfseg_pipeline.data.nifti import make_reference, write_label_map, write_volume
from pfseg_pipeline.plans import Plans

MODALITIES = ["t1", "t1ce", "t2", "flair"]


def phantom(shape_zyx, spacing_zyx=(1.0, 1.0, 1.0), radii_mm=(14.0, 9.0, 5.0), seed=0):
    """(images by modality, seg): a brain filling ~80 % of the grid, WT/TC/ET nested spheres (mm)."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape_zyx, spacing_zyx)],
                        indexing="ij")
    half = [0.42 * n * s for n, s in zip(shape_zyx, spacing_zyx)]
    brain = sum((g / h) ** 2 for g, h in zip(grids, half)) <= 1
    r = np.sqrt(sum(g ** 2 for g in grids))
    seg = np.zeros(shape_zyx, np.uint8)
    seg[(r < radii_mm[0]) & brain] = 2
    seg[(r < radii_mm[1]) & brain] = 1
    seg[(r < radii_mm[2]) & brain] = 4
    images = {}
    for k, m in enumerate(MODALITIES):
        img = np.where(brain, 300 + 100 * k + 40 * rng.standard_normal(shape_zyx) + 80 * (seg > 0), 0)
        images[m] = np.clip(img, 1, None) * brain
    return images, seg


def write_case(root: Path, case_id: str, images: dict, seg: np.ndarray | None,
               spacing_zyx=(1.0, 1.0, 1.0)) -> Case:
    """BraTS layout: root/<case>/<case>_<modality>.nii.gz (+ _seg), LPS affine with the spacing."""
    sz, sy, sx = spacing_zyx
    affine = np.diag([-sx, -sy, sz, 1.0])
    affine[:3, 3] = [10.0, -20.0, 5.0]
    reference = make_reference(seg.shape if seg is not None else next(iter(images.values())).shape, affine)
    folder = root / case_id
    paths = {}
    for m, img in images.items():
        paths[m] = folder / f"{case_id}_{m}.nii.gz"
        write_volume(img, reference, paths[m], dtype=np.int16)
    label = None
    if seg is not None:
        label = folder / f"{case_id}_seg.nii.gz"
        write_label_map(seg, reference, label)
    return Case(case_id, paths, label)


def plans_for(target_spacing=(1.0, 1.0, 1.0), modalities=MODALITIES, **kwargs) -> Plans:
    plans = Plans(dataset_name="Pre", modalities=list(modalities), label_scheme=BRATS2020.to_json(),
                  hr_shape_zyx=[32, 32, 32], target_spacing_zyx=list(target_spacing), **kwargs)
    plans.guidance.patch_shape_zyx = [8, 8, 8]
    plans.patch_based.patch_shape_zyx = [16, 16, 16]
    plans.validate()
    return plans
