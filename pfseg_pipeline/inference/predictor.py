"""A network-agnostic predictor: fold ensemble, mirror TTA, whole volume or sliding window.

`Predictor` turns a preprocessed image (C, Z, Y, X) into region probabilities (K, Z, Y, X) on
the same grid. Patch-free networks (their spec in `networks.registry` says so) see the whole
volume in one forward pass; patch-based ones go through the Gaussian sliding window with the
planned patch and step. Probabilities (sigmoid) are averaged over folds and, with `tta`, over
the mirror combinations of the axes training flipped (`plans.training.augmentation.mirror_axes`:
8 combinations for three axes).

`load_models` reads a results network folder (plans.json + dataset.json + fold_*/checkpoint_*.pt,
through the shared `checkpoints` module) and builds each fold's network from the plans with
`networks.registry.build_network`, or reads a model package (`inference.packaged`); with
`backend="onnxruntime"` or `"openvino"` the networks run exported (`inference.backends`). It never
imports training code: a copied results folder or a package predicts on its own.

The predictor takes PREPROCESSED images (`predict_preprocessed`): cropped, normalised and
resampled as the plans say (`preprocessing.case.preprocess_case`). A scan as read from its
files gives wrong labels without any error; `pfseg_pipeline.api` and `predict_folder` take scans
and preprocess them.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pfseg_pipeline.checkpoints import fold_checkpoints, load_weights, read_checkpoint
from pfseg_pipeline.devices import resolve_device
from pfseg_pipeline.errors import UserError
from pfseg_pipeline.fileio import read_json
from pfseg_pipeline.inference.postprocessing import Postprocessing, model_postprocessing
from pfseg_pipeline.inference.sliding_window import sliding_window_inference
from pfseg_pipeline.inference.whole_volume import whole_volume_inference
from pfseg_pipeline.networks.registry import NETWORKS, build_network, network_spec
from pfseg_pipeline.plans import Plans, load_plans

log = logging.getLogger(__name__)

def mirror_combinations(axes: Sequence[int]) -> list[tuple[int, ...]]:
    """Every subset of the spatial `axes` (z=0, y=1, x=2) to flip: 8 for three axes, () first."""
    axes = tuple(sorted(set(int(a) for a in axes)))
    return [combo for r in range(len(axes) + 1) for combo in itertools.combinations(axes, r)]


class Predictor:
    """Region probabilities of preprocessed images, averaged over folds (and mirrors).

    Parameters
    ----------
    models : one network per fold, each with `forward_infer(hr_image) -> HR logits`.
    plans : the plans the networks were built from (shapes, divisor, patch, step).
    network_name : registry name; its spec decides whole-volume vs sliding-window inference.
    device : where the networks run ("auto", "cpu", "cuda", or a torch.device).
    tta : average over the mirror combinations of the axes training flipped as well (the
        constructor does only when asked; `from_model_dir` / `from_loaded` follow the plan's
        `training.tta` unless told).
    tile_batch : windows per forward pass in the sliding window.
    amp : autocast (float16) on CUDA; None = on for CUDA, off on the CPU.
    folds, checkpoint : where the models came from (recorded in timings.json).
    """

    def __init__(self, models: Sequence[nn.Module], plans: Plans, network_name: str,
                 device: str | torch.device = "cpu", tta: bool = False, tile_batch: int = 2,
                 amp: bool | None = None, folds: Sequence[str | int] = (), checkpoint: str | None = None):
        if not models:
            raise ValueError("Predictor needs at least one model")
        self.device = resolve_device(device)
        self.models = [m.to(self.device).eval() for m in models]
        self.plans = plans
        self.network_name = network_name
        self.tta = bool(tta)
        self.mirrors = (mirror_combinations(plans.training.augmentation.mirror_axes) if self.tta
                        else [()])
        self.patch_free = network_spec(network_name).patch_free
        self.folds = [str(f) for f in folds]
        self.checkpoint = checkpoint
        self.tile_batch = max(1, int(tile_batch))
        self.amp = (self.device.type == "cuda") if amp is None else bool(amp and self.device.type == "cuda")

    @classmethod
    def from_model_dir(cls, model_dir: str | Path, folds: Sequence[str | int] | None = None,
                       checkpoint: str | None = None, device: str | torch.device = "auto",
                       tta: bool | None = None, backend: str | None = None, **kwargs: Any) -> Predictor:
        """A predictor over `load_models(model_dir, ...)`: a results network folder or a package;
        `tta` None: the plan's `training.tta`."""
        from pfseg_pipeline.inference.backends import backend_device

        loaded = load_models(model_dir, folds, checkpoint, device=backend_device(backend, device),
                             backend=backend)
        return cls.from_loaded(loaded, device, tta, **kwargs)

    @classmethod
    def from_loaded(cls, loaded: LoadedModels, device: str | torch.device = "auto", tta: bool | None = None,
                    **kwargs: Any) -> Predictor:
        """A predictor over what `load_models` returned, on `device` as the user asked for it
        ('auto', 'cpu', 'cuda' ...), held to the backend the models ended up on: an onnx package
        loaded without `backend` runs on ONNX Runtime, so on the CPU even where CUDA is there.
        `tta` None: the plan's `training.tta` (the models' default inference)."""
        from pfseg_pipeline.inference.backends import backend_device

        tta = loaded.plans.training.tta if tta is None else tta
        return cls(loaded.models, loaded.plans, loaded.network, device=backend_device(loaded.backend, device),
                   tta=tta, folds=loaded.folds, checkpoint=loaded.checkpoint, **kwargs)

    @property
    def n_forward_passes(self) -> int:
        return len(self.models) * len(self.mirrors)

    def _forward(self, model: nn.Module, volume: torch.Tensor) -> torch.Tensor:
        """(1, C, Z, Y, X) -> probabilities (1, K, Z, Y, X) float32 of one model, one mirror."""
        def infer(x: torch.Tensor) -> torch.Tensor:
            with torch.autocast("cuda", dtype=torch.float16, enabled=self.amp):
                return model.forward_infer(x)

        if self.patch_free:
            divisor = getattr(model, "divisor_zyx", None) or self.plans.hr_divisor_zyx
            return whole_volume_inference(volume, infer, divisor,
                                          self.plans.hr_shape_zyx, activation="sigmoid")
        patch = self.plans.patch_based
        return sliding_window_inference(volume, infer, patch.patch_shape_zyx, step=patch.step,
                                        tile_batch=self.tile_batch, gaussian=True,
                                        activation="sigmoid")

    def predict_preprocessed(self, image: np.ndarray | torch.Tensor) -> np.ndarray:
        """Probabilities (K, Z, Y, X) float32 of an image (C, Z, Y, X) ALREADY PREPROCESSED.

        `image` must be what `preprocessing.case.preprocess_case` returns (cropped, normalised,
        resampled to the target spacing; a cached case's `image`); the probabilities are on that
        grid. A raw scan is not checked for and gives wrong labels: segment scans with
        `pfseg_pipeline.api` or `inference.pipeline.predict_folder`, which preprocess them.
        The mean over folds (and mirrors with `tta`) of each network's sigmoid probabilities.
        """
        volume = torch.as_tensor(np.asarray(image, dtype=np.float32) if isinstance(image, np.ndarray)
                                 else image, dtype=torch.float32)
        if volume.ndim != 4:
            raise ValueError(f"image must be (C, Z, Y, X), got shape {tuple(volume.shape)}")
        if volume.shape[0] != self.plans.in_channels:
            raise ValueError(f"image has {volume.shape[0]} channels, the plans expect "
                             f"{self.plans.in_channels} ({', '.join(self.plans.modalities)})")
        volume = volume[None].to(self.device)
        total: torch.Tensor | None = None
        with torch.no_grad():
            for model in self.models:
                for flip in self.mirrors:
                    dims = [d + 2 for d in flip]
                    x = torch.flip(volume, dims) if dims else volume
                    probs = self._forward(model, x)
                    if dims:
                        probs = torch.flip(probs, dims)
                    total = probs if total is None else total + probs
        mean = total[0] / self.n_forward_passes
        return mean.cpu().numpy().astype(np.float32, copy=False)


# ---- loading a results network folder ---------------------------------------------------------
@dataclass
class LoadedModels:
    """What `load_models` found: one built network per fold, and where it came from."""

    models: list[nn.Module]
    plans: Plans
    network: str
    network_options: dict[str, Any]
    folds: list[str]
    checkpoints: list[Path]
    dataset: dict[str, Any] = field(default_factory=dict)
    checkpoint: str = "final"
    backend: str = "torch"
    postprocessing: Postprocessing | None = None   # the folder's postprocessing.json, if any


def load_models(model_dir: str | Path, folds: Sequence[str | int] | None = None,
                checkpoint: str | None = None, device: str | torch.device = "cpu",
                network: str | None = None, backend: str | None = None,
                postprocessing: bool = True) -> LoadedModels:
    """Build and load one network per fold from a results network folder or a model package.

    Parameters
    ----------
    model_dir : `results/NAME/NETWORK[__VARIANT]` or a copy of it: plans.json (and dataset.json)
        beside fold_* folders; or a model package (`inference.packaged`).
    folds : fold names (0..4, 'all', 'paper', ...); None = every fold with the checkpoint.
    checkpoint : 'final', 'best' or 'latest' (checkpoint_<kind>.pt); None = final (a package's own).
    network : expected registry name; None = what the checkpoints say.
    backend : 'torch' (eager), 'onnxruntime' or 'openvino' (`inference.backends`); None = torch
        (an onnx package: onnxruntime).
    postprocessing : read the folder's postprocessing.json into `LoadedModels.postprocessing`
        (False: leave it out, unread).

    Every problem a user can fix is a UserError naming the file: a missing folder, plans or
    checkpoint; a corrupt checkpoint; weights that do not fit the network the plans describe.
    """
    from pfseg_pipeline.inference.backends import check_backend, to_backend
    from pfseg_pipeline.inference.packaged import is_package, load_package

    if is_package(model_dir):
        return load_package(model_dir, folds, checkpoint, device, network, backend, postprocessing)
    backend = check_backend(backend or "torch")
    checkpoint = checkpoint or "final"
    model_dir = Path(model_dir)
    if model_dir.is_file():
        raise UserError(f"{model_dir}: neither a model folder nor a model package zip")
    if not model_dir.is_dir():
        raise UserError(f"{model_dir}: model folder not found (train first, or pass --model-dir "
                        "a results network folder)")
    plans_path = model_dir / "plans.json"
    if not plans_path.is_file():
        raise UserError(f"{plans_path}: file not found (a model folder holds plans.json and "
                        "dataset.json beside its fold_* folders)")
    plans = load_plans(plans_path)
    dataset_path = model_dir / "dataset.json"
    dataset = read_json(dataset_path) if dataset_path.is_file() else {}

    fold_names, paths = fold_checkpoints(model_dir, folds, checkpoint)

    models, name, options = [], network, None
    for path in paths:
        ckpt = read_checkpoint(path)
        ckpt_name = ckpt.get("network")
        if not isinstance(ckpt_name, str) or ckpt_name not in NETWORKS:
            raise UserError(f"{path}: checkpoint names network {ckpt_name!r}, not one of "
                            f"{', '.join(sorted(NETWORKS))}")
        if name is not None and ckpt_name != name:
            raise UserError(f"{path}: checkpoint holds network {ckpt_name!r}, expected {name!r}")
        name = ckpt_name
        ckpt_options = ckpt.get("network_options") or {}
        if not isinstance(ckpt_options, dict):
            raise UserError(f"{path}: 'network_options' must be a dict, got {type(ckpt_options).__name__}")
        if options is not None and ckpt_options != options:
            raise UserError(f"{path}: network options {ckpt_options} differ from the other folds' {options}")
        options = ckpt_options
        _warn_if_plans_differ(path, ckpt.get("plans"), plans)
        try:
            model = build_network(name, plans, **options)
        except (TypeError, UserError) as exc:
            raise UserError(f"{path}: network options {options} do not fit {name!r} ({exc})") from exc
        load_weights(model, ckpt["model"], path, plans_path)
        models.append(model.to(resolve_device(device)).eval())
    return LoadedModels(to_backend(models, plans, name, backend), plans, name, dict(options or {}),
                        fold_names, paths, dataset, checkpoint=checkpoint, backend=backend,
                        postprocessing=(model_postprocessing(model_dir, plans.target) if postprocessing
                                        else None))


_NETWORK_FIELDS = ("modalities", "target", "hr_shape_zyx", "lr_scale_zyx", "lr_operator", "network",
                   "guidance", "normalization", "target_spacing_zyx")


def _warn_if_plans_differ(path: Path, ckpt_plans: Any, plans: Plans) -> None:
    if not isinstance(ckpt_plans, dict):
        return
    current = plans.to_json()
    differ = [k for k in _NETWORK_FIELDS if k in ckpt_plans and ckpt_plans[k] != current.get(k)]
    if differ:
        log.warning("%s: the checkpoint's plans differ from the folder's plans.json in %s; "
                    "predicting with the folder's plans", path, ", ".join(differ))
