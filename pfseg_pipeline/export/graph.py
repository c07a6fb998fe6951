"""A network's inference path in a form that a tracer records for every input shape.

`torch.onnx.export` (TorchScript-based) and `torch.jit.trace` run the forward pass once, at an
example shape, and record the tensor operations. Sizes read from a traced tensor are recorded
as operations too, so whatever is computed from `image.shape` follows the input at run time,
with two exceptions in PFSeg's `forward_infer` that `InferenceGraph` handles:

- a tensor built from Python numbers (`torch.tensor([...])`) is recorded as a constant, so the
  centre guidance origin (`networks.inputs.center_origin`) would stay the example shape's
  origin: `traced_center_origin` computes it from the traced shape instead;
- a Python branch on sizes is decided once: `pfseg.resize_to` skips the SGM resize when the
  sizes already agree, which they do at the planned shape. `InferenceGraph` always resizes
  (a trilinear resize to the same size is the identity), so the graph holds the resize
  whatever the example shape.

Everything else (the LR operator, avg-pool or trilinear; the textured guidance search; the
guidance cut; HDC's space-to-depth; ResUNet3D-up's interpolation) traces as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pfseg_pipeline import __version__
from pfseg_pipeline.networks.inputs import center_origin, cut_guidance, guidance_origin, lr_from_hr
from pfseg_pipeline.networks.pfseg import PFSeg


def traced_center_origin(image: Tensor, patch_zyx: Sequence[int]) -> Tensor:
    """Origin (B, 3) int64 of the centred guidance patch, `networks.inputs.center_origin`'s value.

    While tracing, the corner (Z - pz) // 2, ... is computed from the image's shape tensor, so
    an exported graph follows the input's shape; otherwise `center_origin` itself is called.
    """
    if not torch.jit.is_tracing():
        return center_origin(image, patch_zyx)
    spatial = torch._shape_as_tensor(image)[2:].to(torch.long)          # (3,), recorded as Shape
    patch = torch.tensor([int(p) for p in patch_zyx], dtype=torch.long)
    corner = torch.div(spatial - patch, 2, rounding_mode="floor")
    return corner.unsqueeze(0).expand(image.shape[0], 3)


class InferenceGraph(nn.Module):
    """`network.forward_infer` as a module to trace: (B, C, Z, Y, X) -> logits (B, K, Z, Y, X).

    Parameters
    ----------
    network : a built network (`networks.registry.build_network`) in eval mode.

    The output is `network.forward_infer(image)`, computed by the same modules; for PFSeg
    with the SGM the steps are spelt out so that they trace for any shape (module docstring).
    """

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, image: Tensor) -> Tensor:
        net = self.network
        if isinstance(net, PFSeg) and net.sgm is not None:
            return _pfseg_infer(net, image)
        return net.forward_infer(image)


def _pfseg_infer(net: PFSeg, image: Tensor) -> Tensor:
    """`PFSeg.forward_infer` with a traced centre origin and an unconditional SGM resize."""
    net.check_input(image)
    lr_image = lr_from_hr(image, net.lr_scale_zyx, net.lr_operator)
    if net.guidance_location == "center":
        origin = traced_center_origin(image, net.guidance_patch_zyx)
    else:
        origin = guidance_origin(image, net.guidance_patch_zyx, net.guidance_location)
    features = net.encoder(lr_image)
    bottleneck = features[-1]
    guidance = net.sgm(cut_guidance(image, origin, net.guidance_patch_zyx))[-1]
    guidance = F.interpolate(guidance, size=bottleneck.shape[2:], mode="trilinear", align_corners=False)
    return net.seg_decoder(features[:-1], torch.cat([bottleneck, guidance.to(bottleneck.dtype)], dim=1))


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
