"""Gliomas grown into a warped brain: a necrotic core, an enhancing rim, edema along white matter.

A lesion grows from a seed in white matter as a front: a geodesic (fast-marching-like)
distance with a speed per tissue. The tumour core is fairly compact (it grows through grey
matter at under half speed and hardly into CSF); the edema follows white-matter tracts (grey
matter slows it twenty-fold, CSF stops it), which gives its finger-like extensions. Both
speeds carry a random heterogeneity, so no two lesions share a shape. Labels follow BraTS
2020: 1 necrosis / non-enhancing core, 2 edema, 4 enhancing tumour; while painting, solid
non-enhancing tumour is 3 (it has its own contrast) and becomes 1 when the case is written.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.graph import MCP_Geometric

from pfseg_pipeline.data.fields import (
    NON_ENHANCING,
    TUMOUR_RANK,
    block_mean,
    interpolate_separable,
    smooth_noise,
)

# front speed: wm_fraction ** exponent + gm_fraction * gm_speed + csf_fraction * csf_speed.
# The exponent makes a voxel that is partly cortex slow: edema (exponent 3) stays in the white
# matter of the gyri, as on real FLAIR, instead of crossing the partial-volume cortex.
_CORE_SPEED = (1.5, 0.4, 0.03)     # (wm exponent, gm speed, csf speed)
_EDEMA_SPEED = (3.0, 0.05, 0.005)
_MIN_SPEED = 1e-3          # outside the brain: effectively a wall
_FRONT_STEP_MM = 2.0       # the front runs on a grid no finer than this (its shape is smooth)


@dataclass(frozen=True)
class Lesion:
    """One lesion's drawn parameters (distances in mm along the growth front).

    core_mm : radius of the tumour core (necrosis + enhancing rim + solid parts).
    edema_mm : how far edema reaches beyond the core.
    rim_mm : thickness of the enhancing rim around a necrotic centre (0: a solid core).
    enhancing : False for a non-enhancing (low-grade-like) tumour: its whole core is label 1.
    solid_patches : whether patches of the rim are solid non-enhancing tumour.
    satellites : number of small enhancing nodules in its edema.
    """

    core_mm: float
    edema_mm: float
    rim_mm: float
    enhancing: bool
    solid_patches: bool
    satellites: int

    @property
    def reach_mm(self) -> float:
        return self.core_mm + self.edema_mm

    @property
    def push(self) -> tuple[float, float]:
        """Mass effect: (strength, reach in mm); larger cores push harder and further."""
        return min(0.6, 0.12 + 0.016 * self.core_mm), 1.8 * self.core_mm + 6.0


def draw_lesions(rng: np.random.Generator) -> list[Lesion]:
    """One lesion (4 in 5 cases) or two; sizes from small to large, varied edema and necrosis."""
    lesions = []
    for k in range(2 if rng.random() < 0.2 else 1):
        # log-uniform core radius (front distance): cores of about 2 to 60 ml, like BraTS 2020's
        # tumour cores (a few ml to over 100); a second focus is smaller
        core = float(np.exp(rng.uniform(np.log(8.0), np.log(36.0)))) * (0.55 if k else 1.0)
        little_edema = rng.random() < 0.1
        edema = float(rng.uniform(1.0, 5.0) if little_edema else rng.uniform(10.0, 45.0))
        enhancing = rng.random() > 0.08       # a few lesions do not enhance at all
        # an enhancing rim of 4-16 mm of front distance (some 3-10 mm in straight lines: the
        # front is slowed by grey matter and heterogeneity) whatever the size: large cores are
        # ring-enhancing around necrosis, small ones solid; a few large ones are solid too
        rim = float(np.exp(rng.normal(np.log(8.0), 0.35)))
        necrotic = enhancing and core > rim + 3.0 and rng.random() < 0.85
        lesions.append(Lesion(core, edema, rim if necrotic else 0.0, enhancing,
                              bool(rng.random() < 0.35),
                              int(rng.integers(1, 4)) if rng.random() < 0.25 else 0))
    return lesions


def choose_seeds(rng: np.random.Generator, wm: np.ndarray, depth_mm: np.ndarray,
                 axes_mm: list[np.ndarray], count: int) -> list[np.ndarray]:
    """`count` seed points (z, y, x mm) in deep white matter, at least 30 mm apart."""
    spacing = float(axes_mm[0][1] - axes_mm[0][0])
    candidates = np.argwhere((wm > 0.75) & (depth_mm > 15.0))
    if len(candidates) == 0:                       # tiny or odd grids: any white matter
        candidates = np.argwhere(wm >= wm.max() * 0.9)
    seeds: list[np.ndarray] = []
    for _ in range(count):
        for _attempt in range(50):
            index = candidates[int(rng.integers(len(candidates)))]
            point = np.array([a[i] for a, i in zip(axes_mm, index)])
            point = point + rng.uniform(-0.5, 0.5, 3) * spacing
            if all(np.linalg.norm(point - s) >= 30.0 for s in seeds):
                break
        seeds.append(point)
    return seeds


def _front_distance(tissue_box: dict[str, np.ndarray], speeds: tuple[float, float, float],
                    heterogeneity: np.ndarray, starts: np.ndarray, step_mm: float) -> np.ndarray:
    """Geodesic distance (mm) from the nearest start voxel (an (n, 3) index array), with a speed
    per tissue; inf where not reached."""
    speed = (tissue_box["wm"] ** speeds[0] + speeds[1] * tissue_box["gm"] + speeds[2] * tissue_box["csf"])
    speed = np.maximum(speed * heterogeneity, _MIN_SPEED)
    graph = MCP_Geometric(1.0 / speed, fully_connected=True)
    cost, _ = graph.find_costs([tuple(int(i) for i in start) for start in starts])
    return np.asarray(cost, dtype=np.float32) * np.float32(step_mm)


def grow_lesion(rng: np.random.Generator, lesion: Lesion, seed_mm: np.ndarray,
                tissue: dict[str, np.ndarray], axes_mm: list[np.ndarray]
                ) -> tuple[tuple[slice, ...], np.ndarray, np.ndarray]:
    """Paint one lesion on the grid spanned by `axes_mm` (the arrays of `tissue`).

    Returns the box it occupies (slices into the grid), its labels there (uint8: 0, 1, 2, 3, 4)
    and its edema strength there (float32, 1 where edema is fully developed, fading to its
    border).
    """
    spacing = float(axes_mm[0][1] - axes_mm[0][0])
    factor = max(1, int(round(_FRONT_STEP_MM / spacing)))
    step = spacing * factor
    seed_index = [int(np.argmin(np.abs(a - c))) for a, c in zip(axes_mm, seed_mm)]
    half = int(np.ceil((lesion.reach_mm + 12.0) / spacing))
    box = tuple(slice(max(0, i - half), min(len(a), i + half + 1)) for i, a in zip(seed_index, axes_mm))
    shape = tuple(s.stop - s.start for s in box)
    coarse = {name: block_mean(tissue[name][box], factor, "edge") for name in ("wm", "gm", "csf")}
    coarse_shape = coarse["wm"].shape
    local_seed = np.array([(i - s.start) // factor for i, s in zip(seed_index, box)])

    def heterogeneity(size_mm: float, amount: float) -> np.ndarray:
        # slows the front here and there, never speeds it up: the front stays inside the box
        return np.exp(-amount * np.abs(smooth_noise(rng, coarse_shape, max(1.0, size_mm / step))))

    d_core = _front_distance(coarse, _CORE_SPEED, heterogeneity(12.0, 0.35), local_seed[None], step)
    # edema spreads from the tumour core outwards (its distance is 0 on the core)
    core_voxels = np.argwhere(d_core < lesion.core_mm)
    d_edema = _front_distance(coarse, _EDEMA_SPEED, heterogeneity(16.0, 0.3),
                              core_voxels if len(core_voxels) else local_seed[None], step)
    # back onto the case grid (linear in the distance: smooth boundaries), plus fine irregularity
    positions = [(np.arange(n) + 0.5) / factor - 0.5 for n in shape]
    ragged = float(max(0.8, 0.06 * lesion.core_mm))
    d_core = interpolate_separable(np.minimum(d_core, 1e4), positions)
    d_core += ragged * smooth_noise(rng, shape, max(1.0, 4.0 / spacing))
    d_edema = interpolate_separable(np.minimum(d_edema, 1e4), positions)
    d_edema += 1.5 * ragged * smooth_noise(rng, shape, max(1.0, 6.0 / spacing))

    brain = tissue["mask"][box] >= 0.5
    core = (d_core < lesion.core_mm) & brain
    # a shell of at least ~2.5 mm of edema wraps the core whatever the tissue (the infiltrated
    # border that FLAIR shows around every glioma core), then edema reaches out along white matter
    shell = ndimage.binary_dilation(core, iterations=max(1, int(round(2.5 / spacing))))
    edema = ((d_edema < lesion.edema_mm) | shell) & brain & ~core
    labels = np.where(edema, np.uint8(2), np.uint8(0))
    if not lesion.enhancing:
        labels[core] = 1
    else:
        labels[core] = 4
        if lesion.rim_mm > 0:
            wobble = 0.4 * lesion.rim_mm * smooth_noise(rng, shape, max(1.0, 8.0 / spacing))
            labels[core & (d_core + wobble < lesion.core_mm - lesion.rim_mm)] = 1
        if lesion.solid_patches:
            patches = smooth_noise(rng, shape, max(1.0, 0.5 * lesion.core_mm / spacing))
            labels[(labels == 4) & (patches > rng.uniform(0.8, 1.6))] = NON_ENHANCING
    if lesion.satellites and edema.any():
        _add_satellites(rng, labels, edema, lesion.satellites, spacing)
    # edema fades towards its border: full contrast near the core, `floor` of it at the edge
    grade, floor = float(rng.uniform(0.45, 0.8)), float(rng.uniform(0.25, 0.55))
    spread = np.clip(d_edema / max(lesion.edema_mm, 1.0), 0.0, 1.0)
    strength = np.where(labels == 2, np.clip(1.0 - grade * spread ** 2, floor, 1.0), 0.0)
    return box, labels, strength.astype(np.float32)


def _add_satellites(rng: np.random.Generator, labels: np.ndarray, edema: np.ndarray, count: int,
                    spacing: float) -> None:
    """Small enhancing nodules (1.5-4 mm radius) at random places in the edema."""
    where = np.argwhere(edema)
    grid = np.ogrid[tuple(slice(0, n) for n in labels.shape)]
    for _ in range(count):
        centre = where[int(rng.integers(len(where)))]
        radius = float(rng.uniform(1.5, 4.0)) / spacing
        r2 = sum((g - int(c)) ** 2 for g, c in zip(grid, centre))
        labels[(r2 <= radius ** 2 + 0.25) & edema] = 4


def paint(seg: np.ndarray, strength: np.ndarray, box: tuple[slice, ...], labels: np.ndarray,
          lesion_strength: np.ndarray) -> None:
    """Merge one lesion into the case: the label of higher priority wins; edema strength adds
    up to 1 where two lesions' edema meet."""
    seg_box = seg[box]
    take = TUMOUR_RANK[labels] > TUMOUR_RANK[seg_box]
    seg_box[take] = labels[take]
    strength[box] = np.minimum(1.0, strength[box] + lesion_strength)
    strength[box][seg_box != 2] = 0.0


def efface_csf(tissue: dict[str, np.ndarray], centre_mm: np.ndarray, reach_mm: float,
               amount: float, axes_mm: list[np.ndarray]) -> None:
    """In place: sulci and ventricles near a lesion collapse (their CSF becomes grey matter)."""
    grids = np.meshgrid(*[(a - c).astype(np.float32) for a, c in zip(axes_mm, centre_mm)],
                        indexing="ij", sparse=True)
    r2 = grids[0] ** 2 + grids[1] ** 2 + grids[2] ** 2
    kept = 1.0 - np.float32(amount) * np.exp(-r2 / np.float32(reach_mm ** 2))
    lost = tissue["csf"] * (1.0 - kept)
    tissue["csf"] -= lost
    tissue["gm"] += lost
    tissue["ventricles"] = np.minimum(tissue["ventricles"], tissue["csf"])
