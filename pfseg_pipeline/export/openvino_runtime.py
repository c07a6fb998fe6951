"""Run an exported ONNX graph (`export.onnx_export`) through OpenVINO on the CPU.

    runner = OpenVinoRunner("model.onnx")
    logits = runner.forward_infer(image)       # torch (B, C, Z, Y, X) -> torch (B, K, Z, Y, X)

The same graph that ONNX Runtime runs (with `export.rewrites`), compiled by OpenVINO's CPU
plugin (oneDNN kernels): at BraTS size on 2 CPU cores it ran PFSeg's network pass about twice
as fast as eager PyTorch, where ONNX Runtime ran it about 1.5x as fast (bench/export_speed.py).
Settings: float32 throughout (`INFERENCE_PRECISION_HINT`: a CPU with bfloat16 units would
otherwise compute in bfloat16), latency mode, as many threads as CPUs this process may run on.
The graph's spatial axes stay dynamic: a new input shape is compiled on its first call.

Precision: OpenVINO merges chained means into one mean over all voxels, which in float32 is
off by about 1e-3 at 64 x 96 x 80 voxels; `export.rewrites`' nested means are written so that
they do not merge (a sum between two means), and the logits then agree with PyTorch's to about
2e-5 (tests/export/test_openvino.py).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pfseg_pipeline.errors import UserError, first_line
from pfseg_pipeline.export.onnx_export import METADATA_KEY
from pfseg_pipeline.export.onnx_runtime import GraphRunner
from pfseg_pipeline.parallel import available_cores

log = logging.getLogger(__name__)


def _openvino():
    try:
        import onnx  # noqa: F401  (the graph's pfseg metadata is read with it)
        import openvino
    except ImportError:
        raise UserError("running on OpenVINO needs the optional packages openvino and onnx: "
                        "pip install 'pfseg[openvino]'") from None
    return openvino


def _metadata(model: str | Path | bytes) -> str | None:
    """pfseg's metadata entry of an ONNX file or its bytes (OpenVINO does not carry it)."""
    import onnx

    proto = onnx.load_model_from_string(model) if isinstance(model, bytes) else onnx.load(str(model))
    return next((p.value for p in proto.metadata_props if p.key == METADATA_KEY), None)


class OpenVinoRunner(GraphRunner):
    """An OpenVINO compiled model over an exported graph, called like a network's `forward_infer`.

    Parameters
    ----------
    model : path of the .onnx file, or its bytes.
    threads : inference threads; None = `parallel.available_cores()`.

    A file that OpenVINO cannot read, or a graph without pfseg's metadata, is a UserError naming it.
    """

    def __init__(self, model: str | Path | bytes, threads: int | None = None):
        ov = _openvino()
        source = "<bytes>" if isinstance(model, bytes) else str(model)
        core = ov.Core()
        try:
            graph = core.read_model(model if isinstance(model, bytes) else str(model))
            meta = _metadata(model)
        except Exception as exc:   # OpenVINO and onnx raise their own exception types
            raise UserError(f"{source}: not a loadable ONNX model ({first_line(exc)})") from None
        self._read_metadata(meta, source)
        self.threads = int(threads) if threads else available_cores()
        self.compiled = core.compile_model(graph, "CPU", {"INFERENCE_NUM_THREADS": self.threads,
                                                          "INFERENCE_PRECISION_HINT": "f32",
                                                          "PERFORMANCE_HINT": "LATENCY"})
        self.request = self.compiled.create_infer_request()
        self._output = self.compiled.output(0)
        log.info("OpenVINO %s: %s on %d thread(s)", ov.__version__, self.network_name, self.threads)

    def run_array(self, array: np.ndarray) -> np.ndarray:
        # share_outputs=False: the result is a copy, not the request's buffer that the next call overwrites
        return self.request.infer({0: array}, share_inputs=True, share_outputs=False)[self._output]
