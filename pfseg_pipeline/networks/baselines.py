"""The baselines of the paper's results table, built from the same plans as PFSeg.

Patch-based, full resolution (trained on HR patches, predicted by sliding window):
- `unet3d`: 3D U-Net with plain double-conv blocks.
- `resunet3d`: the same U-Net with PFSeg's residual blocks (PFSeg's encoder/decoder without the
  LR -> HR stage).
- `vnet`: V-Net-style: residual stages of 1, 2, 3, 3, ... convs with PReLU, strided-conv
  down-sampling and transposed-conv up-sampling (kernel 2). 3x3x3 convs rather than the original
  5x5x5, which would multiply the weights about 4.6 times for the same widths.

Patch-free (whole volume in one pass):
- `resunet3d_up`: ResUNet3D on the LR input, trained against the LR soft target (area
  down-sampled region masks, returned as output `target`); at inference its LR probabilities are
  up-sampled trilinearly to HR and returned as logits, so sigmoid + 0.5 thresholds them.
- `hdc`: holistic decomposition: space-to-depth of the HR input by the LR scale into channels,
  ResUNet3D at LR with K * prod(scale) outputs, depth-to-space back to HR.

Widths come from `plans.network.widths`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pfseg_pipeline.networks.base import SegmentationNetwork
from pfseg_pipeline.networks.blocks import norm3d
from pfseg_pipeline.networks.deep_supervision import DeepSupervisionHeads, supervised_levels
from pfseg_pipeline.networks.inputs import lr_from_hr
from pfseg_pipeline.networks.unet import UNet

# Probabilities are clamped to [EPS, 1 - EPS] before the logit, so the logits stay finite.
PROBABILITY_EPS = 1e-6


def _options(deep_supervision: bool) -> dict:
    """The builder options a checkpoint records: `deep_supervision` only when on, so a network
    without it has the options (and checkpoints) it had before the option existed."""
    return {"deep_supervision": True} if deep_supervision else {}


def _outputs(logits: Tensor, deep_logits: list[Tensor]) -> dict:
    """forward_train's outputs: `seg_logits`, and `seg_logits_ds` (finest first) when supervised."""
    return {"seg_logits": logits, "seg_logits_ds": deep_logits} if deep_logits else {"seg_logits": logits}


class PatchUNet(SegmentationNetwork):
    """A full-resolution U-Net (double-conv or residual blocks) for patch-based training."""

    def __init__(self, in_channels: int, out_channels: int, widths: Sequence[int], norm: str = "instance",
                 block: str = "residual", deep_supervision: bool = False):
        super().__init__([2 ** (len(widths) - 1)] * 3, _options(deep_supervision))
        self.unet = UNet(in_channels, out_channels, widths, norm, block, deep_supervision)

    def output_head(self) -> nn.Conv3d:
        return self.unet.head

    def forward_train(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        self.check_input(batch["image"])
        return _outputs(*self.unet.forward_train(batch["image"]))

    def forward_infer(self, image: Tensor) -> Tensor:
        self.check_input(image)
        return self.unet(image)


# ---- V-Net ----------------------------------------------------------------------------------
class _ConvNormPReLU(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1,
                 norm: str = "instance", transposed: bool = False):
        conv_cls = nn.ConvTranspose3d if transposed else nn.Conv3d
        padding = kernel // 2 if stride == 1 else 0
        super().__init__(conv_cls(in_channels, out_channels, kernel, stride=stride, padding=padding),
                         norm3d(norm, out_channels), nn.PReLU(out_channels))


class VNetStage(nn.Module):
    """`n_convs` conv3-norm-PReLU layers whose output is added to the stage's input."""

    def __init__(self, channels: int, n_convs: int, norm: str = "instance"):
        super().__init__()
        layers = [_ConvNormPReLU(channels, channels, 3, norm=norm) for _ in range(n_convs)]
        self.convs = nn.Sequential(*layers)
        self.activation = nn.PReLU(channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.activation(self.convs(x) + x)


def _vnet_convs(level: int) -> int:
    return min(level + 1, 3)    # V-Net: 1, 2, 3, 3, ... convolutions per stage


class VNet(SegmentationNetwork):
    def __init__(self, in_channels: int, out_channels: int, widths: Sequence[int], norm: str = "instance",
                 deep_supervision: bool = False):
        super().__init__([2 ** (len(widths) - 1)] * 3, _options(deep_supervision))
        widths = list(widths)
        self.input = _ConvNormPReLU(in_channels, widths[0], 3, norm=norm)
        self.down_stages = nn.ModuleList([VNetStage(widths[0], _vnet_convs(0), norm)])
        self.downs = nn.ModuleList()
        for level in range(1, len(widths)):
            self.downs.append(_ConvNormPReLU(widths[level - 1], widths[level], 2, stride=2, norm=norm))
            self.down_stages.append(VNetStage(widths[level], _vnet_convs(level), norm))
        self.ups, self.up_stages = nn.ModuleList(), nn.ModuleList()
        current = widths[-1]
        for level in reversed(range(len(widths) - 1)):
            self.ups.append(_ConvNormPReLU(current, widths[level], 2, stride=2, norm=norm, transposed=True))
            current = 2 * widths[level]           # up-sampled features + skip
            self.up_stages.append(VNetStage(current, _vnet_convs(level), norm))
        self.head = nn.Conv3d(current, out_channels, 1)
        self.ds_heads = None
        if deep_supervision:   # heads on the up-stages (2 * width channels at each level)
            self.ds_heads = DeepSupervisionHeads([2 * w for w in widths],
                                                 supervised_levels(len(widths) - 1, False), out_channels)

    def output_head(self) -> nn.Conv3d:
        return self.head

    def forward_train(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        self.check_input(batch["image"])
        stages = self._stages(batch["image"])
        return _outputs(self.head(stages[-1]), self.ds_heads(stages) if self.ds_heads is not None else [])

    def forward_infer(self, image: Tensor) -> Tensor:
        self.check_input(image)
        return self.head(self._stages(image, keep=False)[-1])

    def _stages(self, image: Tensor, keep: bool = True) -> list[Tensor]:
        """The output of every up-stage, coarsest first (`keep=False`: the last only)."""
        x = self.down_stages[0](self.input(image))
        skips = [x]
        for down, stage in zip(self.downs, self.down_stages[1:]):
            x = stage(down(x))
            skips.append(x)
        skips.pop()                               # the bottleneck is not a skip
        out = []
        for up, stage in zip(self.ups, self.up_stages):
            x = stage(torch.cat([up(x), skips.pop()], dim=1))
            out = [*out, x] if keep else [x]
        return out


# ---- patch-free baselines --------------------------------------------------------------------
def probabilities_to_logits(probabilities: Tensor) -> Tensor:
    """logit(clamp(p, EPS, 1 - EPS)): sigmoid of the result gives p back (up to the clamp)."""
    p = probabilities.float().clamp(PROBABILITY_EPS, 1 - PROBABILITY_EPS)
    return torch.log(p) - torch.log1p(-p)


class ResUNet3DUp(SegmentationNetwork):
    """ResUNet3D on the LR input; its LR probabilities are interpolated to HR at inference."""

    def __init__(self, in_channels: int, out_channels: int, widths: Sequence[int],
                 lr_scale_zyx: Sequence[int], lr_operator: str, norm: str = "instance",
                 deep_supervision: bool = False):
        super().__init__([s * 2 ** (len(widths) - 1) for s in lr_scale_zyx], _options(deep_supervision))
        self.lr_scale_zyx = tuple(int(s) for s in lr_scale_zyx)
        self.lr_operator = lr_operator
        self.unet = UNet(in_channels, out_channels, widths, norm, "residual", deep_supervision)

    def output_head(self) -> nn.Conv3d:
        return self.unet.head

    def forward_train(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """`seg_logits` (B, K, LR) and `target` (B, K, LR): the area-down-sampled soft target (deep
        supervision: coarser logits against it, pooled further)."""
        image = batch["image"]
        self.check_input(image)
        lr_image = batch.get("lr_image")
        if lr_image is None:
            lr_image = lr_from_hr(image, self.lr_scale_zyx, self.lr_operator)
        outputs = _outputs(*self.unet.forward_train(lr_image))
        if "target" in batch:
            outputs["target"] = lr_from_hr(batch["target"].float(), self.lr_scale_zyx, "avgpool")
        return outputs

    def forward_infer(self, image: Tensor) -> Tensor:
        self.check_input(image)
        lr_logits = self.unet(lr_from_hr(image, self.lr_scale_zyx, self.lr_operator))
        if self.lr_scale_zyx == (1, 1, 1):
            return lr_logits
        probabilities = F.interpolate(torch.sigmoid(lr_logits.float()), size=tuple(image.shape[2:]),
                                      mode="trilinear", align_corners=False)
        return probabilities_to_logits(probabilities)


def space_to_depth(x: Tensor, scale_zyx: Sequence[int]) -> Tensor:
    """(B, C, Z, Y, X) -> (B, C * sz * sy * sx, Z / sz, Y / sy, X / sx); channel c, offset (i, j, k)
    goes to channel ((c * sz + i) * sy + j) * sx + k."""
    b, c, z, y, x_ = x.shape
    sz, sy, sx = (int(s) for s in scale_zyx)
    x = x.reshape(b, c, z // sz, sz, y // sy, sy, x_ // sx, sx)
    x = x.permute(0, 1, 3, 5, 7, 2, 4, 6)
    return x.reshape(b, c * sz * sy * sx, z // sz, y // sy, x_ // sx)


def depth_to_space(x: Tensor, scale_zyx: Sequence[int]) -> Tensor:
    """The inverse of `space_to_depth`."""
    b, cs, z, y, x_ = x.shape
    sz, sy, sx = (int(s) for s in scale_zyx)
    c = cs // (sz * sy * sx)
    x = x.reshape(b, c, sz, sy, sx, z, y, x_)
    x = x.permute(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(b, c, z * sz, y * sy, x_ * sx)


class HDC(SegmentationNetwork):
    """Holistic decomposition: ResUNet3D at LR on the space-to-depth of the HR input."""

    def __init__(self, in_channels: int, out_channels: int, widths: Sequence[int],
                 lr_scale_zyx: Sequence[int], norm: str = "instance", deep_supervision: bool = False):
        super().__init__([s * 2 ** (len(widths) - 1) for s in lr_scale_zyx], _options(deep_supervision))
        self.lr_scale_zyx = tuple(int(s) for s in lr_scale_zyx)
        factor = self.lr_scale_zyx[0] * self.lr_scale_zyx[1] * self.lr_scale_zyx[2]
        self.unet = UNet(in_channels * factor, out_channels * factor, widths, norm, "residual",
                         deep_supervision)

    def output_head(self) -> nn.Conv3d:
        return self.unet.head   # channel ((k * sz + i) * sy + j) * sx + l: region k, region-major

    def forward_train(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Deep supervision: each coarser head's output goes back through depth-to-space too."""
        self.check_input(batch["image"])
        logits, deep = self.unet.forward_train(space_to_depth(batch["image"], self.lr_scale_zyx))
        return _outputs(depth_to_space(logits, self.lr_scale_zyx),
                        [depth_to_space(x, self.lr_scale_zyx) for x in deep])

    def forward_infer(self, image: Tensor) -> Tensor:
        self.check_input(image)
        return depth_to_space(self.unet(space_to_depth(image, self.lr_scale_zyx)), self.lr_scale_zyx)


# ---- builders (plans -> module) ----------------------------------------------------------------
# `deep_supervision`: extra training-only heads on the coarser decoder stages (deep_supervision.py)
def build_unet3d(plans, deep_supervision: bool = False) -> PatchUNet:
    net = plans.network
    return PatchUNet(plans.in_channels, plans.out_channels, list(net.widths), net.norm, "double_conv",
                     deep_supervision)


def build_resunet3d(plans, deep_supervision: bool = False) -> PatchUNet:
    net = plans.network
    return PatchUNet(plans.in_channels, plans.out_channels, list(net.widths), net.norm, "residual",
                     deep_supervision)


def build_vnet(plans, deep_supervision: bool = False) -> VNet:
    return VNet(plans.in_channels, plans.out_channels, list(plans.network.widths), plans.network.norm,
                deep_supervision)


def build_resunet3d_up(plans, deep_supervision: bool = False) -> ResUNet3DUp:
    net = plans.network
    return ResUNet3DUp(plans.in_channels, plans.out_channels, list(net.widths), list(plans.lr_scale_zyx),
                       plans.lr_operator, net.norm, deep_supervision)


def build_hdc(plans, deep_supervision: bool = False) -> HDC:
    net = plans.network
    return HDC(plans.in_channels, plans.out_channels, list(net.widths), list(plans.lr_scale_zyx), net.norm,
               deep_supervision)
