"""Export a network's inference path (`forward_infer`) to an ONNX file with dynamic axes.

    export_onnx(network, "model.onnx", in_channels=4, shape_zyx=plans.hr_shape_zyx)

The graph takes `image` (B, C, Z, Y, X) float32 and returns `logits` (B, K, Z, Y, X); batch and
spatial axes are dynamic (spatial sizes must stay multiples of the network's divisor). The
exporter is PyTorch's TorchScript-based one (`dynamo=False`): it records sizes as graph
operations, which the shape-dependent parts of PFSeg need (`export.graph`), and needs no
onnxscript. The graph's metadata (`metadata_props`) holds `export.graph.export_metadata`.

Needs the optional packages `onnx` (PyTorch's exporter imports it) and, to run the graph,
`onnxruntime`: `pip install 'pfseg[onnx]'`.
"""

from __future__ import annotations

import io
import json
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from pfseg_pipeline.errors import UserError
from pfseg_pipeline.export.graph import InferenceGraph, example_input, export_metadata
from pfseg_pipeline.export.rewrites import for_onnx_runtime
from pfseg_pipeline.fileio import write_bytes

log = logging.getLogger(__name__)

# Opset 17: every operator the networks use (InstanceNormalization, Resize, ConvTranspose,
# AveragePool) has had its current form since opset 13 or earlier, and ONNX Runtime >= 1.14
# runs 17; the legacy exporter supports opsets up to 20.
OPSET = 17
METADATA_KEY = "pfseg_export"   # the graph's metadata_props key of `export.graph.export_metadata`
DYNAMIC_AXES = {0: "batch", 2: "z", 3: "y", 4: "x"}


def require_onnx() -> None:
    """Raise a UserError naming the extra to install unless `onnx` is importable."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise UserError("ONNX export needs the optional packages onnx and onnxruntime: "
                        "pip install 'pfseg[onnx]'") from None


def onnx_bytes(network: nn.Module, in_channels: int, shape_zyx: Sequence[int], *,
               rewrite: bool = True, opset: int = OPSET) -> bytes:
    """The serialised ONNX model of `network.forward_infer`, traced at (1, C, *shape_zyx).

    Parameters
    ----------
    network : a built network in eval mode (its weights are copied into the graph).
    in_channels : C, the number of input modalities (`plans.in_channels`).
    shape_zyx : the example spatial shape (z, y, x) in voxels, a multiple of the network's
        divisor; any other valid shape runs too. The planned input shape is a natural choice.
    rewrite : export `export.rewrites.for_onnx_runtime(network)`: transposed convolutions as
        phase convolutions (no column buffer) and instance norms with nested means (PyTorch's
        precision); the same outputs up to float rounding.
    """
    require_onnx()
    import onnx

    if network.training:
        raise ValueError("export a network in eval mode (call .eval() first)")
    graph = InferenceGraph(for_onnx_runtime(network) if rewrite else network).eval()
    image = example_input(in_channels, shape_zyx)
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer warns about every size it turns into a Python value (the input checks);
        # those values only decide errors, never the graph.
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, (image,), buffer, dynamo=False, opset_version=opset,
                          input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": DYNAMIC_AXES, "logits": DYNAMIC_AXES})
    model = onnx.load_from_string(buffer.getvalue())
    meta = model.metadata_props.add()
    meta.key = METADATA_KEY
    meta.value = json.dumps({**export_metadata(network, in_channels), "rewrite": bool(rewrite),
                             "opset": int(opset)})
    onnx.checker.check_model(model)
    return model.SerializeToString()


def export_onnx(network: nn.Module, path: str | Path, in_channels: int, shape_zyx: Sequence[int], *,
                rewrite: bool = True, opset: int = OPSET) -> Path:
    """Write `network.forward_infer` as an ONNX file (atomically); see `onnx_bytes`. Returns the path."""
    data = onnx_bytes(network, in_channels, shape_zyx, rewrite=rewrite, opset=opset)
    path = Path(path)
    write_bytes(path, data)
    log.info("wrote %s (%.1f MB, opset %d)", path, len(data) / 1e6, opset)
    return path

