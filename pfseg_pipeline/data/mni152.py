"""Synthetic BraTS cases on real anatomy: the MNI152 template, warped, with gliomas grown in it.

One case: a random subject (`anatomy.draw_warp`), one or two lesions (`tumour.draw_lesions`)
seeded in deep white matter, the template warped onto the BraTS grid with the lesions' mass
effect, the lesions grown along white matter, and the four contrasts rendered
(`mr_contrast.render_contrasts`). Everything depends only on the random generator, so case k
of seed s is the same whatever else is generated.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

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
from pfseg_pipeline.data.fields import NON_ENHANCING, interpolate_separable, tumour_fractions
from pfseg_pipeline.data.mr_contrast import render_contrasts
from pfseg_pipeline.data.tumour import (
    Lesion,
    choose_seeds,
    draw_lesions,
    efface_csf,
    grow_lesion,
    paint,
)
from pfseg_pipeline.errors import UserError

# a blur of under half a voxel: the share of a voxel that a boundary through it leaves inside
_PARTIAL_VOLUME_SIGMA = 0.45
_OVERVIEW_MM = 4   # the brain is located, and seeds chosen, on the 4 mm grid whatever the spacing


def prepare_template(wheel: str | os.PathLike, spacing_mm: int) -> None:
    """Read and prepare the template's channels for `spacing_mm` in this process (kept for the
    cases that follow; worker processes forked afterwards share them)."""
    template_channels(str(wheel), int(spacing_mm))
    template_channels(str(wheel), _OVERVIEW_MM)


@dataclass(frozen=True)
class SimulatedCase:
    """One case and what it was made of (arrays (Z, Y, X) on the whole BraTS grid).

    images : modality -> float32 integer scanner units, 0 outside the brain, >= 1 in it.
    seg : uint8 BraTS 2020 labels 0, 1, 2, 4.
    tissue : the normal tissue fractions "wm", "gm", "csf" before the tumour replaced any.
    lesions, seeds_mm : the drawn lesions and their seeds (z, y, x mm from the grid centre).
    """

    images: dict[str, np.ndarray]
    seg: np.ndarray
    tissue: dict[str, np.ndarray]
    lesions: list[Lesion]
    seeds_mm: list[np.ndarray]


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
    case = simulate_case(wheel, spacing_mm, rng)
    return case.images, case.seg


def simulate_case(wheel: str | os.PathLike, spacing_mm: int,
                  rng: np.random.Generator | int | tuple[int, ...]) -> SimulatedCase:
    """`make_mni152_case` with the tissue and lesions it was made of (for checks and studies)."""
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
    fractions = tumour_fractions(seg, strength, _PARTIAL_VOLUME_SIGMA)
    images = render_contrasts(rng, tissue, fractions, spacing_mm, brain)
    seg[seg == NON_ENHANCING] = 1

    return SimulatedCase(_uncrop(images, shape, crop, np.float32), _uncrop(seg, shape, crop, np.uint8),
                         _uncrop({k: tissue[k] for k in ("wm", "gm", "csf")}, shape, crop, np.float32),
                         lesions, seeds)


def _uncrop(arrays, shape: tuple[int, int, int], crop: tuple[slice, ...], dtype):
    """Arrays of the cropped grid placed on the whole grid (zeros around); a dict or one array."""
    if isinstance(arrays, dict):
        return {name: _uncrop(a, shape, crop, dtype) for name, a in arrays.items()}
    full = np.zeros(shape, dtype=dtype)
    full[crop] = arrays
    return full


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
