"""The four BraTS MR contrasts rendered from tissue fractions.

Each voxel's signal is the sum over its tissues (partial volume) of tissue fraction times the
tissue's mean intensity in that contrast, then tissue texture, structures that are not tumour
but look like it (enhancing vessels, choroid plexus and dura on T1ce; periventricular caps
and small white-matter hyperintensities on FLAIR and T2), a smooth multiplicative bias field,
Rician noise and a per-case gain. Arrays are (Z, Y, X) float32.
"""

from __future__ import annotations

import numpy as np

from pfseg_pipeline.data.fields import add_rician_noise, smooth_noise, to_scanner_units
from pfseg_pipeline.data.modalities import MODALITIES

# Mean intensity of each tissue per contrast (t1, t1ce, t2, flair), relative to white matter on
# T1, read off typical BraTS scans: CSF dark on T1 and FLAIR, brightest on T2; grey matter
# brighter than white on T2 and FLAIR; edema bright on T2 and FLAIR; the enhancing rim bright on
# T1ce only; necrosis dark on T1/T1ce, bright on T2, intermediate on FLAIR.
CONTRAST = {
    "wm":            (1.00, 1.00, 0.55, 0.60),
    "gm":            (0.74, 0.77, 0.78, 0.80),
    "csf":           (0.30, 0.32, 1.55, 0.20),
    "edema":         (0.78, 0.80, 1.15, 1.15),
    "enhancing":     (0.80, 1.75, 0.98, 1.00),
    "necrosis":      (0.40, 0.42, 1.35, 0.80),
    "non_enhancing": (0.70, 0.74, 1.05, 1.02),
}
# Global gain per contrast (scanner units); each case multiplies it by U(0.7, 1.4).
GAIN = (600.0, 700.0, 900.0, 500.0)


def render_contrasts(rng: np.random.Generator, tissue: dict[str, np.ndarray],
                     tumour: dict[str, np.ndarray], spacing_mm: float, brain: np.ndarray
                     ) -> dict[str, np.ndarray]:
    """The four images (t1, t1ce, t2, flair) of one case, integer scanner units, 0 outside `brain`.

    Parameters
    ----------
    tissue : fractions "mask", "wm", "gm", "csf", "ventricles" and the structure weights
        "periventricular" and "surface" (outer 3 mm of the brain), each (Z, Y, X) in [0, 1].
    tumour : fractions "edema" (weighted by its strength), "enhancing", "necrosis",
        "non_enhancing", summing to at most 1 (see `fields.tumour_fractions`).
    spacing_mm : voxel size, which sets the size of texture and vessels in voxels.
    brain : bool (Z, Y, X), the skull-stripped brain.
    """
    shape = brain.shape

    def field(size_mm: float) -> np.ndarray:
        return smooth_noise(rng, shape, max(1.0, size_mm / spacing_mm))

    normal = 1.0 - sum(tumour.values())
    csf_other = tissue["csf"] - tissue["ventricles"]
    texture = field(2.5)
    heterogeneity = 1.0 + 0.08 * field(6.0) + 0.04 * field(2.0)   # tumour tissue is not uniform
    # vessels: thin tubes where two smooth fields both cross zero, in sulci and at the surface
    tubes = (np.abs(field(6.0)) < 0.15) & (np.abs(field(6.0)) < 0.15)
    vessels = tubes * np.clip(csf_other + tissue["surface"], 0.0, 1.0)
    choroid = tissue["ventricles"] * (field(8.0) > 0.9)          # choroid plexus in the atria
    dura = tissue["surface"] * np.clip(field(20.0), 0.0, 1.0)    # patchy meningeal enhancement
    caps = tissue["periventricular"] * np.clip(1.0 + 0.5 * field(15.0), 0.2, 1.6)
    caps *= np.float32(rng.uniform(0.1, 0.35))
    # a few small white-matter hyperintensities (small-vessel disease), not tumour
    spots = np.clip(2.0 * (field(5.0) - rng.uniform(2.2, 3.0)), 0.0, 1.0) * tissue["wm"]
    sigma = float(rng.uniform(0.015, 0.04))     # noise, relative to white matter on T1
    shared_bias = field(110.0)

    images = {}
    for m, modality in enumerate(MODALITIES):
        mean = {name: np.float32(values[m] * (1.0 + 0.05 * rng.standard_normal()))
                for name, values in CONTRAST.items()}
        signal = (tissue["wm"] * mean["wm"] + tissue["gm"] * mean["gm"] + tissue["csf"] * mean["csf"])
        signal *= 1.0 + np.float32(0.025 if m < 2 else -0.025) * texture
        if modality == "t1ce":
            signal += 0.55 * vessels + 0.7 * choroid + 0.45 * dura
        elif modality == "t2":
            signal += 0.6 * caps + 0.35 * spots
        elif modality == "flair":
            signal += caps + 0.4 * spots + 0.25 * choroid
        signal *= normal
        signal += sum(w * mean[name] for name, w in tumour.items()) * heterogeneity
        bias = np.exp(0.07 * shared_bias + 0.05 * field(110.0))
        gain = np.float32(GAIN[m] * rng.uniform(0.7, 1.4))
        signal *= bias * gain
        add_rician_noise(signal, np.float32(sigma * gain), rng)
        images[modality] = to_scanner_units(signal, brain)
    return images
