"""Deep supervision: extra 1x1 segmentation heads on a decoder's coarser stages, training only.

nnU-Net's form: every decoder stage emits logits; output i (0 = the final, full-resolution one,
then coarser by one stage each) weighs 1 / 2**i, the coarsest weighs 0, and the weights are
normalised to sum 1. A head whose weight is 0 would only cost time (and, under DDP, leave
unused parameters), so it is not built: the heads sit on the stages BETWEEN the final output
and the coarsest stage (`supervised_levels`).

Targets are down-sampled to each head's grid by AREA (average pooling over the block of HR
voxels each coarse voxel covers): the soft target is the fraction of the coarse voxel inside
the region, the expectation of the HR label, which BCE and the soft Dice take as they are and
which keeps a small structure's volume. Max pooling would teach the coarse heads that any
partly covered voxel is all tumour (a dilation, biased towards over-segmentation), and nearest
would drop structures smaller than a coarse voxel.

The loss side (`losses.supervised_segmentation_loss`) weighs each output against its target.
The heads run in `forward_train` only: `forward_infer` never computes them, and the registry
lists them as training-only modules (left out of the inference parameter count).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn


def supervised_levels(n_pool: int, final_finer_than_level0: bool) -> list[int]:
    """Encoder levels (0 = finest skip level) of the decoder stages that get a head, finest first.

    A skip decoder has stages at levels n_pool - 1 (coarsest) .. 0. The final output is level 0
    itself, unless another up-stage follows it (PFSeg's LR -> HR stage at an LR scale > 1); the
    coarsest stage gets weight 0 and no head.

    >>> supervised_levels(3, False), supervised_levels(3, True), supervised_levels(4, False)
    ([1], [0, 1], [1, 2])
    """
    first = 0 if final_finer_than_level0 else 1
    return list(range(first, n_pool - 1))


def deep_supervision_weights(n_outputs: int) -> list[float]:
    """Weights of the final output and `n_outputs - 1` deep-supervision outputs (finest first):
    1 / 2**i normalised over them with the coarsest stage's 0 left out (it adds nothing).

    >>> deep_supervision_weights(3)
    [0.5714285714285714, 0.2857142857142857, 0.14285714285714285]
    """
    raw = [0.5 ** i for i in range(n_outputs)]
    return [w / sum(raw) for w in raw]


class DeepSupervisionHeads(nn.Module):
    """1x1 heads on the decoder stages at `levels`; `forward(stages)` takes the stage outputs
    coarsest first (`SkipDecoder.stages`), returns the heads' logits finest first."""

    def __init__(self, stage_channels: Sequence[int], levels: Sequence[int], out_channels: int):
        super().__init__()
        self.levels = [int(level) for level in levels]
        self.heads = nn.ModuleList(nn.Conv3d(stage_channels[level], out_channels, 1) for level in self.levels)

    def forward(self, stages: Sequence[Tensor]) -> list[Tensor]:
        n = len(stages)
        return [head(stages[n - 1 - level]) for level, head in zip(self.levels, self.heads)]


def pool_target(target: Tensor, spatial: Sequence[int]) -> Tensor:
    """`target` (B, K, Z, Y, X) area-down-sampled to `spatial` (an integer factor per axis)."""
    kernel = [int(t) // int(s) for t, s in zip(target.shape[2:], spatial)]
    if any(k * int(s) != int(t) for k, s, t in zip(kernel, spatial, target.shape[2:])):
        raise ValueError(f"target {tuple(target.shape[2:])} is not a multiple of {tuple(spatial)}")
    if all(k == 1 for k in kernel):
        return target
    return F.avg_pool3d(target.float(), kernel, kernel)
