"""Checks that a report's figure shows the case it names: its contour pixels lie on that case's masks.

Used by the report test (`pfseg_evaluate --report`) and the preview test (`pfseg_predict --preview`).
The boundaries are computed here with scipy, independently of `evaluation.figures`; only the
panel layout (which slice, which way up, how many pixels a voxel) is taken from the figure module.
"""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image
import numpy as np
from scipy import ndimage

from pfseg_pipeline.evaluation.figures import CONTOURS, grey_levels, panel_layout

CROSS = ndimage.generate_binary_structure(2, 1)


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images: list[dict[str, str]] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs))


def images_of(html_path: Path) -> list[dict[str, str]]:
    """Every <img> of a report page: its src, data-case and data-centre-zyx."""
    parser = _Images()
    parser.feed(Path(html_path).read_text(encoding="utf-8"))
    return parser.images


def read_png(path: Path) -> np.ndarray:
    """An RGB(A) PNG as uint8 (H, W, 3)."""
    return np.round(matplotlib.image.imread(path)[..., :3] * 255).astype(np.uint8)


def _boundary(mask_2d: np.ndarray, inner: bool) -> np.ndarray:
    if inner:
        return mask_2d & ~ndimage.binary_erosion(mask_2d, CROSS, border_value=0)
    return ndimage.binary_dilation(mask_2d, CROSS) & ~mask_2d


def check_figure(figure: np.ndarray, geometry, centre_zyx, masks: dict[str, dict[str, np.ndarray]],
                 scan: np.ndarray) -> int:
    """Assert every contour pixel of `figure` lies on the boundary of the mask its colour names (inner
    boundary for the reference, outer for the prediction), every boundary pixel is painted by its
    colour or one painted after it, and every other pixel shows `scan`. Returns the contour pixels."""
    order = list(CONTOURS)
    painted = 0
    for panel in panel_layout(geometry, centre_zyx):
        grey = panel.pixels(grey_levels(scan))
        rows, cols = grey.shape
        crop = figure[panel.top:panel.top + rows, panel.left:panel.left + cols]
        coloured = {key: np.all(crop == np.array(colour, np.uint8), axis=-1)
                    for key, colour in CONTOURS.items()}
        for k, key in enumerate(order):
            source, region = key
            if region not in masks.get(source, {}):
                assert not coloured[key].any(), f"{key} drawn but not expected"
                continue
            block = panel.pixels(masks[source][region].astype(bool))
            boundary = _boundary(block, inner=source == "reference")
            assert not (coloured[key] & ~boundary).any(), f"{panel.view}: {key} pixels off its boundary"
            later = np.any([coloured[o] for o in order[k:]], axis=0)
            assert not (boundary & ~later).any(), f"{panel.view}: part of the {key} boundary not drawn"
            painted += int(coloured[key].sum())
        background = ~np.any(list(coloured.values()), axis=0)
        assert np.array_equal(crop[background], np.repeat(grey[background][:, None], 3, axis=1)), \
            f"{panel.view}: the background is not this case's scan"
    return painted
