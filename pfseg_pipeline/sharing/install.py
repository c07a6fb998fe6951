"""A model package -> `results/NAME/NETWORK[__VARIANT]` of a workspace (`pfseg_install_model`).

The package is checked and unpacked (`model_package.archive`) beside its destination and
renamed into place, so `pfseg_predict -d NAME --network NETWORK [--variant V]` finds it as it
finds a network trained there. An existing folder is replaced only with `force` (the old one
is moved aside first and removed once the new one is in place).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pfseg_pipeline.errors import UserError
from pfseg_pipeline.model_package.archive import DEFAULT_LIMITS, Limits, check_package, extract_package
from pfseg_pipeline.model_package.manifest import Manifest
from pfseg_pipeline.paths import Workspace

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InstalledModel:
    """Where `install_model` put a package, and what it holds."""

    path: Path
    dataset: str
    manifest: Manifest


def install_model(package: str | Path, workspace: Workspace, name: str | None = None, force: bool = False,
                  limits: Limits = DEFAULT_LIMITS) -> InstalledModel:
    """Check and unpack `package` into `workspace.network_dir(name, network, variant)`.

    name : the dataset name to install under; None = the one the model was trained on.
    force : replace a folder that is already there.
    """
    package = Path(package)
    manifest, _ = check_package(package, limits)
    dataset = name or manifest.dataset
    if not dataset or "/" in dataset or dataset in (".", ".."):
        raise UserError(f"-d {dataset!r}: not a valid dataset name")
    target = workspace.network_dir(dataset, manifest.network, manifest.variant)
    if target.exists() and not force:
        raise UserError(f"{target}: already exists (--force replaces it)")
    created = next((p for p in reversed(target.parents) if not p.exists()), None)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".pfseg-install-", dir=target.parent) as tmp:
            staged = Path(tmp) / "model"
            extract_package(package, staged, limits)
            if target.exists():
                os.replace(target, Path(tmp) / "previous")    # removed with the temporary folder
            os.replace(staged, target)
    except BaseException:
        if created is not None:        # folders made for this package only: a refusal leaves none
            shutil.rmtree(created, ignore_errors=True)
        raise
    log.info("installed %s -> %s (%s, fold(s) %s, checkpoint_%s, %s)", package, target, manifest.network,
             ", ".join(manifest.folds), manifest.checkpoint, manifest.format)
    return InstalledModel(target, dataset, manifest)
