"""Building blocks shared by PFSeg and the baselines (tensors are (B, C, Z, Y, X)).

- `ResidualBlock`: conv3 -> norm -> LeakyReLU(0.01) -> conv3 -> norm, plus a 1x1 conv + norm
  shortcut, then LeakyReLU (the PFSeg block).
- `DoubleConvBlock`: (conv3 -> norm -> LeakyReLU) twice (the plain 3D U-Net block).
- `UpStage`: transposed conv + LeakyReLU. On an axis with scale 2 it has the paper's kernel 4 /
  stride 2 / pad 1; for another integer scale s it has kernel = stride = s; on an axis with
  scale 1 nothing happens (kernel 1, stride 1). `make_up_stage` returns None when every axis has
  scale 1 (no stage at all).

Normalisation: "instance" is InstanceNorm3d without affine parameters, as in the paper (the
parameter counts of the paper depend on it); "instance_affine" and "batch" are offered for
experiments.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

NEGATIVE_SLOPE = 0.01
NORMS = ("instance", "instance_affine", "batch")


def norm3d(kind: str, channels: int) -> nn.Module:
    """The normalisation layer named by `plans.network.norm`."""
    if kind == "instance":
        return nn.InstanceNorm3d(channels, affine=False)
    if kind == "instance_affine":
        return nn.InstanceNorm3d(channels, affine=True)
    if kind == "batch":
        return nn.BatchNorm3d(channels)
    raise ValueError(f"network.norm must be one of {NORMS}, got {kind!r}")


class ResidualBlock(nn.Module):
    """conv3-norm-LReLU-conv3-norm + (1x1 conv + norm) shortcut, then LReLU. Keeps the size."""

    def __init__(self, in_channels: int, out_channels: int, norm: str = "instance"):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv3d(in_channels, out_channels, 3, padding=1),
            norm3d(norm, out_channels),
            nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True),
            nn.Conv3d(out_channels, out_channels, 3, padding=1),
            norm3d(norm, out_channels),
        )
        # The paper's block projects the shortcut even when the widths agree.
        self.shortcut = nn.Sequential(nn.Conv3d(in_channels, out_channels, 1), norm3d(norm, out_channels))
        self.activation = nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.activation(self.body(x) + self.shortcut(x))


class DoubleConvBlock(nn.Module):
    """(conv3-norm-LReLU) x 2, the block of the plain 3D U-Net. Keeps the size."""

    def __init__(self, in_channels: int, out_channels: int, norm: str = "instance"):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv3d(in_channels, out_channels, 3, padding=1),
            norm3d(norm, out_channels),
            nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True),
            nn.Conv3d(out_channels, out_channels, 3, padding=1),
            norm3d(norm, out_channels),
            nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


BLOCKS = {"residual": ResidualBlock, "double_conv": DoubleConvBlock}


def up_stage_geometry(scale_zyx: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(kernel, stride, padding) per axis of the transposed conv that up-samples by `scale_zyx`.

    Scale 2: kernel 4, stride 2, pad 1 (the paper's stage); other s: kernel = stride = s, pad 0
    (s = 1 leaves the axis alone). Each gives an output exactly s times the input on its axis.
    """
    kernel, stride, padding = [], [], []
    for s in scale_zyx:
        s = int(s)
        if s < 1:
            raise ValueError(f"up-sampling scale must be a positive integer per axis, got {tuple(scale_zyx)}")
        if s == 2:
            kernel.append(4)
            stride.append(2)
            padding.append(1)
        else:
            kernel.append(s)
            stride.append(s)
            padding.append(0)
    return tuple(kernel), tuple(stride), tuple(padding)


class UpStage(nn.Module):
    """Transposed conv up-sampling by an integer scale per axis, then LeakyReLU(0.01)."""

    def __init__(self, in_channels: int, out_channels: int, scale_zyx: Sequence[int] = (2, 2, 2)):
        super().__init__()
        kernel, stride, padding = up_stage_geometry(scale_zyx)
        self.scale_zyx = tuple(int(s) for s in scale_zyx)
        self.conv = nn.ConvTranspose3d(in_channels, out_channels, kernel, stride=stride, padding=padding)
        self.activation = nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.activation(self.conv(x))


def make_up_stage(in_channels: int, out_channels: int, scale_zyx: Sequence[int]) -> UpStage | None:
    """An `UpStage` for `scale_zyx`, or None when every axis has scale 1 (no stage)."""
    if all(int(s) == 1 for s in scale_zyx):
        return None
    return UpStage(in_channels, out_channels, scale_zyx)
