"""Export a network's inference path (`forward_infer`) to TorchScript, and load it back.

    export_torchscript(network, "model.ts", in_channels=4, shape_zyx=plans.hr_shape_zyx)
    module, metadata = load_torchscript("model.ts")
    logits = module(image)            # (B, C, Z, Y, X) -> (B, K, Z, Y, X), any valid shape

The module is traced (`torch.jit.trace` records sizes as operations, so spatial and batch sizes
stay dynamic; `export.graph` covers the parts that would not) and frozen (weights inlined as
constants, the training-only SR decoder dropped). It is saved in TorchScript's zip format with
`export.graph.export_metadata` as the extra file `pfseg.json`; `torch.jit.load` reads it with
TorchScript's own restricted loader, which rebuilds only tensors and TorchScript types.

TorchScript is deprecated as of torch 2.13 (its successor is `torch.export`); it still works,
and MONAI bundles ship it, so its deprecation warnings are silenced here.
"""

from __future__ import annotations

import io
import json
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pfseg_pipeline.errors import UserError, first_line
from pfseg_pipeline.export.graph import InferenceGraph, example_input, export_metadata
from pfseg_pipeline.fileio import write_bytes

log = logging.getLogger(__name__)

METADATA_FILE = "pfseg.json"


def trace_inference(network: nn.Module, in_channels: int, shape_zyx: Sequence[int]) -> torch.jit.ScriptModule:
    """`network.forward_infer` traced at (1, C, *shape_zyx) and frozen, in eval mode.

    Parameters
    ----------
    network : a built network in eval mode.
    in_channels : C, the number of input modalities (`plans.in_channels`).
    shape_zyx : the example spatial shape (z, y, x), a multiple of the network's divisor.
    """
    if network.training:
        raise ValueError("export a network in eval mode (call .eval() first)")
    graph = InferenceGraph(network).eval()
    image = example_input(in_channels, shape_zyx)
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer warns about each size turned into a Python value (the input checks only).
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(graph, (image,), check_trace=False)
        return torch.jit.freeze(traced)


def torchscript_bytes(network: nn.Module, in_channels: int, shape_zyx: Sequence[int]) -> bytes:
    """The traced, frozen `network.forward_infer` with its metadata, as TorchScript's zip format."""
    module = trace_inference(network, in_channels, shape_zyx)
    metadata = json.dumps(export_metadata(network, in_channels))
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(module, buffer, _extra_files={METADATA_FILE: metadata})
    return buffer.getvalue()


def export_torchscript(network: nn.Module, path: str | Path, in_channels: int,
                       shape_zyx: Sequence[int]) -> Path:
    """Write the traced, frozen `network.forward_infer` (atomically) with its metadata. Returns the path."""
    path = Path(path)
    write_bytes(path, torchscript_bytes(network, in_channels, shape_zyx))
    log.info("wrote %s (%.1f MB)", path, path.stat().st_size / 1e6)
    return path


def load_torchscript(path: str | Path, device: str | torch.device = "cpu",
                     optimize: bool = False) -> tuple[torch.jit.ScriptModule, dict[str, Any]]:
    """The module and metadata of an `export_torchscript` file.

    `optimize` applies `torch.jit.optimize_for_inference` (fusions for the machine it runs on;
    off by default: it made PFSeg no faster at BraTS size, see bench/export_speed.py, and it is
    deprecated as of torch 2.13). A file that is not such an export is a UserError naming it.
    """
    path = Path(path)
    extra = {METADATA_FILE: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    except (RuntimeError, ValueError, OSError) as exc:
        raise UserError(f"{path}: not a loadable TorchScript file ({first_line(exc)})") from None
    if not extra[METADATA_FILE]:
        raise UserError(f"{path}: a TorchScript file without {METADATA_FILE} (not a pfseg export)")
    metadata = json.loads(extra[METADATA_FILE])
    module.eval()
    if optimize:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.optimize_for_inference(module)
    return module, metadata
