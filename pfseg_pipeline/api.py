"""The Python API: load a trained model once, segment cases given as files or as arrays.

    from pfseg_pipeline.api import load_model

    model = load_model("pfseg_brats.zip")     # a package, a results network folder, or its copy
    result = model.segment({"t1": "c_t1.nii.gz", "t1ce": "c_t1ce.nii.gz",
                            "t2": "c_t2.nii.gz", "flair": "c_flair.nii.gz"})
    result.labels                  # (Z, Y, X) uint8 label map on the input's own grid
    result.save("c_seg.nii.gz")    # with the first modality's header, as pfseg_predict writes it

    # arrays (Z, Y, X) with their voxel-to-world affine; from nibabel: np.asarray(img.dataobj).T
    result = model.segment_arrays({"t1": t1, "t1ce": t1ce, "t2": t2, "flair": flair},
                                  affine=img.affine, probabilities=True)
    result.probabilities           # (K, Z, Y, X) float32 region probabilities on the input grid

Every case is preprocessed as `pfseg_predict` preprocesses it (crop to the brain, normalise,
resample to the target spacing: `preprocessing.case.preprocess_case`; arrays take the same
function), predicted by the fold ensemble (`inference.predictor.Predictor`), mapped back onto
its own grid and thresholded into labels by the same function as pfseg_predict's export
(`inference.export.source_grid_prediction`), with the model's postprocessing.json when it has
one (`load_model(..., postprocessing=False)`: without): the same labels, bit for bit. There is no way to
hand the networks a scan without preprocessing it here.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pfseg_pipeline.data.labels import LabelScheme, get_scheme, region_names
from pfseg_pipeline.data.layouts import Case, normalise_modality
from pfseg_pipeline.data.nifti import Geometry, make_reference, write_label_map
from pfseg_pipeline.devices import resolve_device
from pfseg_pipeline.errors import UserError
from pfseg_pipeline.inference.backends import backend_device
from pfseg_pipeline.inference.export import source_grid_prediction
from pfseg_pipeline.inference.predictor import LoadedModels, Predictor, load_models
from pfseg_pipeline.preprocessing.case import preprocess_case

log = logging.getLogger(__name__)

PathLike = str | Path


@dataclass
class Segmentation:
    """One case's prediction on its own grid.

    labels : (Z, Y, X) uint8, the label values of `scheme` (BraTS 2020: 1, 2, 4).
    affine : (4, 4) voxel (i, j, k) -> world of the input grid; i runs along X, the last axis.
    regions : the probability channels' names, e.g. ("WT", "TC", "ET").
    probabilities : (K, Z, Y, X) float32 region probabilities, when asked for.
    scheme : the label scheme the labels are written in.
    reference : the first modality's file (files), whose header `save` copies; None for arrays.
    """

    labels: np.ndarray
    affine: np.ndarray
    regions: tuple[str, ...]
    probabilities: np.ndarray | None
    scheme: LabelScheme
    reference: Path | None = None

    def save(self, path: PathLike) -> Path:
        """Write the label map as NIfTI (atomically): the input file's header for files (same
        shape, zooms, sform and qform, as pfseg_predict writes it), `affine` for arrays."""
        reference = self.reference if self.reference is not None else make_reference(self.labels.shape,
                                                                                      self.affine)
        write_label_map(self.labels, reference, path)
        return Path(path)


def geometry_from_affine(shape_zyx: Sequence[int], affine: Any) -> Geometry:
    """The Geometry of a (Z, Y, X) array with a 4x4 voxel (i, j, k) -> world affine (i along X).

    Spacings are the affine's column lengths, rounded to float32 as a NIfTI header stores
    them, so an array and the same array saved as NIfTI preprocess identically.
    """
    matrix = np.asarray(affine, dtype=np.float64)
    if matrix.shape != (4, 4) or not np.isfinite(matrix).all():
        raise UserError(f"affine must be a finite 4x4 matrix, got shape {matrix.shape}")
    spacing_xyz = np.linalg.norm(matrix[:3, :3], axis=0).astype(np.float32)
    if not (spacing_xyz > 0).all():
        raise UserError(f"affine has a zero-length axis (voxel sizes {spacing_xyz.tolist()})")
    return Geometry(tuple(int(s) for s in shape_zyx), tuple(float(s) for s in spacing_xyz[::-1]),
                    tuple(tuple(float(v) for v in row) for row in matrix))


class Model:
    """A trained model, loaded once; `segment` and `segment_arrays` predict one case each.

    Attributes: `network`, `folds`, `checkpoint`, `backend`, `modalities` (the channels it
    takes, in order), `regions`, `scheme` (the labels it writes), `plans`, `predictor`,
    `postprocessing` (the rules applied to every label map, or None).
    """

    def __init__(self, loaded: LoadedModels, predictor: Predictor, scheme: LabelScheme, source: str):
        self.plans = loaded.plans
        self.network, self.folds = loaded.network, list(loaded.folds)
        self.checkpoint, self.backend = loaded.checkpoint, loaded.backend
        self.modalities = tuple(loaded.plans.modalities)
        self.regions = tuple(region_names(loaded.plans.target))
        self.scheme = scheme
        self.predictor = predictor
        self.source = source
        self.postprocessing = loaded.postprocessing

    def __repr__(self) -> str:
        return (f"Model({self.source!r}: {self.network}, folds {self.folds}, checkpoint {self.checkpoint}, "
                f"backend {self.backend}, modalities {list(self.modalities)}, regions {list(self.regions)})")

    def _modality_keys(self, images: Mapping[str, Any] | Sequence[Any], what: str) -> dict[str, Any]:
        """{modality: item} in `self.modalities` order from a mapping (names as the layouts
        accept them: t1, T1w, flair ...) or a sequence in that order."""
        if isinstance(images, Mapping):
            named = {}
            for key, value in images.items():
                modality = normalise_modality(str(key))
                if modality is None:
                    raise UserError(f"{what}: unknown modality {key!r} (this model takes "
                                    f"{', '.join(self.modalities)})")
                named[modality] = value
        else:
            items = list(images)
            if len(items) != len(self.modalities):
                raise UserError(f"{what}: {len(items)} given, this model takes {len(self.modalities)} "
                                f"({', '.join(self.modalities)}, in that order)")
            named = dict(zip(self.modalities, items))
        missing = [m for m in self.modalities if m not in named]
        if missing:
            raise UserError(f"{what}: no {missing[0]} (this model takes {', '.join(self.modalities)})")
        return {m: named[m] for m in self.modalities}

    def segment(self, images: Mapping[str, PathLike] | Sequence[PathLike], *, probabilities: bool = False,
                case_id: str = "case") -> Segmentation:
        """Segment one case from its image files (NIfTI), by modality or in `modalities` order."""
        files = {m: Path(p) for m, p in self._modality_keys(images, "images").items()}
        case = Case(case_id, files)
        return self._predict(case, None, probabilities, reference=files[self.modalities[0]])

    def segment_arrays(self, images: Mapping[str, np.ndarray] | Sequence[np.ndarray] | np.ndarray,
                       affine: Any, *, probabilities: bool = False, case_id: str = "case") -> Segmentation:
        """Segment one case from arrays (Z, Y, X) by modality, or one (C, Z, Y, X) array in
        `modalities` order, with their 4x4 voxel (i, j, k) -> world affine (i along X)."""
        if isinstance(images, np.ndarray) and images.ndim == 4:
            images = list(images)
        arrays = self._modality_keys(images, "arrays")
        volumes = [np.asarray(a) for a in arrays.values()]
        shapes = {v.shape for v in volumes}
        if len(shapes) != 1 or volumes[0].ndim != 3:
            raise UserError(f"arrays: need 3D (Z, Y, X) arrays of one shape, got shapes "
                            f"{[v.shape for v in volumes]}")
        stacked = np.stack(volumes).astype(np.float32)
        for modality, volume in zip(arrays, stacked):
            if not np.isfinite(volume).all():
                raise UserError(f"arrays: the {modality} array holds NaN or Inf voxels")
            if not volume.any():
                raise UserError(f"arrays: the {modality} array is all zero")
        geometry = geometry_from_affine(stacked.shape[1:], affine)
        case = Case(case_id, {m: Path(f"<{m} array>") for m in arrays})
        return self._predict(case, (stacked, geometry), probabilities, reference=None)

    def _predict(self, case: Case, arrays: tuple[np.ndarray, Geometry] | None, probabilities: bool,
                 reference: Path | None) -> Segmentation:
        image, _, properties = preprocess_case(case, self.plans, with_label=False, arrays=arrays)
        cached = self.predictor.predict_preprocessed(np.asarray(image, dtype=np.float32))
        restored, labels = source_grid_prediction(cached, properties, self.scheme, self.plans.target,
                                                  postprocessing=self.postprocessing)
        affine = np.asarray(properties["source_geometry"]["affine"], dtype=np.float64)
        return Segmentation(labels, affine, self.regions, restored if probabilities else None, self.scheme,
                            reference)


def load_model(source: PathLike, *, folds: Sequence[str | int] | None = None, checkpoint: str | None = None,
               device: str | torch.device = "auto", backend: str | None = None, tta: bool | None = None,
               label_scheme: str | None = None, postprocessing: bool = True) -> Model:
    """Load a trained model once, for `Model.segment` / `Model.segment_arrays`.

    Parameters
    ----------
    source : a model package zip (`pfseg_export_model`), the folder it unpacks to, or a results
        network folder (`results/NAME/NETWORK[__VARIANT]`, or a copy of it).
    folds : the folds to ensemble (default: all); checkpoint : "final" (default) or "best".
    device : "auto", "cpu", "cuda" or "cuda:N"; backend : "torch", "onnxruntime" or "openvino" (CPU).
    tta : average over the mirror flips training used (True) or one pass (False); default: the
        model's plan (`training.tta`); label_scheme : write labels in another scheme ("brats2020",
        "brats2023"; default: the model's).
    postprocessing : apply the model's postprocessing.json when it has one (as pfseg_predict
        does; False: as `pfseg_predict --no-postprocessing`).
    """
    loaded = load_models(source, folds, checkpoint, device=resolve_device(backend_device(backend, device)),
                         backend=backend, postprocessing=postprocessing)
    predictor = Predictor.from_loaded(loaded, device, tta)
    scheme = get_scheme(label_scheme) if label_scheme else loaded.plans.scheme
    return Model(loaded, predictor, scheme, str(source))
