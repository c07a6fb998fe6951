"""Each network's training objective: the PFSeg losses (with the original code's defects fixed,
PFSEG_METHOD.md, "Losses"), the baselines' Dice + BCE, and the rows of the paper's ablation.
They live beside the networks, so the registry, the memory model and training reach them
without a lower layer importing training/.

Notation: s = segmentation probability (sigmoid of the logits), r = SR image, y = HR target,
x = HR image, m = guidance-region mask; tensors are (B, C, Z, Y, X).

- Segmentation: soft Dice + BCE-with-logits over the region channels (with deep supervision,
  `seg_logits_ds`, nnU-Net's weighted sum over the outputs: networks/deep_supervision.py). The
  Dice is the standard one WITH the factor 2 (the original lacked it, so its minimum was 0.5):
  1 - (2 sum(s y) + 1) / (sum(s) + sum(y) + 1), computed per sample and per channel, then
  averaged (not the squared-denominator form).
- SR: MSE(r, x) over the whole volume.
- Guidance: mean over the WHOLE volume of (m r - m x)^2, the paper's form (= patch MSE times
  patch voxels / volume voxels), so the 0.5 weight means what it meant in the paper.
- TEL: mean((s_WT r_c - y_WT x_c)^2), s_WT / y_WT = channel 0 (whole tumour), averaged over the
  image channels c.
- SSL: per sample, P = AvgPool3d(k, k) (floor), f = flatten(P(s_WT) P(r_c)),
  g = flatten(P(y_WT x_c)), A_f = f f^T, A_g = g g^T, SSL = sum|A_g - A_f| / (H_p W_p)^2 with the
  pooled in-plane sizes; averaged over channels and then MEANED over the batch (the original
  summed over the batch).
- Total = seg + w_sr SR + w_g guidance + w_tel TEL + w_ssl SSL, the weights from
  `plans.training.loss_weights` (the paper's 1, 0.5, 0.5, 0.5, 0.5).
- Intensity scale of the auxiliary terms: SR, guidance, TEL and SSL grow with the square of the
  image intensity, and the paper's 0.5 weights were meant for T2 min-maxed to [0, 1]. With an
  `intensity_range` (per channel [low, high], `plans.training.aux_intensity` "bounded": the
  dataset's normalised brain p0.5..p99.5) x and r both go through the same affine map
  (v - low) / (high - low) inside those terms, so the brain spans about [0, 1] as in the paper
  and SR stays an identity task; without one ("as_is") they see the network's scale (z-scores).

Losses run in float32 with autocast off, whatever precision the network ran in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pfseg_pipeline.networks.deep_supervision import deep_supervision_weights, pool_target

TERMS = ("seg", "sr", "guidance", "tel", "ssl")


def soft_dice_loss(logits: Tensor, target: Tensor, smooth: float = 1.0) -> Tensor:
    """1 - (2 sum(s y) + smooth) / (sum(s) + sum(y) + smooth), per sample and channel, then mean.

    s = sigmoid(logits). A perfect prediction gives 0; a prediction covering exactly half of
    the target and nothing else gives 1 - (2 n/2 + 1) / (3 n/2 + 1), about 1/3.
    """
    s = torch.sigmoid(logits.float()).flatten(2)
    y = target.float().flatten(2)
    dice = (2 * (s * y).sum(-1) + smooth) / (s.sum(-1) + y.sum(-1) + smooth)
    return 1 - dice.mean()


def segmentation_loss(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """(Dice, BCE-with-logits averaged over every element) of sigmoid region channels."""
    dice = soft_dice_loss(logits, target)
    bce = F.binary_cross_entropy_with_logits(logits.float(), target.float())
    return dice, bce


def supervised_segmentation_loss(logits: Tensor, target: Tensor, deep_logits: Sequence[Tensor] = ()
                                 ) -> tuple[Tensor, Tensor, Tensor]:
    """(seg, Dice, BCE): seg = Dice + BCE of the final logits; with deep-supervision logits
    (coarser, finest first) the weighted sum over every output (`deep_supervision_weights`), each
    against the target area-pooled to its grid. Dice and BCE are the final output's (the log's)."""
    dice, bce = segmentation_loss(logits, target)
    if not deep_logits:
        return dice + bce, dice, bce
    weights = deep_supervision_weights(1 + len(deep_logits))
    total = weights[0] * (dice + bce)
    for weight, coarse in zip(weights[1:], deep_logits):
        coarse_dice, coarse_bce = segmentation_loss(coarse, pool_target(target, coarse.shape[2:]))
        total = total + weight * (coarse_dice + coarse_bce)
    return total, dice, bce


def sr_loss(sr: Tensor, image: Tensor) -> Tensor:
    """MSE between the SR output and the HR image over the whole volume."""
    return F.mse_loss(sr.float(), image.float())


def guidance_loss(sr: Tensor, image: Tensor, mask: Tensor) -> Tensor:
    """mean over the whole volume of (m r - m x)^2; mask (B, 1, ...) broadcasts over channels."""
    m = mask.float()
    return ((m * sr.float() - m * image.float()) ** 2).mean()


def target_enhanced_loss(seg_prob_wt: Tensor, sr: Tensor, target_wt: Tensor, image: Tensor) -> Tensor:
    """TEL = mean((s r_c - y x_c)^2) over voxels and channels c; s, y are (B, 1, ...)."""
    return ((seg_prob_wt.float() * sr.float() - target_wt.float() * image.float()) ** 2).mean()


def spatial_similarity_loss(seg_prob_wt: Tensor, sr: Tensor, target_wt: Tensor, image: Tensor,
                            pool: int = 10) -> Tensor:
    """SSL as PFSEG_METHOD.md writes it, meaned over the batch and averaged over channels.

    `seg_prob_wt`, `target_wt`: (B, 1, Z, Y, X); `sr`, `image`: (B, C, Z, Y, X). The pooling
    kernel is `pool` per axis, capped at the volume's size on an axis smaller than it (tiny
    test volumes), with floor pooling dropping the remainder.
    """
    spatial = sr.shape[2:]
    kernel = tuple(min(pool, int(n)) for n in spatial)
    s, r = seg_prob_wt.float(), sr.float()
    y, x = target_wt.float(), image.float()
    pooled_s = F.avg_pool3d(s, kernel, kernel)                # (B, 1, Zp, Yp, Xp)
    pooled_r = F.avg_pool3d(r, kernel, kernel)                # (B, C, Zp, Yp, Xp)
    f = (pooled_s * pooled_r).flatten(2)                      # each pooled first, then multiplied
    g = F.avg_pool3d(y * x, kernel, kernel).flatten(2)        # multiplied first, then pooled
    h_p, w_p = pooled_r.shape[3], pooled_r.shape[4]
    b, c, n = f.shape
    f, g = f.reshape(b * c, n, 1), g.reshape(b * c, n, 1)
    gram_f = torch.bmm(f, f.transpose(1, 2))                  # (B*C, n, n)
    gram_g = torch.bmm(g, g.transpose(1, 2))
    per_sample_channel = (gram_g - gram_f).abs().sum(dim=(1, 2)) / float(h_p * w_p) ** 2
    return per_sample_channel.reshape(b, c).mean(dim=1).mean()


@dataclass(frozen=True)
class Ablation:
    """One row of the paper's ablation: the loss terms on, and the builder options they need."""

    terms: frozenset[str]
    use_sr: bool
    use_sgm: bool

    def network_options(self) -> dict[str, bool]:
        return {"use_sr": self.use_sr, "use_sgm": self.use_sgm}


FULL = "full"  # the whole method: every term, SR decoder and SGM
ABLATIONS: dict[str, Ablation] = {
    "us": Ablation(frozenset({"seg"}), use_sr=False, use_sgm=False),
    "sr": Ablation(frozenset({"seg", "sr"}), use_sr=True, use_sgm=False),
    "tel": Ablation(frozenset({"seg", "sr", "tel"}), use_sr=True, use_sgm=False),
    "ssl": Ablation(frozenset({"seg", "sr", "tel", "ssl"}), use_sr=True, use_sgm=False),
    FULL: Ablation(frozenset(TERMS), use_sr=True, use_sgm=True),
}


def _check_ablation(name: str) -> Ablation:
    if name not in ABLATIONS:
        raise ValueError(f"unknown ablation {name!r} (choose from {', '.join(ABLATIONS)})")
    return ABLATIONS[name]


class _TermsLoss(nn.Module):
    """A loss whose `compute` gives (total, {term: tensor}); calling it gives the terms as floats
    for the log (one host synchronisation)."""

    def forward(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Tensor]
                ) -> tuple[Tensor, dict[str, float]]:
        total, values = self.compute(outputs, batch)
        return total, _as_floats(total, values)

    def compute(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Tensor]
                ) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError


class PFSegLoss(_TermsLoss):
    """seg + w_sr SR + w_g guidance + w_tel TEL + w_ssl SSL, with the ablation's terms on.

    `forward(outputs, batch) -> (total, {term: float})`; the dict holds every computed term
    (seg, dice, bce, sr, guidance, tel, ssl) and `total`, for logging. Terms needing the SR
    output (or the guidance mask) are skipped when the network did not return it.

    Parameters
    ----------
    weights : one weight per term of `TERMS` (`plans.training.loss_weights`).
    ablation : the row of `ABLATIONS` whose terms are on.
    ssl_pool : the SSL pooling factor k (`plans.training.ssl_pool`).
    intensity_range : per image channel (low, high): x and r map to (v - low) / (high - low)
        inside the SR, guidance, TEL and SSL terms; None: as they are.
    """

    def __init__(self, weights: Mapping[str, float], ablation: str, ssl_pool: int,
                 intensity_range: Sequence[Sequence[float]] | None = None):
        super().__init__()
        self.ablation_name = ablation
        self.ablation = _check_ablation(ablation)
        self.weights = {str(k): float(v) for k, v in weights.items()}
        unknown = set(self.weights) - set(TERMS)
        if unknown:
            raise ValueError(f"unknown loss weight(s) {sorted(unknown)} (terms: {', '.join(TERMS)})")
        missing = [t for t in TERMS if t not in self.weights]
        if missing:
            raise ValueError(f"missing loss weight(s) {missing} (plans.json training.loss_weights)")
        self.ssl_pool = int(ssl_pool)
        self.intensity_range = None
        if intensity_range is not None:
            self.intensity_range = [(float(lo), float(hi)) for lo, hi in intensity_range]
            if any(not hi > lo for lo, hi in self.intensity_range):
                raise ValueError(f"intensity range must have high > low per channel, got {intensity_range}")

    def _bounded(self, *volumes: Tensor) -> tuple[Tensor, ...]:
        """Each (B, C, ...) volume through (v - low_c) / (high_c - low_c), or unchanged."""
        if self.intensity_range is None:
            return volumes
        ref = volumes[0]
        low = torch.tensor([lo for lo, _ in self.intensity_range], dtype=torch.float32, device=ref.device)
        span = torch.tensor([hi - lo for lo, hi in self.intensity_range], dtype=torch.float32,
                            device=ref.device)
        shape = (1, -1) + (1,) * (ref.dim() - 2)
        low, span = low.view(shape), span.view(shape)
        return tuple((v.float() - low) / span for v in volumes)

    def compute(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Tensor]
                ) -> tuple[Tensor, dict[str, Tensor]]:
        """(total, {term: tensor}) without a host synchronisation (also under FakeTensorMode)."""
        terms = self.ablation.terms
        logits, target, image = outputs["seg_logits"], batch["target"], batch["image"]
        with torch.autocast(device_type=logits.device.type, enabled=False):
            seg, dice, bce = supervised_segmentation_loss(logits, target, outputs.get("seg_logits_ds", ()))
            values = {"dice": dice, "bce": bce, "seg": seg}
            sr = outputs.get("sr")
            if sr is not None:
                sr, image = self._bounded(sr, image)
                if "sr" in terms:
                    values["sr"] = sr_loss(sr, image)
                mask = outputs.get("guidance_mask", outputs.get("sr_guidance_mask"))
                if "guidance" in terms and mask is not None:
                    values["guidance"] = guidance_loss(sr, image, mask)
                if "tel" in terms or "ssl" in terms:
                    prob_wt = torch.sigmoid(logits[:, :1].float())
                    target_wt = target[:, :1]
                    if "tel" in terms:
                        values["tel"] = target_enhanced_loss(prob_wt, sr, target_wt, image)
                    if "ssl" in terms:
                        values["ssl"] = spatial_similarity_loss(prob_wt, sr, target_wt, image, self.ssl_pool)
            total = sum(self.weights[name] * values[name] for name in TERMS if name in values)
        return total, values


class SegmentationLoss(_TermsLoss):
    """Dice + BCE for the baselines; uses outputs["target"] when the network returns its own
    (resunet3d_up: the LR soft target)."""

    def compute(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Tensor]
                ) -> tuple[Tensor, dict[str, Tensor]]:
        """(total, {term: tensor}) without a host synchronisation (also under FakeTensorMode)."""
        logits = outputs["seg_logits"]
        target = outputs["target"] if "target" in outputs else batch["target"]
        with torch.autocast(device_type=logits.device.type, enabled=False):
            total, dice, bce = supervised_segmentation_loss(logits, target, outputs.get("seg_logits_ds", ()))
        return total, {"dice": dice, "bce": bce, "seg": total}


def _as_floats(total: Tensor, values: Mapping[str, Tensor]) -> dict[str, float]:
    logged = {name: float(value.detach()) for name, value in values.items()}
    logged["total"] = float(total.detach())
    return logged
