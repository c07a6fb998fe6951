"""A subject's normal anatomy: the MNI152 template warped onto the BraTS grid.

Each case sees the template through its own random affine (per-axis scale, rotation, shift)
and a smooth displacement field, plus the mass effect of its tumours: tissue around a lesion
is pushed away from it (a radial magnification that fades with distance and towards the
brain surface, which the skull holds in place), and the sulci and ventricles near it are
compressed. CSF is derived: the intracranial mask (from the skull-stripped T1) less grey and
white matter. Distances are in mm; arrays are (Z, Y, X) in LPS voxel order.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from pfseg_pipeline.data.fields import block_mean, interpolate_separable
from pfseg_pipeline.data.template import read_template

BRATS_SHAPE_XYZ = (240, 240, 155)
SPACINGS_MM = (1, 2, 4)
# Channels warped for every case; csf is derived from them afterwards.
CHANNELS = ("mask", "wm", "gm", "ventricles", "periventricular", "surface")
_DISPLACEMENT_NODE_MM = 10.0     # lattice of the smooth deformation (its features are ~30-60 mm)
_SKULL_MARGIN_MM = 12.0          # mass effect fades to 0 over this depth below the brain surface


def brats_grid(spacing_mm: int) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape (z, y, x) and affine of the BraTS field of view (240 x 240 x 155 mm) at a spacing.

    1 mm: 240 x 240 x 155 voxels (x y z); 2 mm: 120 x 120 x 78; 4 mm: 60 x 60 x 39 (the last
    slab is rounded up). LPS axes like BraTS files; a coarse voxel's centre is the centre of
    the 1 mm voxels it covers, so the grids overlay in world space.
    """
    s = int(spacing_mm)
    shape_xyz = tuple(int(np.ceil(n / s)) for n in BRATS_SHAPE_XYZ)
    affine = np.diag([-float(s), -float(s), float(s), 1.0])
    half = (s - 1) / 2.0
    affine[:3, 3] = (-half, BRATS_SHAPE_XYZ[1] - 1 - half, half)
    return (shape_xyz[2], shape_xyz[1], shape_xyz[0]), affine


def axis_positions_mm(shape_zyx: tuple[int, int, int], spacing_mm: float) -> list[np.ndarray]:
    """Voxel-centre positions along z, y, x in mm from the 1 mm grid's centre (float64)."""
    full = (BRATS_SHAPE_XYZ[2], BRATS_SHAPE_XYZ[1], BRATS_SHAPE_XYZ[0])
    return [np.arange(n) * spacing_mm + (spacing_mm - 1) / 2.0 - (f - 1) / 2.0
            for n, f in zip(shape_zyx, full)]


@dataclass(frozen=True)
class TemplateChannels:
    """The template's channels block-averaged to one spacing; `centre` is the brain's bounding-box
    centre in 1 mm template voxels (z, y, x)."""

    spacing_mm: int
    channels: dict[str, np.ndarray]
    centre: np.ndarray


@functools.lru_cache(maxsize=1)
def _channels_1mm(wheel: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    t = read_template(wheel)
    mask = (t.t1 > 0).astype(np.float32)
    wm = np.minimum(t.wm, mask)
    gm = np.minimum(t.gm, mask - wm)
    csf = mask - wm - gm
    depth = ndimage.distance_transform_edt(mask > 0).astype(np.float32)
    # ventricles: CSF more than 10 mm below the brain surface, in pieces of at least 1 ml
    # (smaller deep pockets are sulcal CSF of the insula and the cisterns)
    deep_csf = (csf > 0.5) & (depth > 10.0)
    pieces, _ = ndimage.label(deep_csf)
    big = np.flatnonzero(np.bincount(pieces.ravel()) >= 1000)
    ventricles = np.isin(pieces, big[big > 0]).astype(np.float32)
    # the white matter lining the ventricles (3-5 mm): where FLAIR shows caps and bands
    near = np.clip(3.0 * ndimage.gaussian_filter(ventricles, 2.5), 0.0, 1.0)
    periventricular = near * wm * (1.0 - ventricles)
    surface = np.clip(1.0 - depth / 3.0, 0.0, 1.0) * mask   # the outer 3 mm: dura, pial vessels
    corners = np.argwhere(mask > 0)
    centre = (corners.min(axis=0) + corners.max(axis=0)) / 2.0
    channels = {"mask": mask, "wm": wm, "gm": gm, "ventricles": ventricles,
                "periventricular": periventricular.astype(np.float32), "surface": surface}
    return channels, centre


@functools.lru_cache(maxsize=3)
def template_channels(wheel: str, spacing_mm: int) -> TemplateChannels:
    """The template's channels at `spacing_mm` (block means: partial volume, no aliasing)."""
    channels, centre = _channels_1mm(str(wheel))
    s = int(spacing_mm)
    if s == 1:
        return TemplateChannels(1, channels, centre)
    return TemplateChannels(s, {name: block_mean(array, s) for name, array in channels.items()}, centre)


@dataclass(frozen=True)
class Warp:
    """Where each case voxel looks in the template: q = A (p + d(p)), mass effect applied to p + d.

    matrix : A, 3x3 (z, y, x) case mm -> template mm (inverse scale and rotation).
    shift_mm : the case position (z, y, x, mm from the grid centre) of the template's centre.
    displacement : (3, nz, ny, nx) lattice of d in mm, a node every `_DISPLACEMENT_NODE_MM`.
    """

    matrix: np.ndarray
    shift_mm: np.ndarray
    displacement: np.ndarray


def draw_warp(rng: np.random.Generator) -> Warp:
    """A random subject: size and head pose, and a smooth deformation of the template."""
    # MNI152 2009 is larger than most brains (it is an average after nonlinear registration);
    # 0.86-0.97 of it gives BraTS-like brains of about 1.2-1.6 l inside the 155 mm slab
    scale = float(rng.uniform(0.86, 0.97)) * rng.uniform(0.96, 1.04, 3)
    angles = np.radians(rng.uniform(-7.0, 7.0, 3))   # residual pose after registration to an atlas
    rotation = np.eye(3)
    for axis, angle in enumerate(angles):
        c, s = np.cos(angle), np.sin(angle)
        a, b = [i for i in range(3) if i != axis]
        turn = np.eye(3)
        turn[a, a], turn[a, b], turn[b, a], turn[b, b] = c, -s, s, c
        rotation = rotation @ turn
    shift = rng.normal(0.0, 3.0, 3) + np.array([-3.0, 0.0, 0.0])   # the vertex clears the top slab
    nodes = [int(np.ceil(n / _DISPLACEMENT_NODE_MM)) + 3 for n in reversed(BRATS_SHAPE_XYZ)]
    displacement = np.empty((3, *nodes), dtype=np.float32)
    for k in range(3):
        fine = ndimage.gaussian_filter(rng.standard_normal(nodes), 2.0, mode="reflect")
        broad = ndimage.gaussian_filter(rng.standard_normal(nodes), 5.0, mode="reflect")
        displacement[k] = (fine / max(fine.std(), 1e-6) * rng.uniform(1.0, 2.5)
                           + broad / max(broad.std(), 1e-6) * rng.uniform(1.5, 4.0))
    matrix = np.diag(1.0 / scale) @ rotation.T
    return Warp(matrix, shift, displacement)


def displacement_at(warp: Warp, axes_mm: list[np.ndarray]) -> list[np.ndarray]:
    """d (z, y, x components, mm) on the grid spanned by the axis positions `axes_mm`."""
    full = (BRATS_SHAPE_XYZ[2], BRATS_SHAPE_XYZ[1], BRATS_SHAPE_XYZ[0])
    # node 1 sits on the first 1 mm voxel of the field of view: one spare node before it
    index = [(p + (f - 1) / 2.0) / _DISPLACEMENT_NODE_MM + 1.0 for p, f in zip(axes_mm, full)]
    return [interpolate_separable(warp.displacement[k], index) for k in range(3)]


@dataclass(frozen=True)
class MassEffect:
    """A lesion's push: tissue at distance r from `centre_mm` (mm, case space after the smooth
    deformation) comes from r (1 - strength exp(-(r / reach)^2)): magnified near the centre,
    compressed around `reach`, unmoved far away (strength < 1 keeps the map one-to-one)."""

    centre_mm: np.ndarray
    strength: float
    reach_mm: float


def warp_channels(template: TemplateChannels, warp: Warp, axes_mm: list[np.ndarray],
                  masses: tuple[MassEffect, ...] = (), depth_mm: np.ndarray | None = None,
                  names: tuple[str, ...] = CHANNELS) -> dict[str, np.ndarray]:
    """The template's channels seen on the case grid spanned by `axes_mm` (each (nz, ny, nx)).

    `depth_mm` (depth below the brain surface on that grid) makes the mass effect fade towards
    the surface; without it the push is applied everywhere.
    """
    displacement = displacement_at(warp, axes_mm)
    grids = np.meshgrid(*[a.astype(np.float32) for a in axes_mm], indexing="ij", sparse=True)
    points = [g + d for g, d in zip(grids, displacement)]
    del displacement
    for mass in masses:
        offset = [p - np.float32(c) for p, c in zip(points, mass.centre_mm)]
        r2 = offset[0] ** 2 + offset[1] ** 2 + offset[2] ** 2
        pull = np.float32(mass.strength) * np.exp(-r2 / np.float32(mass.reach_mm ** 2))
        del r2
        if depth_mm is not None:
            pull *= np.clip(depth_mm / np.float32(_SKULL_MARGIN_MM), 0.0, 1.0)
        points = [p - o * pull for p, o in zip(points, offset)]
    s = template.spacing_mm
    origin = template.centre - (s - 1) / 2.0   # template mm -> index at this spacing
    coords = []
    for row in range(3):
        q = sum(np.float32(warp.matrix[row, k]) * (points[k] - np.float32(warp.shift_mm[k]))
                for k in range(3))
        coords.append((q + np.float32(origin[row])) / np.float32(s))
    del points
    return {name: ndimage.map_coordinates(template.channels[name], coords, order=1, mode="constant",
                                          cval=0.0, output=np.float32) for name in names}


def tissue_fractions(warped: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """wm, gm, csf (ventricular part in `ventricles`) summing to the mask fraction, each >= 0."""
    mask = np.clip(warped["mask"], 0.0, 1.0)
    wm = np.clip(warped["wm"], 0.0, mask)
    gm = np.clip(warped["gm"], 0.0, mask - wm)
    csf = mask - wm - gm
    return {"mask": mask, "wm": wm, "gm": gm, "csf": csf,
            "ventricles": np.minimum(warped["ventricles"], csf)}
