"""The networks of a model package (a zip from `pfseg_export_model`, or the folder it unpacks to).

`inference.predictor.load_models` hands a package here, so everything that predicts from a
results network folder (`pfseg_predict --model-dir`, `Predictor.from_model_dir`, the Python
API) predicts from a package too:

- a zip is checked and unpacked into a temporary folder (`model_package.archive.unpacked`),
  read into memory, and the folder removed;
- pytorch packages: each fold's network is built from plans.json with the manifest's options,
  its training-only modules left out, and its safetensors weights loaded strictly (eager
  PyTorch, or exported to ONNX with `backend="onnxruntime"` or `"openvino"`);
- onnx packages: each fold's graph runs on ONNX Runtime (default) or OpenVINO;
- torchscript packages hold TorchScript for other runtimes (libtorch, MONAI-style tools): a
  TorchScript file is a pickle-based archive, which pfseg never loads from a package.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from pfseg_pipeline.checkpoints import load_weights
from pfseg_pipeline.errors import UserError
from pfseg_pipeline.fileio import read_json
from pfseg_pipeline.inference.backends import GRAPH_BACKENDS, check_backend, onnx_module, to_backend
from pfseg_pipeline.inference.postprocessing import model_postprocessing
from pfseg_pipeline.model_package.archive import is_package_zip, unpacked
from pfseg_pipeline.model_package.manifest import DATASET, MANIFEST, PLANS, Manifest, read_manifest
from pfseg_pipeline.model_package.weights import build_inference_network, read_weights
from pfseg_pipeline.plans import load_plans

log = logging.getLogger(__name__)


def is_package(path: str | Path) -> bool:
    """A package zip, or a folder holding `pfseg_model.json`."""
    path = Path(path)
    return is_package_zip(path) or (path / MANIFEST).is_file()


def default_backend(manifest: Manifest) -> str:
    return "onnxruntime" if manifest.format == "onnx" else "torch"


def load_package(source: str | Path, folds: Sequence[str | int] | None = None, checkpoint: str | None = None,
                 device: str | torch.device = "cpu", network: str | None = None, backend: str | None = None,
                 postprocessing: bool = True):
    """`inference.predictor.LoadedModels` of a package zip or unpacked package folder.

    Parameters
    ----------
    folds : a subset of the package's folds; None = all of them.
    checkpoint : must be the package's ("final" or "best") when given.
    network : the expected registry name, when given.
    backend : "torch", "onnxruntime" or "openvino"; None = what the package holds (onnx -> onnxruntime).
    """
    source = Path(source)
    if is_package_zip(source):
        with unpacked(source) as folder:
            loaded = load_package(folder, folds, checkpoint, device, network, backend, postprocessing)
        loaded.checkpoints = [source / p.relative_to(folder) for p in loaded.checkpoints]
        return loaded
    from pfseg_pipeline.devices import resolve_device
    from pfseg_pipeline.inference.predictor import LoadedModels

    manifest = read_manifest(source)
    what = (f"{source} (a model package: {manifest.network}, {manifest.format}, "
            f"checkpoint_{manifest.checkpoint})")
    if network is not None and network != manifest.network:
        raise UserError(f"{what}: holds network {manifest.network!r}, not {network!r}")
    if checkpoint is not None and checkpoint != manifest.checkpoint:
        raise UserError(f"{what}: holds checkpoint_{manifest.checkpoint} only, not checkpoint_{checkpoint}")
    names = [str(f) for f in folds] if folds else list(manifest.folds)
    unknown = [f for f in names if f not in manifest.folds]
    if unknown:
        raise UserError(f"{what}: no fold {unknown[0]} (it holds fold(s) {', '.join(manifest.folds)})")
    backend = check_backend(backend or default_backend(manifest))
    if manifest.format == "torchscript":
        raise UserError(f"{what}: TorchScript is for other runtimes (libtorch, MONAI-style tools); pfseg "
                        "predicts from pytorch or onnx packages (pfseg_export_model --format pytorch|onnx)")
    if manifest.format == "onnx" and backend not in GRAPH_BACKENDS:
        raise UserError(f"{what}: an onnx package runs on --backend {' or '.join(GRAPH_BACKENDS)} only")

    plans = load_plans(source / PLANS)
    dataset = read_json(source / DATASET)
    paths = [source / manifest.weights(f) for f in names]
    models = []
    for path in paths:
        if manifest.format == "onnx":
            models.append(onnx_module(path.read_bytes(), plans.in_channels, manifest.network, str(path),
                                      backend=backend))
            continue
        try:
            model = build_inference_network(manifest.network, plans, manifest.network_options)
        except (TypeError, UserError) as exc:
            raise UserError(f"{source / MANIFEST}: network options {manifest.network_options} do not fit "
                            f"{manifest.network!r} ({exc})") from None
        load_weights(model, read_weights(path), path, source / PLANS)
        models.append(model.to(resolve_device(device)).eval())
    if manifest.format == "pytorch":
        models = to_backend(models, plans, manifest.network, backend)
    log.info("model package %s: %s, fold(s) %s, checkpoint_%s, %s on %s", source, manifest.network,
             ", ".join(names), manifest.checkpoint, manifest.format, backend)
    return LoadedModels(models, plans, manifest.network, dict(manifest.network_options), names, paths,
                        dataset if isinstance(dataset, dict) else {}, checkpoint=manifest.checkpoint,
                        backend=backend,
                        postprocessing=model_postprocessing(source, plans.target) if postprocessing else None)
