"""Three orthogonal slices through a tumour with its WT / TC / ET contours over the scan, as a PNG.

A figure is a row of three panels (axial, coronal, sagittal) cut through one point (the
tumour's centre). Each panel shows the scan in grey, shown the way radiologists look at it
(axial: anterior up, the patient's right on the left; coronal and sagittal: superior up;
sagittal: anterior on the left; each voxel a block whose sides are proportional to its
spacing in mm), with one-pixel contours in fixed, pure colours:

- the reference's regions: the inner boundary of each mask (its pixels inside the mask);
- the prediction's regions: the outer boundary (its pixels just outside the mask), so a
  perfect prediction draws its line right beside the reference's, not over it.

Pixels are painted into an array, never drawn with anti-aliasing: every coloured pixel lies on
the boundary of the mask its colour names, which the report's test checks. Colours later in
`CONTOURS` paint over earlier ones where two boundaries meet (inner regions over outer ones).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pfseg_pipeline.data.nifti import Geometry
from pfseg_pipeline.fileio import atomic_path

# (source, region) -> RGB; none of them grey, so no scan pixel can take their colour
CONTOURS: dict[tuple[str, str], tuple[int, int, int]] = {
    ("reference", "WT"): (0, 255, 0),
    ("reference", "TC"): (255, 255, 0),
    ("reference", "ET"): (255, 0, 0),
    ("prediction", "WT"): (0, 255, 255),
    ("prediction", "TC"): (255, 0, 255),
    ("prediction", "ET"): (255, 128, 0),
}
VIEWS = ("axial", "coronal", "sagittal")
PANEL_GAP_PX = 4           # black columns between panels
MIN_PANEL_PX = 320         # the longest side of the volume gets about this many pixels (or 1 per voxel)
# RAS world axes (0 x: toward the patient's right, 1 y: anterior, 2 z: superior): for each view,
# the axis cut, and the axes shown as rows and as columns. Rows and columns start at the
# positive end of theirs: anterior or superior at the top, the patient's right (axial, coronal)
# or anterior (sagittal) on the left.
_VIEW_AXES = {"axial": (2, 1, 0), "coronal": (1, 2, 0), "sagittal": (0, 2, 1)}


@dataclass(frozen=True)
class Panel:
    """Where one view of the volume (Z, Y, X) lands in the figure.

    The panel is `volume` sliced at `index` on array axis `cut_axis`, its remaining axes
    arranged as (`row_axis`, `col_axis`), flipped where `row_flip` / `col_flip` say, each
    voxel repeated `row_repeat` x `col_repeat` times, placed at pixel (`top`, `left`).
    """

    view: str
    cut_axis: int
    index: int
    row_axis: int
    col_axis: int
    row_flip: bool
    col_flip: bool
    row_repeat: int
    col_repeat: int
    top: int
    left: int

    def plane(self, volume: np.ndarray) -> np.ndarray:
        """The 2D slice (rows, cols) of a (Z, Y, X) array at voxel resolution, oriented."""
        plane = np.take(volume, self.index, axis=self.cut_axis)
        if self.row_axis > self.col_axis:
            plane = plane.T
        if self.row_flip:
            plane = plane[::-1]
        if self.col_flip:
            plane = plane[:, ::-1]
        return plane

    def pixels(self, volume: np.ndarray) -> np.ndarray:
        """`plane` with each voxel repeated into its block of pixels."""
        return np.repeat(np.repeat(self.plane(volume), self.row_repeat, axis=0), self.col_repeat, axis=1)


def _world_axes(geometry: Geometry) -> dict[int, tuple[int, float]]:
    """RAS world axis -> (array axis of (Z, Y, X), sign of its direction), by the dominant cosine."""
    matrix = np.asarray(geometry.affine, dtype=np.float64)[:3, :3]
    out = {}
    for storage_axis in range(3):
        column = matrix[:, storage_axis]
        world = int(np.argmax(np.abs(column)))
        out[world] = (2 - storage_axis, float(np.sign(column[world])))
    if len(out) != 3:   # a degenerate (e.g. 45 degree) matrix: fall back to the storage axes
        out = {world: (2 - world, 1.0) for world in range(3)}
    return out


def panel_layout(geometry: Geometry, centre_zyx: Sequence[int]) -> list[Panel]:
    """The three panels through voxel `centre_zyx`, laid out left to right with `PANEL_GAP_PX`."""
    axes = _world_axes(geometry)
    spacing = np.asarray(geometry.spacing_zyx, dtype=np.float64)
    extent = spacing * np.asarray(geometry.shape_zyx)
    pitch = min(float(spacing.min()), float(extent.max()) / MIN_PANEL_PX)   # mm per pixel
    repeat = [max(1, round(s / pitch)) for s in spacing]
    panels, left = [], 0
    for view in VIEWS:
        cut_world, row_world, col_world = _VIEW_AXES[view]
        cut_axis = axes[cut_world][0]
        row_axis, row_sign = axes[row_world]
        col_axis, col_sign = axes[col_world]
        # an index running toward the positive end puts that end last: flip it to the front
        panel = Panel(view, cut_axis, int(centre_zyx[cut_axis]), row_axis, col_axis, row_sign > 0,
                      col_sign > 0, repeat[row_axis], repeat[col_axis], 0, left)
        panels.append(panel)
        left += geometry.shape_zyx[col_axis] * repeat[col_axis] + PANEL_GAP_PX
    return panels


def inner_boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels of a 2D mask with a 4-neighbour outside it (the image border counts as outside)."""
    padded = np.pad(mask, 1)
    inside = padded[1:-1, 1:-1]
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return inside & ~interior


def outer_boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels outside a 2D mask with a 4-neighbour inside it."""
    padded = np.pad(mask, 1)
    near = padded[:-2, 1:-1] | padded[2:, 1:-1] | padded[1:-1, :-2] | padded[1:-1, 2:]
    return near & ~mask


def grey_levels(scan: np.ndarray) -> np.ndarray:
    """A scan (Z, Y, X) as uint8 grey, its brain's 1st..99th percentiles stretched over 0..255."""
    scan = np.asarray(scan, dtype=np.float32)
    brain = scan[scan != 0]
    if brain.size == 0:
        return np.zeros(scan.shape, np.uint8)
    lo, hi = np.percentile(brain, [1, 99])
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    return np.clip((scan - lo) * scale, 0, 255).astype(np.uint8)


def tumour_centre(masks: Sequence[np.ndarray | None], fallback: np.ndarray | None = None) -> tuple[int, ...]:
    """The centre of mass (voxel) of the first non-empty mask, else of `fallback`'s non-zero voxels,
    else the grid's centre."""
    for mask in [*masks, None if fallback is None else fallback != 0]:
        if mask is not None and mask.any():
            return tuple(int(round(float(c))) for c in np.argwhere(mask).mean(axis=0))
    shape = next(m.shape for m in [*masks, fallback] if m is not None)
    return tuple(n // 2 for n in shape)


def render_figure(scan: np.ndarray, geometry: Geometry, centre_zyx: Sequence[int],
                  regions: dict[str, dict[str, np.ndarray]]) -> tuple[np.ndarray, list[Panel]]:
    """The RGB figure (H, W, 3) uint8 and its panels.

    Parameters
    ----------
    scan : (Z, Y, X) the background image (any units; zeros outside the brain).
    geometry : the scan's grid (orientation and spacing).
    centre_zyx : the voxel the three slices pass through.
    regions : {"reference" | "prediction": {"WT" | "TC" | "ET": boolean (Z, Y, X)}}; either
        source may be left out (a preview has no reference).
    """
    panels = panel_layout(geometry, centre_zyx)
    height = max(geometry.shape_zyx[p.row_axis] * p.row_repeat for p in panels)
    width = panels[-1].left + geometry.shape_zyx[panels[-1].col_axis] * panels[-1].col_repeat
    figure = np.zeros((height, width, 3), np.uint8)
    grey = grey_levels(scan)
    for panel in panels:
        pixels = panel.pixels(grey)
        rows, cols = pixels.shape
        view = figure[panel.top:panel.top + rows, panel.left:panel.left + cols]
        view[:] = pixels[..., None]
        for (source, region), colour in CONTOURS.items():
            mask = regions.get(source, {}).get(region)
            if mask is None:
                continue
            block = panel.pixels(np.asarray(mask, dtype=bool))
            edge = inner_boundary(block) if source == "reference" else outer_boundary(block)
            view[edge] = colour
    return figure, panels


def write_png(figure: np.ndarray, path: str | os.PathLike) -> None:
    """Write an RGB uint8 array as a PNG, pixel for pixel, atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image

    with atomic_path(path, suffix=".png") as tmp:
        matplotlib.image.imsave(tmp, figure, format="png")
