"""The U-shaped parts shared by PFSeg and the baselines: an encoder and a skip decoder.

`Encoder(in_channels, widths)`: one block per level, max-pool 2 between levels, so it pools
len(widths) - 1 times; returns the features of every level, the last being the bottleneck.
`SkipDecoder(widths, bottleneck_channels)`: from the bottleneck back to level 0, each step an
up-stage (transposed conv k4 s2 p1 + LeakyReLU) to the width of the level below, concatenation
of that level's skip, and a block (2w -> w). Its output has widths[0] channels at the size of
the encoder's input.
`UNet`: encoder + skip decoder + 1x1 head (the full-resolution U-Net / ResUNet).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from pfseg_pipeline.networks.blocks import BLOCKS, UpStage
from pfseg_pipeline.networks.deep_supervision import DeepSupervisionHeads, supervised_levels


class Encoder(nn.Module):
    """Blocks of `widths`, max-pool 2 between levels. forward -> [level 0, ..., bottleneck]."""

    def __init__(self, in_channels: int, widths: Sequence[int], norm: str = "instance",
                 block: str = "residual"):
        super().__init__()
        block_cls = BLOCKS[block]
        channels = [in_channels, *widths]
        self.blocks = nn.ModuleList(block_cls(channels[i], channels[i + 1], norm) for i in range(len(widths)))
        self.pool = nn.MaxPool3d(2)
        self.widths = list(widths)

    @property
    def n_pool(self) -> int:
        return len(self.widths) - 1

    def forward(self, x: Tensor) -> list[Tensor]:
        features = []
        for level, block in enumerate(self.blocks):
            if level:
                x = self.pool(x)
            x = block(x)
            features.append(x)
        return features


class SkipDecoder(nn.Module):
    """Up-stages with skip connections from the bottleneck back to level 0 (widths[0] channels)."""

    def __init__(self, widths: Sequence[int], bottleneck_channels: int, norm: str = "instance",
                 block: str = "residual"):
        super().__init__()
        block_cls = BLOCKS[block]
        ups, blocks = [], []
        current = bottleneck_channels
        for width in reversed(list(widths)[:-1]):
            ups.append(UpStage(current, width))
            blocks.append(block_cls(2 * width, width, norm))
            current = width
        self.ups = nn.ModuleList(ups)
        self.blocks = nn.ModuleList(blocks)
        self.out_channels = current

    def forward(self, skips: Sequence[Tensor], bottleneck: Tensor) -> Tensor:
        """`skips`: encoder features of levels 0..n-1 (the bottleneck excluded)."""
        return self.stages(skips, bottleneck, keep=False)[-1]

    def stages(self, skips: Sequence[Tensor], bottleneck: Tensor, keep: bool = True) -> list[Tensor]:
        """The output of every stage, coarsest (level n-1) first; the last is `forward`'s.
        `keep=False` holds only the current one (inference: the coarser ones are freed)."""
        x, out = bottleneck, []
        for up, block, skip in zip(self.ups, self.blocks, reversed(list(skips))):
            x = block(torch.cat([up(x), skip], dim=1))
            out = [*out, x] if keep else [x]
        return out


class UNet(nn.Module):
    """Encoder + skip decoder + 1x1 head: logits at the input's size (a multiple of 2**n_pool).

    `deep_supervision` adds 1x1 heads on the coarser decoder stages (`ds_heads`), which only
    `forward_train` runs (networks/deep_supervision.py).
    """

    def __init__(self, in_channels: int, out_channels: int, widths: Sequence[int], norm: str = "instance",
                 block: str = "residual", deep_supervision: bool = False):
        super().__init__()
        self.encoder = Encoder(in_channels, widths, norm, block)
        self.decoder = SkipDecoder(widths, widths[-1], norm, block)
        self.head = nn.Conv3d(self.decoder.out_channels, out_channels, 1)
        self.ds_heads = None
        if deep_supervision:
            levels = supervised_levels(len(widths) - 1, final_finer_than_level0=False)
            self.ds_heads = DeepSupervisionHeads(widths, levels, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        features = self.encoder(x)
        return self.head(self.decoder(features[:-1], features[-1]))

    def forward_train(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """(logits, deep-supervision logits finest first: empty without `deep_supervision`)."""
        if self.ds_heads is None:
            return self.forward(x), []
        features = self.encoder(x)
        stages = self.decoder.stages(features[:-1], features[-1])
        return self.head(stages[-1]), self.ds_heads(stages)
