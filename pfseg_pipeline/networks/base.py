"""The interface every network implements, so trainer and predictor are network-agnostic.

- `forward_train(batch: dict) -> dict`: batch keys `image` (B, C, Z, Y, X) and `target`
  (B, K, Z, Y, X), optional derived inputs; outputs at least `seg_logits`.
- `forward_infer(image) -> logits` (B, K, Z, Y, X) at the input's size; the network derives
  its own LR input / guidance patch. No sigmoid: the predictor applies it.
- `forward(x)` dispatches on the argument (dict -> forward_train, tensor -> forward_infer), so
  a DistributedDataParallel wrapper, which only hooks `forward`, works for both.
- Attributes: `options` (the builder options, stored in checkpoints), `divisor_zyx` (inputs
  must be a multiple of it per axis). What a network is (patch-free or not, its loss, the
  inputs it derives, its training-only modules) is its spec's to say (networks/registry.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn


class SegmentationNetwork(nn.Module):
    def __init__(self, divisor_zyx: Sequence[int], options: dict[str, Any] | None = None):
        super().__init__()
        self.divisor_zyx = tuple(int(d) for d in divisor_zyx)
        self.options: dict[str, Any] = dict(options or {})

    def forward(self, x):
        if isinstance(x, dict):
            return self.forward_train(x)
        return self.forward_infer(x)

    def forward_train(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        raise NotImplementedError

    def forward_infer(self, image: Tensor) -> Tensor:
        raise NotImplementedError

    def output_head(self) -> nn.Conv3d:
        """The last convolution, whose output channels are the region logits (HDC: the logits
        of each region times the space-to-depth factor, region-major)."""
        raise NotImplementedError

    def init_output_prior(self, prior: Sequence[float]) -> None:
        """Start the logits at logit(prior[k]) for region k: the head's bias is set to it (the
        weights are left as they are), and so are the deep-supervision heads'. A prior of the
        share of tumour in the volume makes the first steps learn where the tumour is, not that it
        is rare."""
        from pfseg_pipeline.networks.deep_supervision import DeepSupervisionHeads

        heads = [self.output_head()] + [h for m in self.modules() if isinstance(m, DeepSupervisionHeads)
                                        for h in m.heads]
        p = torch.as_tensor([float(v) for v in prior], dtype=torch.float64)
        if not bool(((p > 0) & (p < 1)).all()):
            raise ValueError(f"priors must be in (0, 1), got {list(prior)}")
        for head in heads:
            bias = head.bias
            per_region = bias.numel() // len(prior)
            if per_region * len(prior) != bias.numel():
                raise ValueError(f"{len(prior)} priors for a head of {bias.numel()} channels")
            logits = (torch.log(p) - torch.log1p(-p)).repeat_interleave(per_region)
            with torch.no_grad():
                bias.copy_(logits.to(bias.dtype))

    def check_input(self, image: Tensor) -> None:
        """Raise a ValueError unless `image` is (B, C, Z, Y, X) with a valid spatial shape."""
        if image.dim() != 5:
            raise ValueError(f"expected a batch (B, C, Z, Y, X), got shape {tuple(image.shape)}")
        spatial = tuple(image.shape[2:])
        if any(n % d for n, d in zip(spatial, self.divisor_zyx)):
            raise ValueError(f"input shape {spatial} is not a multiple of the network's divisor "
                             f"{self.divisor_zyx} per axis (pad it first)")
