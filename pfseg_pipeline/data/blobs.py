"""The blob generator: synthetic BraTS-like cases on a made-up brain (the unit tests' data).

Each case is a skull-stripped brain (an irregular ellipsoid with a cortex, sulcal CSF,
ventricles and deep grey nuclei), seen in four MR contrasts (t1, t1ce, t2, flair) with tissue
texture, partial volume at every boundary, a smooth multiplicative bias field per contrast and
Rician noise. Most cases hold one or two irregular tumours labelled like BraTS 2020:
1 necrosis / non-enhancing core, 2 edema around the core, 4 enhancing rim.

The contrasts are chosen so that a method has to combine modalities: edema is bright on T2 and
FLAIR but fades towards its border, CSF is brighter than edema on T2, periventricular caps and
cortex overlap edema on FLAIR, vessels enhance on T1ce like the tumour rim, and the bias field
shifts every tissue by up to about 20 %. A single FLAIR threshold therefore misses the whole
tumour by a wide margin (tests/data/test_synthetic.py checks it).

Any shape of at least 12 x 12 x 8 voxels (x y z), 1 mm. The output of this module is pinned
(tests/data/test_synthetic.py): the unit tests and the benchmarks so far rest on it.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from pfseg_pipeline.data.fields import (
    NON_ENHANCING,
    TUMOUR_RANK,
    add_rician_noise,
    random_rotation,
    sigmoid,
    smooth_noise,
    to_scanner_units,
    tumour_fractions,
)
from pfseg_pipeline.data.modalities import MODALITIES
from pfseg_pipeline.errors import UserError

MIN_SHAPE_XYZ = (12, 12, 8)


# Mean intensity of each tissue per modality (t1, t1ce, t2, flair), relative to white matter
# on T1. Read off typical BraTS scans: CSF dark on T1/FLAIR and brightest on T2; edema bright
# on T2/FLAIR; enhancing rim bright on T1ce only; necrosis dark on T1/T1ce, bright on T2.
CONTRAST = {
    "wm":          (1.00, 1.00, 0.55, 0.60),
    "gm":          (0.74, 0.76, 0.76, 0.80),
    "csf":         (0.30, 0.32, 1.45, 0.22),
    "edema":       (0.80, 0.82, 1.12, 1.08),
    "enhancing":   (0.80, 1.50, 0.95, 0.98),
    "necrosis":    (0.42, 0.45, 1.30, 0.72),
    "non_enhancing": (0.70, 0.76, 1.05, 1.02),  # solid core that does not enhance (label 1)
}
# Global gain per modality (scanner units); each case multiplies it by U(0.75, 1.3).
GAIN = (600.0, 700.0, 900.0, 500.0)
# While painting, solid non-enhancing tumour gets the value 3 so that it can be rendered with
# its own contrast (`fields.NON_ENHANCING`); it becomes label 1 (NCR/NET) before the label map
# is returned. Label painting priority (`fields.TUMOUR_RANK`): a core label always wins over
# edema, necrosis over the rim.

def _ellipsoid_radius(grid: tuple[np.ndarray, ...], centre: np.ndarray, semi_axes: np.ndarray,
                      rotation: np.ndarray) -> np.ndarray:
    """Normalised ellipsoid radius (1 on the surface) of a rotated ellipsoid on an open grid."""
    # Python floats keep the arithmetic in float32 (a numpy float64 scalar would promote it)
    d = [g - float(c) for g, c in zip(grid, centre)]
    total = np.float32(0.0)
    for row, semi in zip(np.asarray(rotation, dtype=float), semi_axes):
        u = float(row[0]) * d[0] + float(row[1]) * d[1] + float(row[2]) * d[2]
        total = total + (u * (1.0 / float(semi))) ** 2
    return np.sqrt(total, dtype=np.float32)


def _brain(rng: np.random.Generator, shape: tuple[int, int, int]) -> dict[str, np.ndarray]:
    """Brain mask and soft tissue weights (wm, gm, csf), plus the ventricle distance map."""
    shape_arr = np.asarray(shape, dtype=np.float32)
    centre = shape_arr / 2.0 - 0.5 + rng.uniform(-0.02, 0.02, 3) * shape_arr
    # z (S), y (A-P, the longest axis of a brain), x (L-R), as fractions of the field of view
    semi = shape_arr * np.array([0.40, 0.40, 0.33]) * rng.uniform(0.9, 1.04, 3)
    grid = np.ogrid[: shape[0], : shape[1], : shape[2]]
    grid = tuple(g.astype(np.float32) for g in grid)
    radius = _ellipsoid_radius(grid, centre, semi, np.eye(3))
    feature = float(min(shape)) / 3.0
    boundary = smooth_noise(rng, shape, feature)
    depth = radius * (1.0 + 0.05 * boundary)       # 1 on the (irregular) brain surface
    brain = depth < 1.0

    fold = smooth_noise(rng, shape, max(2.0, min(shape) / 8.0))   # gyri: the cortex folds
    gm_cortex = sigmoid((depth + 0.06 * fold - 0.80) / 0.018)
    csf_sulci = sigmoid((depth + 0.05 * fold - 0.955) / 0.012)
    # ventricles: two elongated lobes beside the midline; deep grey nuclei lateral to them
    side = float(rng.uniform(0.10, 0.14))
    vent = np.full(shape, np.inf, dtype=np.float32)
    nuclei = np.full(shape, np.inf, dtype=np.float32)
    vent_scale = float(rng.uniform(0.8, 1.3))
    for sign in (-1.0, 1.0):
        c = centre + np.array([0.05, -0.05, sign * side]) * semi
        vent = np.minimum(vent, _ellipsoid_radius(
            grid, c, semi * np.array([0.16, 0.42, 0.09]) * vent_scale, np.eye(3)))
        c_n = centre + np.array([-0.05, 0.0, sign * (side + 0.22)]) * semi
        nuclei = np.minimum(nuclei, _ellipsoid_radius(
            grid, c_n, semi * np.array([0.16, 0.2, 0.12]), np.eye(3)))
    vent *= 1.0 + 0.1 * fold
    csf_vent = sigmoid((1.0 - vent) / 0.08)
    gm_deep = sigmoid((1.0 - nuclei) / 0.1)
    csf = np.maximum(csf_sulci, csf_vent)
    gm = (1.0 - csf) * np.maximum(gm_cortex, gm_deep)
    wm = 1.0 - csf - gm
    return {"brain": brain, "wm": wm, "gm": gm, "csf": csf, "depth": depth, "vent": vent,
            "centre": centre, "semi": semi}


def _paint(seg: np.ndarray, mask: np.ndarray, value: int) -> None:
    """Write `value` where `mask`, unless a label of higher priority is already there."""
    keep = TUMOUR_RANK[seg[mask]] >= TUMOUR_RANK[value]
    seg[mask] = np.where(keep, seg[mask], np.uint8(value))


def _add_lesion(rng: np.random.Generator, seg: np.ndarray, edema_strength: np.ndarray,
                anatomy: dict[str, np.ndarray], size_fraction: float) -> tuple[slice, ...]:
    """Paint one irregular tumour (core of 1-3 blobs, rim, necrosis, edema); return its box."""
    shape = seg.shape
    semi, centre = anatomy["semi"], anatomy["centre"]
    # a centre well inside the brain (normalised radius < 0.6)
    direction = rng.standard_normal(3)
    direction /= np.linalg.norm(direction)
    lesion_centre = centre + direction * rng.uniform(0.0, 0.6) * semi
    core_radius = max(1.6, size_fraction * float(np.mean(semi)))
    edema_factor = float(rng.uniform(1.4, 2.8))
    reach = core_radius * (edema_factor * 1.5 + 1.0) + 2
    box = tuple(slice(max(0, int(c - reach)), min(s, int(np.ceil(c + reach)) + 1))
                for c, s in zip(lesion_centre, shape))
    grid = np.ogrid[box[0], box[1], box[2]]
    grid = tuple(g.astype(np.float32) for g in grid)
    box_shape = tuple(s.stop - s.start for s in box)

    # the core: union of 1-3 rotated ellipsoids with a noisy surface
    core_f = np.full(box_shape, np.inf, dtype=np.float32)
    for _ in range(int(rng.integers(1, 4))):
        c = lesion_centre + rng.uniform(-0.6, 0.6, 3) * core_radius
        axes = core_radius * rng.uniform(0.55, 1.1, 3)
        core_f = np.minimum(core_f, _ellipsoid_radius(grid, c, axes, random_rotation(rng)))
    core_f *= 1.0 + 0.22 * smooth_noise(rng, box_shape, max(2.0, core_radius))
    core = core_f < 1.0

    # the edema: a larger irregular envelope that prefers white matter and spares CSF
    edema_f = _ellipsoid_radius(grid, lesion_centre + rng.uniform(-0.3, 0.3, 3) * core_radius,
                                core_radius * edema_factor * rng.uniform(0.7, 1.3, 3),
                                random_rotation(rng))
    edema_f *= 1.0 + 0.3 * smooth_noise(rng, box_shape, max(3.0, 2.0 * core_radius))
    brain_box = anatomy["brain"][box]
    edema_f += 0.35 * anatomy["gm"][box] + 1.2 * anatomy["csf"][box]
    edema = (edema_f < 1.0) & brain_box & ~core
    core &= brain_box

    seg_box = seg[box]
    _paint(seg_box, edema, 2)
    # edema fades towards its border: full contrast inside, `floor` of it at the edge
    grade, floor = float(rng.uniform(0.4, 0.8)), float(rng.uniform(0.25, 0.5))
    strength = np.clip(1.0 - grade * np.clip(edema_f, 0.0, 1.0) ** 2, floor, 1.0)
    edema_strength[box] = np.where(edema, np.maximum(edema_strength[box], strength),
                                   edema_strength[box])
    _paint(seg_box, core, 4)
    if rng.random() < 0.85:  # most cores have a necrotic centre of varied size
        necrosis = core & (core_f < rng.uniform(0.35, 0.75))
        _paint(seg_box, necrosis, 1)
    if rng.random() < 0.4:  # some rims hold patches of non-enhancing solid tumour
        patches = smooth_noise(rng, box_shape, max(2.0, core_radius)) > rng.uniform(0.3, 1.0)
        _paint(seg_box, core & patches, NON_ENHANCING)
    return box


def make_case(shape_zyx: tuple[int, int, int], rng: np.random.Generator | int | Iterable[int],
              tumour_probability: float = 1.0, noise_level: float | None = None
              ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """One synthetic BraTS-like case.

    Parameters
    ----------
    shape_zyx : (Z, Y, X) voxels (1 mm each); at least 8 x 12 x 12.
    rng : a numpy Generator, or a seed (int or sequence of ints, e.g. (seed, case_index)).
    tumour_probability : chance that the case holds a tumour at all (1: always).
    noise_level : Rician noise standard deviation relative to white matter (default: drawn per
        case from U(0.02, 0.06)).

    Returns
    -------
    images : modality -> float32 (Z, Y, X) holding integer scanner units (0 outside the brain,
        >= 1 inside), for t1, t1ce, t2, flair.
    seg : uint8 (Z, Y, X) with BraTS 2020 labels 0, 1 (necrosis / non-enhancing core),
        2 (edema), 4 (enhancing tumour); 0 outside the brain.

    Examples
    --------
    >>> images, seg = make_case((16, 20, 24), (0, 1))
    >>> images["flair"].shape, seg.dtype
    ((16, 20, 24), dtype('uint8'))
    """
    shape = tuple(int(s) for s in shape_zyx)
    if len(shape) != 3 or any(s < m for s, m in zip(shape, reversed(MIN_SHAPE_XYZ))):
        raise UserError(f"synthetic shape (z y x) {shape} is too small: at least "
                        f"{tuple(reversed(MIN_SHAPE_XYZ))}")
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)

    anatomy = _brain(rng, shape)
    brain = anatomy["brain"]
    seg = np.zeros(shape, dtype=np.uint8)
    edema_strength = np.zeros(shape, dtype=np.float32)
    has_tumour = rng.random() < tumour_probability
    n_lesions = (2 if rng.random() < 0.3 else 1) if has_tumour else 0
    boxes = []
    for k in range(n_lesions):
        # log-uniform core radius: many small tumours, some large; a second lesion is smaller
        size = float(np.exp(rng.uniform(np.log(0.08), np.log(0.32)))) * (0.6 if k else 1.0)
        boxes.append(_add_lesion(rng, seg, edema_strength, anatomy, size))
    seg[~brain] = 0

    box = None
    if boxes:
        box = tuple(slice(min(b[a].start for b in boxes), max(b[a].stop for b in boxes))
                    for a in range(3))
    images = _render(rng, anatomy, seg, edema_strength, box, noise_level)
    seg[seg == NON_ENHANCING] = 1
    return images, seg


def _render(rng: np.random.Generator, anatomy: dict[str, np.ndarray], seg: np.ndarray,
            edema_strength: np.ndarray, box: tuple[slice, ...] | None,
            noise_level: float | None) -> dict[str, np.ndarray]:
    """The four MR images (float32 (Z, Y, X), integer values) of an anatomy and its tumour."""
    shape = seg.shape
    brain = anatomy["brain"]
    tumour = tumour_fractions(seg[box], edema_strength[box], sigma=0.6) if box is not None else {}
    if tumour:
        tumour_total = sum(tumour.values())
        normal_box = 1.0 - tumour_total
        heterogeneity = 1.0 + 0.12 * smooth_noise(rng, tumour_total.shape, 2.0)
    texture = smooth_noise(rng, shape, 2.5)
    vessels = (smooth_noise(rng, shape, 1.5) > 2.7) & (anatomy["depth"] < 0.95)
    # FLAIR-bright caps of white matter around the ventricles (they mimic edema)
    periventricular = sigmoid((1.35 - anatomy["vent"]) / 0.06) * anatomy["wm"]
    periventricular *= np.float32(rng.uniform(0.1, 0.4))
    sigma = float(rng.uniform(0.02, 0.06)) if noise_level is None else float(noise_level)
    shared_bias = smooth_noise(rng, shape, min(shape) / 1.5)

    images = {}
    for m, modality in enumerate(MODALITIES):
        mean = {name: np.float32(CONTRAST[name][m] * (1.0 + 0.05 * rng.standard_normal()))
                for name in CONTRAST}
        signal = anatomy["wm"] * mean["wm"] + anatomy["gm"] * mean["gm"] + anatomy["csf"] * mean["csf"]
        if modality == "flair":
            signal += periventricular
        if modality == "t1ce":
            signal[vessels] += np.float32(0.6)
        if tumour:
            signal_box = signal[box]   # a view: normal tissue makes way for tumour tissue
            signal_box *= normal_box
            signal_box += sum(w * mean[name] for name, w in tumour.items()) * heterogeneity
        signal *= 1.0 + 0.04 * texture * (1.0 if m < 2 else -1.0)
        bias_field = np.exp(0.08 * shared_bias + 0.08 * smooth_noise(rng, shape, min(shape) / 1.5))
        gain = GAIN[m] * float(rng.uniform(0.75, 1.3))
        signal *= bias_field
        signal *= np.float32(gain)
        del bias_field
        add_rician_noise(signal, np.float32(sigma * gain), rng)
        images[modality] = to_scanner_units(signal, brain)
    return images
