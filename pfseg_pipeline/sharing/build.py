"""A results network folder -> a model package zip (what `pfseg_export_model` runs).

    export_model(Workspace.resolve().network_dir("BraTS", "pfseg"), "pfseg_brats.zip")

The folds' checkpoints are read as prediction reads them (`inference.predictor.load_models`:
weights_only, strict), then written in the asked format (`model_package.manifest.FORMATS`):
inference-only weights in safetensors, or `forward_infer` as ONNX or TorchScript with dynamic
batch and spatial axes (`export/`). Beside them: plans.json as trained, dataset.json without
the raw folder and the case list (what was found, with every source path), the fingerprint
and the postprocessing choice when the folder has them, and the model card. No JSON member may
hold an absolute path: a file that does is refused, naming the key.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from pfseg_pipeline import __version__
from pfseg_pipeline.errors import UserError
from pfseg_pipeline.fileio import read_json
from pfseg_pipeline.inference.predictor import load_models
from pfseg_pipeline.model_package.archive import sha256_of, write_package
from pfseg_pipeline.model_package.manifest import (
    CARD_JSON,
    CARD_MARKDOWN,
    DATASET,
    EXPORTABLE_CHECKPOINTS,
    FINGERPRINT,
    FORMATS,
    MANIFEST,
    OPTIONAL_JSON,
    PLANS,
    Manifest,
    weights_member,
)
from pfseg_pipeline.model_package.weights import inference_network, weights_bytes
from pfseg_pipeline.networks.registry import count_parameters, inference_parameter_count, network_spec
from pfseg_pipeline.sharing.model_card import card_markdown, fold_record, model_card

log = logging.getLogger(__name__)

# what the workspace's dataset.json records about the raw data, which a package leaves out:
# the raw folder and the case list (every case's source file paths)
PRIVATE_DATASET_KEYS = ("raw_root", "cases")
_ABSOLUTE = re.compile(r"^(/|~/|[A-Za-z]:[\\/]|\\\\)")


@dataclasses.dataclass(frozen=True)
class ExportedModel:
    """What `export_model` wrote: the zip, its manifest and its size in bytes."""

    path: Path
    manifest: Manifest
    bytes: int


def absolute_paths(obj: Any, key: str = "") -> list[str]:
    """Dotted keys of the strings in a JSON value that look like absolute paths."""
    if isinstance(obj, dict):
        return [k for name, v in obj.items()
                for k in absolute_paths(v, f"{key}.{name}" if key else str(name))]
    if isinstance(obj, list):
        return [k for i, v in enumerate(obj) for k in absolute_paths(v, f"{key}[{i}]")]
    return [key] if isinstance(obj, str) and len(obj) > 1 and _ABSOLUTE.match(obj) else []


def _check_no_paths(data: Any, source: str) -> None:
    found = absolute_paths(data)
    if found:
        raise UserError(f"{source}: holds an absolute path at {found[0]!r}; a model package must not "
                        "(remove it and export again)")


def _json_member(data: Any, source: str) -> bytes:
    _check_no_paths(data, source)
    return (json.dumps(data, indent=2) + "\n").encode("utf-8")


def _json_file(path: Path) -> tuple[Any, bytes]:
    """A JSON file carried verbatim: (its data, its bytes), after the absolute-path check."""
    data = read_json(path)
    _check_no_paths(data, str(path))
    return data, path.read_bytes()


def public_dataset(dataset: dict[str, Any], plans) -> dict[str, Any]:
    """dataset.json without `PRIVATE_DATASET_KEYS`; made from the plans when there is none."""
    if not dataset:
        return {"name": plans.dataset_name, "modalities": list(plans.modalities),
                "label_scheme": plans.label_scheme, "target": plans.target}
    return {k: v for k, v in dataset.items() if k not in PRIVATE_DATASET_KEYS}


def _network_and_variant(network_dir: Path, network: str) -> str | None:
    prefix = f"{network}__"
    return network_dir.name[len(prefix):] if network_dir.name.startswith(prefix) else None


def _weights(fmt: str, model: torch.nn.Module, plans, network: str, metadata: dict[str, str]) -> bytes:
    shape = network_spec(network).input_shape(plans)
    if fmt == "onnx":
        from pfseg_pipeline.export.onnx_export import onnx_bytes

        return onnx_bytes(model, plans.in_channels, shape)
    if fmt == "torchscript":
        from pfseg_pipeline.export.torchscript_export import torchscript_bytes

        return torchscript_bytes(model, plans.in_channels, shape)
    return weights_bytes(inference_network(model), metadata)


def _versions(fmt: str) -> dict[str, str]:
    import safetensors

    versions = {"pfseg_pipeline": __version__, "torch": torch.__version__}
    if fmt == "pytorch":
        versions["safetensors"] = safetensors.__version__
    if fmt == "onnx":
        import onnx

        versions["onnx"] = onnx.__version__
    return versions


def export_model(network_dir: str | Path, output: str | Path, folds: Sequence[str | int] | None = None,
                 checkpoint: str = "final", fmt: str = "pytorch", overwrite: bool = False,
                 fingerprint: str | Path | None = None) -> ExportedModel:
    """Write the package of a results network folder.

    Parameters
    ----------
    network_dir : `results/NAME/NETWORK[__VARIANT]` (or a copy): plans.json, dataset.json,
        fold_*/checkpoint_*.pt.
    output : the zip to write (a new file unless `overwrite`).
    folds : the folds to ship; None = every fold with the checkpoint.
    checkpoint : "final" or "best".
    fmt : "pytorch" (safetensors), "onnx" or "torchscript".
    fingerprint : the training data's fingerprint.json to ship when the folder has none (the
        workspace's preprocessed/NAME/fingerprint.json).
    """
    network_dir, output = Path(network_dir), Path(output)
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: choose from {', '.join(FORMATS)}")
    if checkpoint not in EXPORTABLE_CHECKPOINTS:
        raise UserError(f"--checkpoint {checkpoint!r}: a package holds {' or '.join(EXPORTABLE_CHECKPOINTS)} "
                        "(latest is for resuming training)")
    if output.suffix.lower() != ".zip":
        raise UserError(f"{output}: the package is a zip file: name it *.zip")
    if output.exists() and not overwrite:
        raise UserError(f"{output}: already exists (--overwrite replaces it)")
    if fmt == "onnx":
        from pfseg_pipeline.export.onnx_export import require_onnx

        require_onnx()
    loaded = load_models(network_dir, folds, checkpoint, device="cpu")
    network, plans = loaded.network, loaded.plans
    variant = _network_and_variant(network_dir, network)
    dataset = public_dataset(loaded.dataset, plans)
    dataset_name = str(dataset.get("name") or plans.dataset_name)
    total = count_parameters(loaded.models[0])
    inference = inference_parameter_count(loaded.models[0])

    members: dict[str, bytes] = {PLANS: _json_file(network_dir / PLANS)[1],
                                 DATASET: _json_member(dataset, str(network_dir / DATASET))}
    found_fingerprint = None
    for name in OPTIONAL_JSON:
        source = network_dir / name
        if name == FINGERPRINT and not source.is_file() and fingerprint is not None:
            source = Path(fingerprint)
        if source.is_file():
            data, members[name] = _json_file(source)
            found_fingerprint = data if name == FINGERPRINT else found_fingerprint
    for fold, model in zip(loaded.folds, loaded.models):
        member = weights_member(fold, checkpoint, fmt)
        members[member] = _weights(fmt, model, plans, network, {"network": network, "fold": fold,
                                                               "checkpoint": checkpoint})
        log.info("fold %s: %s (%.1f MB)", fold, member, len(members[member]) / 1e6)

    created = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    versions = _versions(fmt)
    card = model_card(dataset=dataset_name, network=network, variant=variant,
                      network_options=loaded.network_options, patch_free=network_spec(network).patch_free,
                      checkpoint=checkpoint, fmt=fmt, plans=plans,
                      folds=[fold_record(network_dir / f"fold_{f}", f, checkpoint) for f in loaded.folds],
                      fingerprint=found_fingerprint,
                      parameters={"inference": inference, "training_only": total - inference},
                      versions=versions, created=created)
    members[CARD_JSON] = _json_member(card, CARD_JSON)
    members[CARD_MARKDOWN] = card_markdown(card).encode("utf-8")
    manifest = Manifest(format=fmt, network=network, variant=variant, network_options=loaded.network_options,
                        dataset=dataset_name, checkpoint=checkpoint, folds=list(loaded.folds),
                        files={n: {"bytes": len(d), "sha256": sha256_of(d)} for n, d in members.items()},
                        inference_parameters=inference, pfseg_version=__version__,
                        torch_version=torch.__version__, created=created)
    members = {MANIFEST: _json_member(manifest.to_json(), MANIFEST), **members}
    write_package(output, members)
    size = output.stat().st_size
    log.info("wrote %s: %s, fold(s) %s, checkpoint_%s, %s, %.1f MB (%.2f M inference parameters)", output,
             network, ", ".join(loaded.folds), checkpoint, fmt, size / 1e6, inference / 1e6)
    return ExportedModel(output, manifest, size)
