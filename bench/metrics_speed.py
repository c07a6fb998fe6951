"""HD95: pfseg's implementation vs MedPy's `hd95`, agreement and speed, side by side in one run.

    python -m bench.metrics_speed [--quick]

Pairs of tumour-like masks on the BraTS grid (240 x 240 x 155, arrays (155, 240, 240) z y x),
built from smoothed noise: a reference blob and a prediction that differs from it (shifted,
eroded or dilated, with or without a false-positive island far away, touching the image border),
at 1 mm and at an anisotropic spacing. Each pair is timed with MedPy and with ours alternately
(best of `repeats`); the figures are the largest absolute disagreement in mm and the ratio of
the summed times.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from scipy import ndimage

SHAPE_ZYX = (155, 240, 240)
SPACINGS = {"1 mm": (1.0, 1.0, 1.0), "anisotropic": (3.0, 0.9375, 0.9375)}


def _blob(rng: np.random.Generator, centre_zyx, radius: float, shape=SHAPE_ZYX) -> np.ndarray:
    """An irregular tumour-like blob: smoothed noise thresholded inside a ball around `centre_zyx`."""
    half = int(radius * 1.6)
    box = tuple(slice(max(c - half, 0), min(c + half, s)) for c, s in zip(centre_zyx, shape))
    local_shape = tuple(b.stop - b.start for b in box)
    grid = np.stack(np.meshgrid(*[np.arange(b.start, b.stop) - c for b, c in zip(box, centre_zyx)],
                                indexing="ij"))
    ball = np.sqrt((grid ** 2).sum(0)) / radius
    noise = ndimage.gaussian_filter(rng.standard_normal(local_shape), sigma=radius / 4)
    noise /= noise.std() + 1e-12
    mask = np.zeros(shape, dtype=bool)
    mask[box] = (1.0 - ball) + 0.25 * noise > 0.15
    return mask


def make_pairs(seed: int = 0, quick: bool = False) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(description, reference, prediction) pairs of masks (155, 240, 240)."""
    rng = np.random.default_rng(seed)
    pairs = []
    ref = _blob(rng, (70, 110, 130), 28)
    pairs.append(("shifted 3 voxels, eroded", ref, ndimage.binary_erosion(np.roll(ref, 3, axis=2))))
    ref = _blob(rng, (80, 130, 100), 22)
    pred = ndimage.binary_dilation(ref, iterations=2) | _blob(rng, (30, 40, 200), 6)
    pairs.append(("dilated + far false positive", ref, pred))
    if not quick:
        ref = _blob(rng, (140, 120, 225), 25)  # touches the top slice and the x border
        pairs.append(("touching the border", ref, _blob(rng, (138, 118, 222), 24)))
        ref = _blob(rng, (60, 100, 120), 10)  # a small tumour
        pairs.append(("small, own noise", ref, _blob(rng, (61, 101, 119), 10)))
    return pairs


def _best_time(fn, repeats: int) -> tuple[float, float]:
    best, value = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - t0)
    return value, best


def run(quick: bool = False) -> dict:
    """Measure agreement and speed; return the figures and a Markdown section."""
    from medpy.metric.binary import hd95 as medpy_hd95

    from pfseg_pipeline.evaluation.metrics import hd95

    repeats = 1 if quick else 3
    rows, max_diff, medpy_total, ours_total = [], 0.0, 0.0, 0.0
    for description, ref, pred in make_pairs(quick=quick):
        for spacing_name, spacing in SPACINGS.items():
            # medpy's order is (result, reference); the pooled HD95 is symmetric anyway
            theirs, t_medpy = _best_time(lambda: medpy_hd95(pred, ref, voxelspacing=spacing), repeats)  # noqa: B023
            ours, t_ours = _best_time(lambda: hd95(ref, pred, spacing), repeats)  # noqa: B023
            diff = abs(float(theirs) - ours)
            max_diff = max(max_diff, diff)
            medpy_total += t_medpy
            ours_total += t_ours
            rows.append({"pair": description, "spacing": spacing_name, "spacing_zyx": list(spacing),
                         "voxels_ref": int(ref.sum()), "voxels_pred": int(pred.sum()),
                         "hd95_medpy_mm": float(theirs), "hd95_ours_mm": ours, "abs_diff_mm": diff,
                         "seconds_medpy": t_medpy, "seconds_ours": t_ours, "speedup": t_medpy / t_ours})
    figures = {
        "title": "HD95: ours vs MedPy",
        "shape_zyx": list(SHAPE_ZYX),
        "pairs": rows,
        "max_abs_diff_mm": max_diff,
        "seconds_medpy": medpy_total,
        "seconds_ours": ours_total,
        "speedup": medpy_total / ours_total,
        "repeats": repeats,
    }
    figures["markdown"] = _markdown(figures)
    return figures


def _markdown(figures: dict) -> str:
    lines = [
        f"Masks of {' x '.join(str(s) for s in reversed(figures['shape_zyx']))} voxels (x y z), "
        f"best of {figures['repeats']} per call; `medpy.metric.binary.hd95` vs "
        "`pfseg_pipeline.evaluation.metrics.hd95` (pooled definition, same surfaces).",
        "",
        "| pair | spacing (z, y, x) mm | HD95 MedPy mm | HD95 ours mm | abs diff mm | MedPy s | ours s "
        "| speed-up |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in figures["pairs"]:
        spacing = ", ".join(f"{s:g}" for s in r["spacing_zyx"])
        lines.append(f"| {r['pair']} | {spacing} | {r['hd95_medpy_mm']:.4f} | {r['hd95_ours_mm']:.4f} | "
                     f"{r['abs_diff_mm']:.1e} | {r['seconds_medpy']:.3f} | {r['seconds_ours']:.3f} | "
                     f"{r['speedup']:.1f}x |")
    lines += ["", f"Largest disagreement: {figures['max_abs_diff_mm']:.1e} mm. Total time: MedPy "
              f"{figures['seconds_medpy']:.2f} s, ours {figures['seconds_ours']:.2f} s: "
              f"**{figures['speedup']:.1f}x faster**."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.metrics_speed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="two pairs, one repeat")
    args = parser.parse_args(argv)
    figures = run(quick=args.quick)
    print(json.dumps({k: v for k, v in figures.items() if k != "markdown"}, indent=2))
    print(figures["markdown"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
