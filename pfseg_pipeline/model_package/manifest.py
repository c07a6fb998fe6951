"""`pfseg_model.json`: what a model package holds, and the names of its members.

A package (a zip, or the folder it unpacks to) is laid out like a results network folder, so a
command that reads one (plans.json, dataset.json, fingerprint.json, postprocessing.json beside
`fold_*` folders) reads the other:

    pfseg_model.json                    this manifest
    MODEL_CARD.md, model_card.json      the model card (`sharing.model_card`)
    plans.json                          as trained
    dataset.json                        name, modalities, label scheme, target (no paths, no case list)
    fingerprint.json                    the training data's fingerprint (when the folder had one)
    postprocessing.json                 the postprocessing choice, verbatim (when the folder had one)
    fold_K/checkpoint_<final|best>.<safetensors|onnx|ts>   one network per fold

The manifest lists every other member with its size and SHA-256: unpacking refuses a member
it does not list, a listed one that is missing, or one whose bytes differ.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pfseg_pipeline.errors import UserError
from pfseg_pipeline.fileio import read_json

MANIFEST = "pfseg_model.json"
PACKAGE_KIND = "pfseg-model"
PACKAGE_VERSION = 1
CARD_JSON = "model_card.json"
CARD_MARKDOWN = "MODEL_CARD.md"
PLANS = "plans.json"
DATASET = "dataset.json"
FINGERPRINT = "fingerprint.json"
POSTPROCESSING = "postprocessing.json"
# JSON files carried from the network folder when it has them (read by the commands as they are)
OPTIONAL_JSON = (FINGERPRINT, POSTPROCESSING)

# pytorch: safetensors weights, rebuilt into the network from plans.json (eager or ONNX Runtime);
# onnx: forward_infer as an ONNX graph per fold (ONNX Runtime); torchscript: the traced, frozen
# forward_infer per fold, for other runtimes (libtorch, MONAI-style tools)
FORMATS = ("pytorch", "onnx", "torchscript")
WEIGHT_SUFFIXES = {"pytorch": ".safetensors", "onnx": ".onnx", "torchscript": ".ts"}
EXPORTABLE_CHECKPOINTS = ("final", "best")   # latest is for resuming training, not for sharing
_FOLD_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def weights_member(fold: str, checkpoint: str, fmt: str) -> str:
    """`fold_<fold>/checkpoint_<checkpoint><suffix of fmt>`."""
    return f"fold_{fold}/checkpoint_{checkpoint}{WEIGHT_SUFFIXES[fmt]}"


@dataclass(frozen=True)
class Manifest:
    """The contents of `pfseg_model.json`.

    format : one of FORMATS.
    network, variant, network_options : the registry name, the results variant (None for the
        network as specified) and the builder options the folds were trained with.
    dataset : the dataset name the model was trained on (the default install name).
    checkpoint : which checkpoint of each fold, "final" or "best".
    folds : fold names, in order.
    files : member name -> {"bytes": size, "sha256": hex digest}, every member but the manifest.
    inference_parameters : parameters `forward_infer` uses, per fold.
    """

    format: str
    network: str
    variant: str | None
    network_options: dict[str, Any]
    dataset: str
    checkpoint: str
    folds: list[str]
    files: dict[str, dict[str, Any]]
    inference_parameters: int
    pfseg_version: str
    torch_version: str
    kind: str = PACKAGE_KIND
    version: int = PACKAGE_VERSION
    created: str = ""

    def weights(self, fold: str) -> str:
        return weights_member(fold, self.checkpoint, self.format)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any, source: str) -> Manifest:
        """The manifest of `data` (parsed JSON); anything malformed is a UserError naming `source`."""
        if not isinstance(data, dict) or data.get("kind") != PACKAGE_KIND:
            raise UserError(f"{source}: not a pfseg model manifest (no \"kind\": \"{PACKAGE_KIND}\")")
        if data.get("version") != PACKAGE_VERSION:
            raise UserError(f"{source}: package version {data.get('version')!r}; this pfseg reads version "
                            f"{PACKAGE_VERSION} (export it again with this pfseg, or update pfseg)")
        names = {f.name for f in cls.__dataclass_fields__.values()}
        unknown = sorted(set(data) - names)
        if unknown:
            raise UserError(f"{source}: unknown field {unknown[0]!r}")
        try:
            manifest = cls(**data)
        except TypeError as exc:
            raise UserError(f"{source}: malformed manifest ({exc})") from None
        manifest._check(source)
        return manifest

    def _check(self, source: str) -> None:
        def bad(what: str) -> UserError:
            return UserError(f"{source}: {what}")

        if self.format not in FORMATS:
            raise bad(f"format {self.format!r} is not one of {', '.join(FORMATS)}")
        if self.checkpoint not in EXPORTABLE_CHECKPOINTS:
            raise bad(f"checkpoint {self.checkpoint!r} is not one of {', '.join(EXPORTABLE_CHECKPOINTS)}")
        for key in ("network", "dataset"):
            if not isinstance(getattr(self, key), str) or not getattr(self, key):
                raise bad(f"field {key!r} must be a non-empty string")
        if self.variant is not None and not (isinstance(self.variant, str)
                                             and _FOLD_NAME.fullmatch(self.variant)):
            raise bad(f"variant {self.variant!r} is not a valid folder suffix")
        if not isinstance(self.network_options, dict):
            raise bad("field 'network_options' must be an object")
        if not isinstance(self.folds, list) or not self.folds or any(
                not isinstance(f, str) or not _FOLD_NAME.fullmatch(f) for f in self.folds):
            raise bad(f"folds {self.folds!r} must be a non-empty list of fold names")
        if len(set(self.folds)) != len(self.folds):
            raise bad(f"folds {self.folds} repeat a fold")
        if not isinstance(self.files, dict):
            raise bad("field 'files' must be an object")
        for name, entry in self.files.items():
            if not (isinstance(entry, dict) and isinstance(entry.get("bytes"), int)
                    and not isinstance(entry.get("bytes"), bool) and entry["bytes"] >= 0
                    and isinstance(entry.get("sha256"), str) and _SHA256.fullmatch(entry["sha256"])):
                raise bad(f"files[{name!r}] must be {{\"bytes\": size, \"sha256\": hex digest}}")
        for required in (PLANS, DATASET, *(self.weights(f) for f in self.folds)):
            if required not in self.files:
                raise bad(f"lists no {required}")
        if isinstance(self.inference_parameters, bool) or not isinstance(self.inference_parameters, int):
            raise bad("field 'inference_parameters' must be an integer")


def read_manifest(folder: str | Path) -> Manifest:
    """The manifest of an unpacked package folder; a missing or malformed one is a UserError."""
    path = Path(folder) / MANIFEST
    return Manifest.from_json(read_json(path), str(path))
