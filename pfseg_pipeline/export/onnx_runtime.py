"""Run an exported ONNX graph (`export.onnx_export`) through ONNX Runtime on the CPU.

    runner = OnnxRunner("model.onnx")
    logits = runner.forward_infer(image)       # torch (B, C, Z, Y, X) -> torch (B, K, Z, Y, X)

`OnnxRunner.forward_infer` returns what the network's `forward_infer` returns (float32 logits,
up to float rounding), and carries `network_name` and `divisor_zyx` from the graph's metadata,
so the whole-volume and sliding-window code can drive it like the network it came from.

Session settings, each the fastest measured for these graphs on the CPU (bench/export_speed.py):
all graph optimisations; as many intra-op threads as CPUs this process may run on (its
affinity mask, not the machine's count, which over-subscribes a container or a `taskset`);
sequential execution, since the graph is one chain and parallel branches would only compete
for the same threads.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pfseg_pipeline.errors import UserError, first_line
from pfseg_pipeline.export.onnx_export import METADATA_KEY
from pfseg_pipeline.parallel import available_cores

log = logging.getLogger(__name__)

OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise UserError("running an ONNX model needs the optional package onnxruntime: "
                        "pip install 'pfseg[onnx]'") from None
    return onnxruntime


def session_options(threads: int | None = None, optimization: str = "all"):
    """`onnxruntime.SessionOptions` for inference on the CPU (see the module docstring).

    threads : intra-op threads; None = `parallel.available_cores()`.
    optimization : graph optimisation level, one of OPTIMIZATION_LEVELS.
    """
    ort = _onnxruntime()
    if optimization not in OPTIMIZATION_LEVELS:
        raise ValueError(f"optimization must be one of {OPTIMIZATION_LEVELS}, got {optimization!r}")
    levels = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    options = ort.SessionOptions()
    options.graph_optimization_level = levels[optimization]
    options.intra_op_num_threads = int(threads) if threads else available_cores()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return options


class GraphRunner:
    """What every runner of a pfseg ONNX export shares: the graph's metadata (`network_name`,
    `in_channels`, `divisor_zyx`), the input check and `forward_infer`; a subclass runs the
    graph (`run_array`)."""

    metadata: dict[str, Any]

    def _read_metadata(self, meta: str | None, source: str) -> None:
        if meta is None:
            raise UserError(f"{source}: an ONNX model without pfseg metadata (not a pfseg export)")
        self.metadata = json.loads(meta)
        self.network_name: str = self.metadata["network"]
        self.in_channels = int(self.metadata["in_channels"])
        self.divisor_zyx = tuple(int(d) for d in self.metadata["divisor_zyx"])

    def check_input(self, image: Tensor | np.ndarray) -> None:
        """Raise a ValueError unless `image` is (B, C, Z, Y, X) with valid C and spatial sizes."""
        shape = tuple(image.shape)
        if len(shape) != 5 or shape[1] != self.in_channels:
            raise ValueError(f"expected a batch (B, {self.in_channels}, Z, Y, X), got shape {shape}")
        if any(n % d for n, d in zip(shape[2:], self.divisor_zyx)):
            raise ValueError(f"input shape {shape[2:]} is not a multiple of the network's divisor "
                             f"{self.divisor_zyx} per axis (pad it first)")

    def run_array(self, array: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def run(self, image: np.ndarray) -> np.ndarray:
        """Logits (B, K, Z, Y, X) float32 of a float32 array (B, C, Z, Y, X)."""
        self.check_input(image)
        return self.run_array(np.ascontiguousarray(image, dtype=np.float32))

    def forward_infer(self, image: Tensor) -> Tensor:
        """Logits (B, K, Z, Y, X) float32 of a CPU tensor (B, C, Z, Y, X), as the network's
        `forward_infer`; the result is on the CPU."""
        return torch.from_numpy(self.run(image.detach().cpu().numpy()))

    __call__ = forward_infer


class OnnxRunner(GraphRunner):
    """An ONNX Runtime session over an exported graph, called like a network's `forward_infer`.

    Parameters
    ----------
    model : path of the .onnx file, or its bytes.
    threads, optimization : see `session_options`.

    A file that ONNX Runtime cannot load, or a graph without pfseg's metadata, is a UserError
    naming it.
    """

    def __init__(self, model: str | Path | bytes, threads: int | None = None, optimization: str = "all"):
        ort = _onnxruntime()
        source = "<bytes>" if isinstance(model, bytes) else str(model)
        options = session_options(threads, optimization)
        try:
            self.session = ort.InferenceSession(model if isinstance(model, bytes) else str(model), options,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:   # onnxruntime raises its own exception types, not exported
            raise UserError(f"{source}: not a loadable ONNX model ({first_line(exc)})") from None
        self._read_metadata(self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY), source)
        self.threads = options.intra_op_num_threads
        self._input = self.session.get_inputs()[0].name
        log.info("ONNX Runtime %s: %s on %d thread(s)", ort.__version__, self.network_name, self.threads)

    def run_array(self, array: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self._input: array})[0]
