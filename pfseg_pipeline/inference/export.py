"""Export a prediction in the input's own geometry (PFSEG_METHOD.md, defect 10 fixed).

Probabilities on the cached grid (the brain box at the target spacing) are mapped back to the
source grid by `preprocessing.case.restore_to_source` (undo the resampling, linear; then undo
the crop by placing into zeros), thresholded at 0.5 into region masks, painted into BraTS
labels by `data.labels.regions_to_labels`, and written on the grid of the case's first modality
image (`data.image_io.write_label_map`): a NIfTI with its header (same shape, zooms, sform and
qform, uint8, scl_slope 1 and scl_inter 0), an .mha / .nrrd with its origin, spacing and direction.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pfseg_pipeline.data.image_io import write_label_map
from pfseg_pipeline.data.labels import LabelScheme, regions_to_labels
from pfseg_pipeline.fileio import save_npz
from pfseg_pipeline.inference.postprocessing import Postprocessing

THRESHOLD = 0.5


def probabilities_to_labels(probabilities: np.ndarray, scheme: LabelScheme, target: str = "regions",
                            threshold: float = THRESHOLD) -> np.ndarray:
    """Region probabilities (K, Z, Y, X) -> uint8 label map (Z, Y, X).

    A voxel belongs to a region when its probability exceeds `threshold` (strictly, as
    nnU-Net's region export does); regions are painted with the scheme's class order.
    """
    return regions_to_labels(np.asarray(probabilities) > threshold, scheme, target)


def restore_probabilities(probabilities: np.ndarray, properties: dict[str, Any]) -> np.ndarray:
    """Probabilities on the cached grid (K, Z, Y, X) -> the source grid (K, Zs, Ys, Xs), float32."""
    from pfseg_pipeline.preprocessing.case import restore_to_source

    restored = restore_to_source(np.asarray(probabilities, dtype=np.float32), properties, order=1)
    return np.asarray(restored, dtype=np.float32)


def source_grid_prediction(probabilities: np.ndarray, properties: dict[str, Any], scheme: LabelScheme,
                           target: str = "regions", threshold: float = THRESHOLD,
                           postprocessing: Postprocessing | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities on the cached grid (K, Z, Y, X) -> (probabilities (K, Zs, Ys, Xs) float32,
    label map (Zs, Ys, Xs) uint8), both on the source grid: what `export_prediction` writes.
    `postprocessing` changes the label map only, never the probabilities."""
    restored = restore_probabilities(probabilities, properties)
    labels = probabilities_to_labels(restored, scheme, target, threshold)
    if postprocessing is not None:
        labels = postprocessing.apply_to_labels(labels, scheme, target,
                                                properties["source_geometry"]["spacing_zyx"])
    return restored, labels


def export_prediction(probabilities: np.ndarray, properties: dict[str, Any],
                      reference: str | os.PathLike, out_path: str | os.PathLike, scheme: LabelScheme,
                      target: str = "regions", region_names: Sequence[str] | None = None,
                      probabilities_path: str | os.PathLike | None = None,
                      threshold: float = THRESHOLD,
                      postprocessing: Postprocessing | None = None) -> np.ndarray:
    """Write one case's label map (and optionally its probabilities) on the source grid.

    Parameters
    ----------
    probabilities : (K, Z, Y, X) region probabilities on the cached grid.
    properties : the case's preprocessing properties (`preprocess_case`'s third result).
    reference : the case's first modality image; its header is copied.
    out_path : the label map, `<case>.nii.gz` (or .nii, .mha, .nrrd: the format follows the
        name), written atomically.
    probabilities_path : when given, `<case>.npz` with `probabilities` (K, Zs, Ys, Xs) float16
        on the source grid and `regions` (the K region names); never postprocessed.
    postprocessing : applied to the label map on the source grid before it is written.

    Returns the label map (Zs, Ys, Xs) uint8 that was written.
    """
    restored, labels = source_grid_prediction(probabilities, properties, scheme, target, threshold,
                                              postprocessing)
    write_label_map(labels, reference, out_path)
    if probabilities_path is not None:
        names = list(region_names) if region_names is not None else [f"region_{i}" for i in
                                                                     range(restored.shape[0])]
        save_npz(Path(probabilities_path), compress=True,
                 probabilities=restored.astype(np.float16), regions=np.array(names, dtype=str))
    return labels
