"""Where the networks run: eager PyTorch, ONNX Runtime or OpenVINO (`pfseg_predict --backend`).

    models = to_backend(models, plans, "pfseg", "onnxruntime")    # each fold exported, in memory

`OnnxModule` puts a runner of the exported graph (`export.onnx_runtime.OnnxRunner`, or
`export.openvino_runtime.OpenVinoRunner`) in the place of a network: it has `forward_infer`,
`divisor_zyx` and `network_name`, so the predictor's whole volume and sliding window drive it
as they drive the network it was exported from. A network is exported at its spec's training
input shape (`NetworkSpec.input_shape`: the HR shape, or the patch of a patch-based network);
the graph's spatial axes are dynamic, so any valid shape runs. Both exported backends run on
the CPU here (ONNX Runtime's CPU provider, OpenVINO's CPU plugin).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from pfseg_pipeline.errors import UserError
from pfseg_pipeline.networks.registry import network_spec
from pfseg_pipeline.plans import Plans

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnxruntime", "openvino")
GRAPH_BACKENDS = ("onnxruntime", "openvino")     # run the ONNX export, on the CPU


class OnnxModule(nn.Module):
    """A runner of the exported graph called like a network's `forward_infer` (CPU tensors in
    and out).

    Parameters
    ----------
    runner : an `export.onnx_runtime.GraphRunner` (ONNX Runtime or OpenVINO) over a pfseg export.
    """

    def __init__(self, runner):
        super().__init__()
        self.runner = runner
        self.network_name = runner.network_name
        self.divisor_zyx = tuple(runner.divisor_zyx)

    def forward_infer(self, image: Tensor) -> Tensor:
        """Logits (B, K, Z, Y, X) float32 of a CPU image (B, C, Z, Y, X)."""
        if image.device.type != "cpu":
            raise ValueError("the exported graph runs on the CPU: pass a CPU tensor")
        return self.runner.forward_infer(image)

    def forward(self, image: Tensor) -> Tensor:
        return self.forward_infer(image)


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise UserError(f"--backend {backend!r}: choose from {', '.join(BACKENDS)}")
    return backend


def backend_device(backend: str | None, device: str | torch.device) -> str | torch.device:
    """The device a backend runs on: ONNX Runtime and OpenVINO on the CPU ('auto' becomes 'cpu';
    CUDA is a UserError), eager PyTorch wherever asked."""
    if backend not in GRAPH_BACKENDS:
        return device
    name = str(device).strip().lower()
    if name not in ("auto", "cpu"):
        raise UserError(f"--backend {backend} runs on the CPU here; "
                        f"use --device cpu (or auto), or --backend torch for --device {device}")
    return "cpu"


def onnx_module(model: bytes, in_channels: int, network: str, source: str, threads: int | None = None,
                backend: str = "onnxruntime") -> OnnxModule:
    """An `OnnxModule` over the serialised graph `model` on `backend` (one of GRAPH_BACKENDS); a
    graph of another network or input is a UserError naming `source`."""
    if backend == "openvino":
        from pfseg_pipeline.export.openvino_runtime import OpenVinoRunner as Runner
    else:
        from pfseg_pipeline.export.onnx_runtime import OnnxRunner as Runner

    runner = Runner(model, threads=threads)
    if runner.network_name != network or runner.in_channels != in_channels:
        raise UserError(f"{source}: the ONNX graph is {runner.network_name!r} with {runner.in_channels} "
                        f"input channel(s); expected {network!r} with {in_channels}")
    return OnnxModule(runner)


def to_backend(models: Sequence[nn.Module], plans: Plans, network: str, backend: str,
               threads: int | None = None) -> list[nn.Module]:
    """`models` (eager networks in eval mode) on `backend`: themselves for "torch"; for
    "onnxruntime" and "openvino" each exported to ONNX in memory (`export.onnx_export.onnx_bytes`,
    with its rewrites) and wrapped in an `OnnxModule`."""
    check_backend(backend)
    if backend == "torch":
        return list(models)
    from pfseg_pipeline.export.onnx_export import onnx_bytes

    shape = network_spec(network).input_shape(plans)
    out = []
    for i, model in enumerate(models):
        t0 = time.perf_counter()
        data = onnx_bytes(model.to("cpu").eval(), plans.in_channels, shape)
        out.append(onnx_module(data, plans.in_channels, network, f"fold {i}", threads, backend))
        log.info("model %d exported to ONNX (%.1f MB) in %.1f s", i + 1, len(data) / 1e6,
                 time.perf_counter() - t0)
    return out
