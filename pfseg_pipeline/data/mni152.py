"""Synthetic BraTS cases on real anatomy: the MNI152 template, warped, with gliomas grown in it.

One case: a random subject (`anatomy.draw_warp`), one or two lesions (`tumour.draw_lesions`)
seeded in deep white matter, the template warped onto the BraTS grid with the lesions' mass
effect, the lesions grown along white matter, and the four contrasts rendered
(`mr_contrast.render_contrasts`). Everything depends only on the random generator, so case k
of seed s is the same whatever else is generated.
"""

from __future__ import annotations

import os

import numpy as np
from scipy import ndimage

from pfseg_pipeline.data.anatomy import (
    MassEffect,
    axis_positions_mm,
    brats_grid,
    displacement_at,
    draw_warp,
    template_channels,
    tissue_fractions,
    warp_channels,
)
from pfseg_pipeline.data.fields import interpolate_separable
from pfseg_pipeline.data.mr_contrast import render_contrasts
from pfseg_pipeline.data.tumour import (
    NON_ENHANCING,
    choose_seeds,
    draw_lesions,
    efface_csf,
    grow_lesion,
    paint,
    tumour_fractions,
)
from pfseg_pipeline.errors import UserError

_OVERVIEW_MM = 4   # the brain is located, and seeds chosen, on the 4 mm grid whatever the spacing


def prepare_template(wheel: str | os.PathLike, spacing_mm: int) -> None:
    """Read and prepare the template's channels for `spacing_mm` in this process (kept for the
    cases that follow; worker processes forked afterwards share them)."""
    template_channels(str(wheel), int(spacing_mm))
    template_channels(str(wheel), _OVERVIEW_MM)


def make_mni152_case(wheel: str | os.PathLike, spacing_mm: int,
                     rng: np.random.Generator | int | tuple[int, ...]
                     ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """One synthetic BraTS case on the BraTS grid at `spacing_mm` (1, 2 or 4).

    Parameters
    ----------
    wheel : the checked template wheel (`template.ensure_template_wheel`).
    spacing_mm : voxel size; the grid is 240 x 240 x 155 mm (`anatomy.brats_grid`).
    rng : a numpy Generator, or a seed (e.g. (seed, case_index)).

    Returns
    -------
    images : modality -> float32 (Z, Y, X) integer scanner units, 0 outside the brain, >= 1 in it.
    seg : uint8 (Z, Y, X), BraTS 2020 labels 0, 1 (necrosis / non-enhancing core), 2 (edema),
        4 (enhancing tumour).
    """
    if spacing_mm not in (1, 2, 4):
        raise UserError(f"--spacing must be 1, 2 or 4 mm (got {spacing_mm})")
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    wheel = str(wheel)
    shape, _ = brats_grid(spacing_mm)
    warp = draw_warp(rng)
    lesions = draw_lesions(rng)

    # overview: where the brain lies and where its deep white matter is, before any tumour
    overview_shape, _ = brats_grid(_OVERVIEW_MM)
    overview_axes = axis_positions_mm(overview_shape, _OVERVIEW_MM)
    overview = warp_channels(template_channels(wheel, _OVERVIEW_MM), warp, overview_axes,
                             names=("mask", "wm"))
    inside = overview["mask"] > 0.5
    depth = ndimage.distance_transform_edt(inside).astype(np.float32) * _OVERVIEW_MM
    seeds = choose_seeds(rng, overview["wm"], depth, overview_axes, len(lesions))

    # the case grid, cropped to the brain's box (plus a margin) to save work
    axes = axis_positions_mm(shape, spacing_mm)
    crop = _brain_box(overview["mask"] > 0.01, overview_axes, axes)
    axes = [a[c] for a, c in zip(axes, crop)]
    depth = interpolate_separable(depth, [(a - o[0]) / _OVERVIEW_MM for a, o in zip(axes, overview_axes)])
    # lesion centres move with the smooth deformation; the push acts around them
    centres = [np.array([float(d[0, 0, 0]) for d in displacement_at(warp, [np.array([c]) for c in seed])])
               + seed for seed in seeds]
    masses = tuple(MassEffect(c, *lesion.push) for c, lesion in zip(centres, lesions))
    warped = warp_channels(template_channels(wheel, spacing_mm), warp, axes, masses, depth)
    tissue = tissue_fractions(warped)
    tissue["periventricular"] = warped["periventricular"]
    tissue["surface"] = warped["surface"]
    for seed, lesion in zip(seeds, lesions):
        efface_csf(tissue, seed, lesion.reach_mm, float(rng.uniform(0.4, 0.9)), axes)

    seg = np.zeros(tissue["mask"].shape, dtype=np.uint8)
    strength = np.zeros(seg.shape, dtype=np.float32)
    for seed, lesion in zip(seeds, lesions):
        box, labels, lesion_strength = grow_lesion(rng, lesion, seed, tissue, axes)
        paint(seg, strength, box, labels, lesion_strength)
    brain = tissue["mask"] >= 0.5
    seg[~brain] = 0
    images = render_contrasts(rng, tissue, tumour_fractions(seg, strength), spacing_mm, brain)
    seg[seg == NON_ENHANCING] = 1

    full_images = {}
    for modality, image in images.items():
        full_images[modality] = np.zeros(shape, dtype=np.float32)
        full_images[modality][crop] = image
    full_seg = np.zeros(shape, dtype=np.uint8)
    full_seg[crop] = seg
    return full_images, full_seg


def _brain_box(overview_brain: np.ndarray, overview_axes: list[np.ndarray],
               axes: list[np.ndarray]) -> tuple[slice, ...]:
    """Slices of the case grid covering the overview's brain plus 10 mm (room for mass effect)."""
    box = []
    for axis, (coarse, fine) in enumerate(zip(overview_axes, axes)):
        other = tuple(a for a in range(3) if a != axis)
        present = np.flatnonzero(overview_brain.any(axis=other))
        lo, hi = coarse[present[0]] - 10.0, coarse[present[-1]] + 10.0
        inside = np.flatnonzero((fine >= lo) & (fine <= hi))
        box.append(slice(int(inside[0]), int(inside[-1]) + 1))
    return tuple(box)
