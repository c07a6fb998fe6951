"""Random smooth fields and MR image formation shared by the synthetic generators.

Smooth noise (texture, bias fields, irregular shapes), linear upsampling of coarse fields,
and the last steps of forming a magnitude image: Rician noise and integer scanner units with
exactly 0 outside the brain. Arrays are (Z, Y, X) float32.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], feature_size: float) -> np.ndarray:
    """A smooth random field of about unit standard deviation, float32 of `shape`.

    `feature_size` (voxels) is roughly the distance over which the field decorrelates. White
    noise is drawn on a grid with a node every `feature_size / 4` voxels (at most one per
    voxel), Gaussian-smoothed there (sigma: `feature_size / 2` voxels) and zoomed up
    linearly. The nodes are dense relative to the smoothing, so the linear zoom shows no
    facets, and the work at full resolution is one interpolation, so large fields stay cheap.
    """
    step = max(1.0, feature_size / 4.0)
    coarse_shape = tuple(s if step == 1.0 else max(3, int(np.ceil(s / step)) + 1) for s in shape)
    coarse = ndimage.gaussian_filter(rng.standard_normal(coarse_shape, dtype=np.float32),
                                     feature_size / (2.0 * step), mode="wrap")
    coarse /= max(float(coarse.std()), 1e-6)
    return upsample_linear(coarse, shape)


def upsample_linear(coarse: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Linear interpolation of `coarse` onto `shape`, voxel centres aligned (float32).

    Separable: one gather and blend per axis, so the full-resolution work is a few array
    operations (several times faster than `scipy.ndimage.zoom`).
    """
    positions = []
    for n, size in zip(np.shape(coarse), shape):
        positions.append(None if n == size else (np.arange(size, dtype=np.float64) + 0.5) * (n / size) - 0.5)
    return interpolate_separable(coarse, positions)


def interpolate_separable(coarse: np.ndarray, positions: list[np.ndarray | None]) -> np.ndarray:
    """Linear interpolation of `coarse` at a grid of fractional indices, one vector per axis.

    `positions[a]` holds the (fractional) indices into axis `a` of `coarse` at which to sample,
    clamped to the array (constant extension); None keeps that axis as it is. The result has
    shape (len(positions[0]), ...), float32.
    """
    out = np.asarray(coarse, dtype=np.float32)
    for axis, pos in enumerate(positions):
        if pos is None:
            continue
        n, size = out.shape[axis], len(pos)
        pos = np.clip(np.asarray(pos, dtype=np.float64), 0.0, n - 1)
        lo = np.minimum(pos.astype(np.intp), n - 2) if n > 1 else np.zeros(size, np.intp)
        frac = (pos - lo).astype(np.float32) if n > 1 else np.zeros(size, np.float32)
        hi = np.minimum(lo + 1, n - 1)
        bshape = [1] * out.ndim
        bshape[axis] = size
        frac = frac.reshape(bshape)
        a = np.take(out, lo, axis=axis)
        out = a + (np.take(out, hi, axis=axis) - a) * frac
    return np.ascontiguousarray(out, dtype=np.float32)


def block_mean(array: np.ndarray, factor: int, pad_mode: str = "constant") -> np.ndarray:
    """Means over blocks of `factor` voxels per axis (a coarser grid with partial volume), float32.

    Axes that do not divide are padded at their end first (`pad_mode` as `numpy.pad`: zeros by
    default, "edge" to repeat the last slab).
    """
    if factor == 1:
        return np.asarray(array, dtype=np.float32)
    padded = np.pad(array, [(0, -n % factor) for n in array.shape], mode=pad_mode)
    z, y, x = (n // factor for n in padded.shape)
    blocks = padded.reshape(z, factor, y, factor, x, factor).mean(axis=(1, 3, 5))
    return np.ascontiguousarray(blocks, dtype=np.float32)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function, float32."""
    return (0.5 * (1.0 + np.tanh(0.5 * x))).astype(np.float32)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3x3 rotation (or reflection) matrix."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return q * np.sign(np.diag(r))


def add_rician_noise(signal: np.ndarray, noise_sd: np.float32, rng: np.random.Generator) -> None:
    """In place: the magnitude |signal + n1 + i n2| of complex Gaussian noise, as MR images have.

    `signal` is float32 (Z, Y, X); `noise_sd` the standard deviation of each channel.
    """
    signal += noise_sd * rng.standard_normal(signal.shape, dtype=np.float32)
    np.square(signal, out=signal)
    imag = rng.standard_normal(signal.shape, dtype=np.float32)
    imag *= noise_sd
    np.square(imag, out=imag)
    signal += imag
    del imag
    np.sqrt(signal, out=signal)


def to_scanner_units(signal: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """In place: integer values in 1..32767 inside the brain (int16 range) and exactly 0 outside."""
    np.rint(signal, out=signal)
    np.clip(signal, 1, 32767, out=signal)
    signal[~brain] = 0
    return signal


NON_ENHANCING = 3   # a generator's own label for the solid core that does not enhance (written as 1)
# rank of label values 0, 1, 2, 3, 4 when tumour tissues overlap: core over enhancing over edema
TUMOUR_RANK = np.array([0, 3, 1, 3, 2], dtype=np.uint8)


def tumour_fractions(seg: np.ndarray, strength: np.ndarray, sigma: float) -> dict[str, np.ndarray]:
    """Soft (partial-volume) fractions of the four tumour tissues of a label map (labels 1, 2,
    4 and `NON_ENHANCING`), blurred by `sigma` voxels; they sum to at most 1.

    Edema counts with its strength: faint edema leaves the tissue it infiltrates visible.
    """
    hard = {"edema": (seg == 2) * strength, "enhancing": seg == 4, "necrosis": seg == 1,
            "non_enhancing": seg == NON_ENHANCING}
    soft = {name: ndimage.gaussian_filter(h.astype(np.float32), sigma) for name, h in hard.items()}
    total = np.maximum(sum(soft.values()), 1.0)
    return {name: w / total for name, w in soft.items()}
