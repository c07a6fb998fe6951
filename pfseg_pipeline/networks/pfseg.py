"""PFSeg: patch-free segmentation at HR from an LR input, with an SR decoder and the SGM.

    LR input ──> shared Encoder (residual blocks, widths, max-pool 2) ──> bottleneck
    HR guidance patch ──> SGM (small encoder, sgm_widths) ──resize──┘ concatenated
    bottleneck(+SGM) ──> seg decoder ──> K logits at HR
                     └─> SR decoder  ──> C channels at HR (training only)

Each decoder: up-stages with skips back to LR resolution, then an up-stage WITHOUT skip from LR
to HR by the LR scale per axis (kernel 4/stride 2/pad 1 on a x2 axis, kernel = stride = s
otherwise, nothing on a x1 axis), a residual block to `head_width` channels and a 1x1 head.
The seg head returns logits (the sigmoid lives in the loss and the predictor); the SR head is
ReLU for min-max images and linear otherwise.

The SGM output is resized (trilinear) to the bottleneck's spatial size before concatenation;
at the planned shape the sizes agree and nothing is resized, so volumes larger than planned
(padded for inference) work.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pfseg_pipeline.networks.base import SegmentationNetwork
from pfseg_pipeline.networks.blocks import ResidualBlock, make_up_stage
from pfseg_pipeline.networks.deep_supervision import DeepSupervisionHeads, supervised_levels
from pfseg_pipeline.networks.inputs import cut_guidance, guidance_mask, guidance_origin, lr_from_hr
from pfseg_pipeline.networks.unet import Encoder, SkipDecoder

SR_ACTIVATIONS = ("relu", "linear")


class PFSegDecoder(nn.Module):
    """Skip decoder to LR resolution, extra up-stage to HR, residual block, 1x1 head."""

    def __init__(self, widths: Sequence[int], bottleneck_channels: int, head_width: int, out_channels: int,
                 lr_scale_zyx: Sequence[int], norm: str = "instance", activation: str = "linear"):
        super().__init__()
        if activation not in SR_ACTIVATIONS:
            raise ValueError(f"head activation must be one of {SR_ACTIVATIONS}, got {activation!r}")
        self.skip_decoder = SkipDecoder(widths, bottleneck_channels, norm)
        width = self.skip_decoder.out_channels
        self.to_hr = make_up_stage(width, width, lr_scale_zyx)   # None when the LR scale is 1
        self.refine = ResidualBlock(width, head_width, norm)
        self.head = nn.Conv3d(head_width, out_channels, 1)
        self.activation = activation

    def forward(self, skips: Sequence[Tensor], bottleneck: Tensor) -> Tensor:
        return self.forward_with_stages(skips, bottleneck, keep=False)[0]

    def forward_with_stages(self, skips: Sequence[Tensor], bottleneck: Tensor, keep: bool = True
                            ) -> tuple[Tensor, list[Tensor]]:
        """(output at HR, the skip decoder's stage outputs coarsest first: deep supervision's
        input; `keep=False`: only the last, so inference frees the others)."""
        stages = self.skip_decoder.stages(skips, bottleneck, keep)
        x = stages.pop() if not keep else stages[-1]
        if self.to_hr is not None:
            x = self.to_hr(x)
        x = self.head(self.refine(x))
        return (torch.relu(x) if self.activation == "relu" else x), stages


def resize_to(features: Tensor, spatial: Sequence[int]) -> Tensor:
    """Trilinear resize of (B, C, ...) to `spatial`; the identity when the size already agrees,
    except while a tracer records it: a branch on sizes would be decided once, at the example
    shape, so the graph always holds the resize (to the same size, the identity)."""
    if tuple(features.shape[2:]) == tuple(spatial) and not torch.jit.is_tracing():
        return features
    return F.interpolate(features, size=tuple(spatial), mode="trilinear", align_corners=False)


class PFSeg(SegmentationNetwork):
    def __init__(self, in_channels: int, out_channels: int, *, widths: Sequence[int],
                 sgm_widths: Sequence[int], head_width: int, lr_scale_zyx: Sequence[int], lr_operator: str,
                 guidance_patch_zyx: Sequence[int], guidance_location: str, norm: str = "instance",
                 sr_activation: str = "linear", use_sr: bool = True, use_sgm: bool = True,
                 deep_supervision: bool = False):
        n_pool = len(widths) - 1
        options = {"use_sr": bool(use_sr), "use_sgm": bool(use_sgm)}
        if deep_supervision:   # recorded only when on: older checkpoints hold the two options above
            options["deep_supervision"] = True
        super().__init__([s * 2 ** n_pool for s in lr_scale_zyx], options)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.lr_scale_zyx = tuple(int(s) for s in lr_scale_zyx)
        self.lr_operator = lr_operator
        self.guidance_patch_zyx = tuple(int(p) for p in guidance_patch_zyx)
        self.guidance_location = guidance_location
        self.use_sr, self.use_sgm = bool(use_sr), bool(use_sgm)

        self.encoder = Encoder(in_channels, widths, norm)
        bottleneck = widths[-1]
        self.sgm = None
        if self.use_sgm:
            self.sgm = Encoder(in_channels, sgm_widths, norm)
            bottleneck += sgm_widths[-1]
        self.seg_decoder = PFSegDecoder(widths, bottleneck, head_width, out_channels, self.lr_scale_zyx, norm)
        self.sr_decoder = None
        if self.use_sr:
            self.sr_decoder = PFSegDecoder(widths, bottleneck, head_width, in_channels, self.lr_scale_zyx,
                                           norm, activation=sr_activation)
        self.ds_heads = None
        if deep_supervision:   # on the seg decoder's stages; the LR stage too when an LR -> HR stage follows
            levels = supervised_levels(n_pool, final_finer_than_level0=self.seg_decoder.to_hr is not None)
            self.ds_heads = DeepSupervisionHeads(widths, levels, out_channels)

    def output_head(self) -> nn.Conv3d:
        return self.seg_decoder.head

    # ---- pieces ---------------------------------------------------------------------------------
    def _bottleneck(self, features: list[Tensor], guidance_patch: Tensor | None) -> Tensor:
        bottleneck = features[-1]
        if self.sgm is None:
            return bottleneck
        guidance = resize_to(self.sgm(guidance_patch)[-1], bottleneck.shape[2:])
        return torch.cat([bottleneck, guidance.to(bottleneck.dtype)], dim=1)

    def _guidance(self, image: Tensor, batch: dict[str, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        batch = batch or {}
        origin = batch.get("guidance_origin_zyx")
        patch = batch.get("guidance_patch")
        if origin is None:
            if patch is not None:
                raise ValueError("the batch has guidance_patch but no guidance_origin_zyx")
            origin = guidance_origin(image, self.guidance_patch_zyx, self.guidance_location)
        if patch is None:
            patch = cut_guidance(image, origin, self.guidance_patch_zyx)
        return origin, patch

    # ---- interface ------------------------------------------------------------------------------
    def forward_train(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Outputs: `seg_logits` (B, K, HR); `sr` (B, C, HR) with the SR decoder;
        `guidance_mask` (B, 1, HR) with the SGM (also under the name `sr_guidance_mask`);
        `seg_logits_ds` (coarser logits, finest first) with deep supervision."""
        image = batch["image"]
        self.check_input(image)
        lr_image = batch.get("lr_image")
        if lr_image is None:
            lr_image = lr_from_hr(image, self.lr_scale_zyx, self.lr_operator)
        origin = patch = None
        if self.use_sgm:
            origin, patch = self._guidance(image, batch)
        features = self.encoder(lr_image)
        bottleneck = self._bottleneck(features, patch)
        seg_logits, stages = self.seg_decoder.forward_with_stages(features[:-1], bottleneck)
        outputs = {"seg_logits": seg_logits}
        if self.ds_heads is not None:
            outputs["seg_logits_ds"] = self.ds_heads(stages)
        if self.sr_decoder is not None:
            outputs["sr"] = self.sr_decoder(features[:-1], bottleneck)
        if self.use_sgm:
            mask = guidance_mask(image.shape, origin.to(image.device), self.guidance_patch_zyx,
                                 dtype=image.dtype)
            outputs["guidance_mask"] = mask
            outputs["sr_guidance_mask"] = mask
        return outputs

    def forward_infer(self, image: Tensor) -> Tensor:
        """HR logits (B, K, Z, Y, X) of an HR image; the SR decoder is not run."""
        self.check_input(image)
        lr_image = lr_from_hr(image, self.lr_scale_zyx, self.lr_operator)
        patch = self._guidance(image)[1] if self.use_sgm else None
        features = self.encoder(lr_image)
        return self.seg_decoder(features[:-1], self._bottleneck(features, patch))


def build_pfseg(plans, use_sr: bool = True, use_sgm: bool = True, deep_supervision: bool = False) -> PFSeg:
    """PFSeg from the plans. Ablation rows: US = (use_sr=False, use_sgm=False); +SR/+TEL/+SSL =
    (True, False); +SGM (the full method) = (True, True). `deep_supervision`: training-only heads
    on the seg decoder's coarser stages."""
    net = plans.network
    return PFSeg(plans.in_channels, plans.out_channels, widths=list(net.widths),
                 sgm_widths=list(net.sgm_widths), head_width=net.head_width,
                 lr_scale_zyx=list(plans.lr_scale_zyx), lr_operator=plans.lr_operator,
                 guidance_patch_zyx=list(plans.guidance.patch_shape_zyx),
                 guidance_location=plans.guidance.location, norm=net.norm, sr_activation=plans.sr_activation,
                 use_sr=use_sr, use_sgm=use_sgm, deep_supervision=deep_supervision)
