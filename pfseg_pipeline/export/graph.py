"""A network's inference path in a form that a tracer records for every input shape.

`torch.onnx.export` (TorchScript-based) and `torch.jit.trace` run the forward pass once, at an
example shape, and record the tensor operations. Sizes read from a traced tensor are recorded
as operations too, so whatever is computed from `image.shape` follows the input at run time.
The two places in PFSeg's `forward_infer` where that would not hold trace differently
themselves: the centre guidance origin (`networks.inputs.center_origin`) is computed from the
traced shape, and the SGM resize (`networks.pfseg.resize_to`) is always recorded. Everything
else (the LR operator, avg-pool or trilinear; the textured guidance search; the guidance cut;
HDC's space-to-depth; ResUNet3D-up's interpolation) traces as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from pfseg_pipeline import __version__


class InferenceGraph(nn.Module):
    """`network.forward_infer` as a module to trace: (B, C, Z, Y, X) -> logits (B, K, Z, Y, X).

    Parameters
    ----------
    network : a built network (`networks.registry.build_network`) in eval mode.

    The output is `network.forward_infer(image)`.
    """

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, image: Tensor) -> Tensor:
        return self.network.forward_infer(image)


def export_metadata(network: nn.Module, in_channels: int) -> dict[str, Any]:
    """What a runner of the exported graph needs to know, stored beside the graph.

    Keys: `network` (registry name: its spec says how to drive it, whole volume or sliding
    window), `in_channels`, `divisor_zyx` (inputs are multiples of it per axis),
    `pfseg_version`, `torch_version`.
    """
    return {
        "network": str(getattr(network, "network_name", type(network).__name__)),
        "in_channels": int(in_channels),
        "divisor_zyx": [int(d) for d in getattr(network, "divisor_zyx", (1, 1, 1))],
        "pfseg_version": __version__,
        "torch_version": torch.__version__,
    }


def example_input(in_channels: int, shape_zyx: Sequence[int], seed: int = 0) -> Tensor:
    """A (1, C, Z, Y, X) float32 volume of uniform noise to trace with (its values do not enter
    the graph, only its shape and dtype do)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(1, int(in_channels), *(int(n) for n in shape_zyx), generator=generator)
