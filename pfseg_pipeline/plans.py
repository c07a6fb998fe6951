"""Plans: every decision of the planner as plain data, <-> versioned JSON.

`plans.json` is meant to be read and edited by hand: each field has a one-line reason in
`reasons`, and loading validates every field, naming the bad one in the error. Networks are
built from a `Plans` (networks/registry.py) without touching training code.

Every training decision lives here and nowhere else in code: `TrainingPlan`'s defaults are the
default preset's recipe, presets.py says what the other presets change. A plans.json written
before a training field existed still loads: the field is filled from its preset (logged), and
`Plans.hash()` (the cache's key) is unchanged, so no cached case is rebuilt.

Shapes are (z, y, x) on the target grid; keys that hold shapes or spacings end in `_zyx`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pfseg_pipeline.data.labels import TARGETS, LabelScheme, region_names
from pfseg_pipeline.errors import UserError
from pfseg_pipeline.fileio import read_json, write_json
from pfseg_pipeline.presets import (
    AUGMENTATIONS,
    PAPER_GUIDANCE_ZYX,
    PAPER_PATCH_ZYX,
    PRESETS,
    training_overrides,
    training_reasons,
)
from pfseg_pipeline.typed_json import build_dataclass

log = logging.getLogger(__name__)

PLANS_VERSION = 1
NORMALISATIONS = ("zscore", "minmax")
LR_OPERATORS = ("avgpool", "trilinear")
GUIDANCE_LOCATIONS = ("center", "textured")
# training.pfseg_branches: rows of networks.losses.ABLATIONS ("full": the whole method)
PFSEG_BRANCHES = ("full", "us")
AUX_INTENSITIES = ("as_is", "bounded")


@dataclass
class NetworkPlan:
    """Widths of the shared blocks. The encoder pools len(widths) - 1 times."""

    widths: list[int] = field(default_factory=lambda: [32, 32, 64, 128, 256])
    sgm_widths: list[int] = field(default_factory=lambda: [16, 32, 64, 64])
    head_width: int = 16           # the residual block before each HR head
    norm: str = "instance"         # InstanceNorm3d without affine parameters, as in the paper

    @property
    def n_pool(self) -> int:
        return len(self.widths) - 1


@dataclass
class GuidancePlan:
    patch_shape_zyx: list[int] = field(default_factory=lambda: list(PAPER_GUIDANCE_ZYX))
    location: str = "center"       # "center" (paper) | "textured"


@dataclass
class PatchPlan:
    """Patch-based baselines (unet3d, resunet3d, vnet): training patch and sliding window."""

    patch_shape_zyx: list[int] = field(default_factory=lambda: list(PAPER_PATCH_ZYX))
    step: float = 0.5              # window step, a fraction of the patch (the paper's and nnU-Net's)
    batch_size: int = 1
    foreground_oversampling: float = 0.33


@dataclass
class AugmentationPlan:
    """What the training loader randomises (the default preset's values); probabilities are per
    sample. The mirror axes are also the flips of test-time augmentation."""

    rotation_deg_zyx: list[float] = field(default_factory=lambda: [15.0, 15.0, 15.0])  # max angle per axis
    p_rotation: float = 0.2
    scale_range: list[float] = field(default_factory=lambda: [0.85, 1.25])
    p_scale: float = 0.2
    mirror_axes: list[int] = field(default_factory=lambda: [0, 1, 2])   # spatial axes (z, y, x) that flip
    gamma_range: list[float] = field(default_factory=lambda: [0.7, 1.5])
    p_gamma: float = 0.3
    noise_variance: list[float] = field(default_factory=lambda: [0.0, 0.1])
    p_noise: float = 0.1
    gamma_per_channel: bool = False    # one gamma per channel (nnU-Net) or one for the whole sample
    p_gamma_inverted: float = 0.0      # gamma on the inverted image (nnU-Net: 0.1)
    brightness_range: list[float] = field(default_factory=lambda: [0.75, 1.25])
    p_brightness: float = 0.15
    contrast_range: list[float] = field(default_factory=lambda: [0.75, 1.25])
    p_contrast: float = 0.15
    blur_sigma: list[float] = field(default_factory=lambda: [0.5, 1.0])   # voxels
    p_blur: float = 0.0                # per sample (nnU-Net: 0.2) ...
    p_blur_per_channel: float = 0.5    # ... then per channel
    low_resolution_zoom: list[float] = field(default_factory=lambda: [0.5, 1.0])   # down-sampling factor
    p_low_resolution: float = 0.0      # per sample (nnU-Net: 0.25) ...
    p_low_resolution_per_channel: float = 0.5
    # whole-volume training: extra random shift (fraction of the HR shape per axis) beyond the
    # slack between brain box and HR shape; the loader applies it when it places the volume
    max_shift_zyx: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])


@dataclass
class TrainingPlan:
    """The training recipe; these defaults are the default preset's (presets.py: the others)."""

    epochs: int = 100
    iterations_per_epoch: int = 250
    optimizer: str = "adam"        # networks/step.py OPTIMIZERS
    lr: float = 3e-3               # the recipe study's (presets.py: the reasons; the paper's: 1e-4)
    weight_decay: float = 0.0
    momentum: float = 0.99         # SGD's (Nesterov) momentum; Adam ignores it
    grad_clip: float = 12.0        # max global gradient norm; 0: no clipping
    scheduler: str = "plateau"     # training/schedules.py SCHEDULERS
    poly_exponent: float = 0.9     # poly: lr * (1 - t / T) ** exponent, t the global iteration
    plateau_factor: float = 0.1    # plateau: the rate times this when the monitor Dice stalls ...
    plateau_patience: int = 20     # ... for this many epochs
    # share of a fold's training cases held out (not trained on) as MONITOR cases: the only cases
    # whose Dice may steer training (plateau, early stopping, best checkpoint); 0: none
    monitor_fraction: float = 0.0
    early_stopping_patience: int = 0   # epochs without a better monitor Dice; 0: never stop early
    # the fold's reported validation cases are scored (logged only) every this many epochs and
    # after the last; monitor cases, which may steer training, are scored every epoch
    validation_interval: int = 1
    ssl_pool: int = 10             # SSL pooling factor k
    # per output region, the fraction of the HR volume it fills in the training data: the seg
    # head's bias starts at logit(prior) (empty: PyTorch's default init, as the paper's code)
    region_prior: list[float] = field(default_factory=list)
    # "dataset": region_prior above for every run; "fold": each run's own, from its training cases
    # and the network's sampling (training/region_prior.py), recorded with the run
    region_prior_source: str = "fold"      # the recipe study's (presets.py); the paper's: "dataset"
    loss_weights: dict[str, float] = field(default_factory=lambda: {
        "seg": 1.0, "sr": 0.5, "guidance": 0.5, "tel": 0.5, "ssl": 0.5})
    # the intensity scale of the SR, guidance, TEL and SSL terms: "as_is" (the network's: z-scores
    # by default) or "bounded" (per modality, aux_intensity_range [low, high] mapped to [0, 1])
    deep_supervision: bool = False     # extra seg heads on the coarser decoder stages (nnU-Net's)
    # what pfseg trains when pfseg_train gets no --ablation: "full" (segmentation network, SR decoder
    # and SGM, every loss term) or "us" (the segmentation network alone, the ablation's US row);
    # the planner picks "full" at LR scale 1 where it fits the budget, else "us" (presets.pfseg_branches:
    # the reason; the paper preset always "full")
    pfseg_branches: str = "full"
    # how a trained model predicts by default (pfseg_predict, the API, the end-of-training
    # evaluation of held-out cases): the mean over the mirror combinations of
    # augmentation.mirror_axes (True, nnU-Net's default) or one pass (False, the paper's);
    # `pfseg_predict --tta / --no-tta` overrides it. Per-epoch validation is always one pass.
    tta: bool = True
    aux_intensity: str = "as_is"
    aux_intensity_range: dict[str, list[float]] = field(default_factory=dict)   # planned from the data
    seed: int = 12345              # weights, sampling, augmentation
    split_seed: int = 12345        # the 5 folds of splits.json
    augmentation: AugmentationPlan = field(default_factory=AugmentationPlan)


def preset_training(preset: str) -> TrainingPlan:
    """The training recipe of `preset`: TrainingPlan's defaults changed as presets.py says."""
    values = _merged(dataclasses.asdict(TrainingPlan()), training_overrides(preset))
    return build_dataclass(TrainingPlan, values, f"the {preset} preset", "training.")


def named_augmentation(name: str) -> AugmentationPlan:
    """The augmentation plan presets.AUGMENTATIONS names (AugmentationPlan's defaults changed)."""
    values = _merged(dataclasses.asdict(AugmentationPlan()), AUGMENTATIONS[name])
    return build_dataclass(AugmentationPlan, values, f"the {name} augmentation", "training.augmentation.")


def _merged(base: dict, changes: dict) -> dict:
    out = dict(base)
    for key, value in changes.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) \
            else value
    return out


@dataclass
class Plans:
    dataset_name: str
    modalities: list[str]
    label_scheme: dict[str, Any]
    hr_shape_zyx: list[int]
    target_spacing_zyx: list[float]
    preset: str = "default"
    target: str = "regions"
    normalization: str = "zscore"
    lr_scale_zyx: list[int] = field(default_factory=lambda: [2, 2, 2])
    lr_operator: str = "avgpool"
    guidance: GuidancePlan = field(default_factory=GuidancePlan)
    network: NetworkPlan = field(default_factory=NetworkPlan)
    batch_size: int = 1
    patch_based: PatchPlan = field(default_factory=PatchPlan)
    training: TrainingPlan = field(default_factory=TrainingPlan)
    preprocessing: dict[str, Any] = field(default_factory=dict)  # preset-specific steps
    memory: dict[str, Any] = field(default_factory=dict)         # budget and predicted peaks
    reasons: dict[str, str] = field(default_factory=dict)
    version: int = PLANS_VERSION

    # ---- derived, never stored -------------------------------------------------------------
    @property
    def in_channels(self) -> int:
        return len(self.modalities)

    @property
    def out_channels(self) -> int:
        return len(region_names(self.target))

    @property
    def scheme(self) -> LabelScheme:
        return LabelScheme.from_json(self.label_scheme)

    @property
    def lr_shape_zyx(self) -> list[int]:
        return [h // s for h, s in zip(self.hr_shape_zyx, self.lr_scale_zyx)]

    @property
    def hr_divisor_zyx(self) -> list[int]:
        """Patch-free networks accept HR shapes that are multiples of this per axis."""
        return [s * 2 ** self.network.n_pool for s in self.lr_scale_zyx]

    @property
    def sr_activation(self) -> str:
        """ReLU only for min-max images (never negative); linear for z-scored ones."""
        return "relu" if self.normalization == "minmax" else "linear"

    # ---- JSON --------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: Any, source: str = "plans.json") -> Plans:
        if not isinstance(d, dict):
            raise UserError(f"{source}: expected a JSON object")
        version = d.get("version")
        if version != PLANS_VERSION:
            raise UserError(f"{source}: field 'version' is {version!r}; this pfseg reads version "
                            f"{PLANS_VERSION} (re-run pfseg_plan_and_preprocess)")
        d = _complete_training(d, source)
        plans = build_dataclass(cls, d, source, "")
        plans.validate(source)
        return plans

    def validate(self, source: str = "plans.json") -> None:
        """Raise a UserError naming the first bad field."""
        def bad(name: str, why: str) -> UserError:
            return UserError(f"{source}: field '{name}' {why}")

        def shape3(name: str, value: list, positive=True) -> None:
            if len(value) != 3 or any((v <= 0 if positive else v < 0) for v in value):
                raise bad(name, f"must be three positive numbers (z, y, x), got {value}")

        if self.preset not in PRESETS:
            raise bad("preset", f"must be one of {PRESETS}, got {self.preset!r}")
        if self.target not in TARGETS:
            raise bad("target", f"must be one of {TARGETS}, got {self.target!r}")
        if self.normalization not in NORMALISATIONS:
            raise bad("normalization", f"must be one of {NORMALISATIONS}, got {self.normalization!r}")
        if self.lr_operator not in LR_OPERATORS:
            raise bad("lr_operator", f"must be one of {LR_OPERATORS}, got {self.lr_operator!r}")
        if not self.modalities or len(set(self.modalities)) != len(self.modalities):
            raise bad("modalities", f"must be a non-empty list without repeats, got {self.modalities}")
        try:
            LabelScheme.from_json(self.label_scheme)
        except UserError as exc:
            raise bad("label_scheme", f"is malformed ({exc})") from None
        for name in ("hr_shape_zyx", "target_spacing_zyx", "lr_scale_zyx"):
            shape3(name, getattr(self, name))
        shape3("guidance.patch_shape_zyx", self.guidance.patch_shape_zyx)
        shape3("patch_based.patch_shape_zyx", self.patch_based.patch_shape_zyx)
        divisor = self.hr_divisor_zyx
        if any(h % d for h, d in zip(self.hr_shape_zyx, divisor)):
            raise bad("hr_shape_zyx", f"{self.hr_shape_zyx} must be a multiple of lr_scale * 2**n_pool "
                      f"= {divisor} per axis")
        patch_div = 2 ** self.network.n_pool
        if any(p % patch_div for p in self.patch_based.patch_shape_zyx):
            raise bad("patch_based.patch_shape_zyx", f"{self.patch_based.patch_shape_zyx} must be a "
                      f"multiple of {patch_div} per axis")
        sgm_div = 2 ** (len(self.network.sgm_widths) - 1)
        if any(p % sgm_div for p in self.guidance.patch_shape_zyx):
            raise bad("guidance.patch_shape_zyx", f"must be a multiple of {sgm_div} per axis")
        if any(g > h for g, h in zip(self.guidance.patch_shape_zyx, self.hr_shape_zyx)):
            raise bad("guidance.patch_shape_zyx", "must fit inside hr_shape_zyx")
        if self.guidance.location not in GUIDANCE_LOCATIONS:
            raise bad("guidance.location", f"must be one of {GUIDANCE_LOCATIONS}")
        if len(self.network.widths) < 2 or any(w <= 0 for w in self.network.widths):
            raise bad("network.widths", "must list at least two positive widths")
        if len(self.network.sgm_widths) < 1 or any(w <= 0 for w in self.network.sgm_widths):
            raise bad("network.sgm_widths", "must list positive widths")
        if self.network.head_width <= 0:
            raise bad("network.head_width", "must be positive")
        if self.batch_size < 1:
            raise bad("batch_size", "must be at least 1")
        if self.patch_based.batch_size < 1:
            raise bad("patch_based.batch_size", "must be at least 1")
        if not 0 < self.patch_based.step <= 1:
            raise bad("patch_based.step", "must be in (0, 1]")
        t = self.training
        if t.epochs < 1 or t.iterations_per_epoch < 1:
            raise bad("training.epochs", "and training.iterations_per_epoch must be at least 1")
        if not t.lr > 0:
            raise bad("training.lr", "must be positive")
        if t.pfseg_branches not in PFSEG_BRANCHES:
            raise bad("training.pfseg_branches", f"must be one of {PFSEG_BRANCHES}, got {t.pfseg_branches!r}")
        if t.grad_clip < 0:
            raise bad("training.grad_clip", "must be 0 (no clipping) or positive")
        if not 0 <= t.momentum < 1 or t.weight_decay < 0:
            raise bad("training.momentum", "must be in [0, 1) and training.weight_decay >= 0")
        if t.validation_interval < 1:
            raise bad("training.validation_interval", f"must be at least 1, got {t.validation_interval}")
        if not 0 <= t.monitor_fraction < 1:
            raise bad("training.monitor_fraction", f"must be in [0, 1), got {t.monitor_fraction}")
        if not 0 < t.plateau_factor < 1 or t.plateau_patience < 0 or t.early_stopping_patience < 0 \
                or t.poly_exponent <= 0:
            raise bad("training.plateau_factor", "must be in (0, 1), plateau_patience and "
                      "early_stopping_patience >= 0, poly_exponent > 0")
        _validate_augmentation(t.augmentation, bad)
        if t.region_prior_source not in ("dataset", "fold"):
            raise bad("training.region_prior_source", f"must be 'dataset' or 'fold', got "
                      f"{t.region_prior_source!r}")
        if t.aux_intensity not in AUX_INTENSITIES:
            raise bad("training.aux_intensity", f"must be one of {AUX_INTENSITIES}, got {t.aux_intensity!r}")
        if t.aux_intensity == "bounded" and any(
                len(t.aux_intensity_range.get(m, ())) != 2 or not t.aux_intensity_range[m][1] >
                t.aux_intensity_range[m][0] for m in self.modalities):
            raise bad("training.aux_intensity_range", f"must give [low, high] with high > low for every "
                      f"modality {self.modalities} when aux_intensity is 'bounded' (re-run planning)")
        if t.ssl_pool < 1:
            raise bad("training.ssl_pool", "must be at least 1")
        if t.region_prior and (len(t.region_prior) != self.out_channels
                               or any(not 0 < p < 1 for p in t.region_prior)):
            raise bad("training.region_prior", f"must be empty or {self.out_channels} numbers in (0, 1), "
                      f"one per region, got {t.region_prior}")

    def hash(self) -> str:
        """A digest of the fields that change what is cached (not reasons or training knobs)."""
        keys = ("modalities", "label_scheme", "target_spacing_zyx", "normalization", "preprocessing",
                "preset")
        blob = json.dumps({k: getattr(self, k) for k in keys}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _validate_augmentation(a: AugmentationPlan, bad) -> None:
    for name in ("p_rotation", "p_scale", "p_gamma", "p_noise", "p_brightness", "p_contrast",
                 "p_gamma_inverted", "p_blur", "p_blur_per_channel", "p_low_resolution",
                 "p_low_resolution_per_channel"):
        if not 0 <= getattr(a, name) <= 1:
            raise bad(f"training.augmentation.{name}", "must be a probability in [0, 1]")
    for name in ("scale_range", "gamma_range", "noise_variance", "brightness_range", "contrast_range",
                 "blur_sigma", "low_resolution_zoom"):
        value = getattr(a, name)
        if len(value) != 2 or value[0] > value[1] or value[0] < 0:
            raise bad(f"training.augmentation.{name}", f"must be [low, high], 0 <= low <= high, got {value}")
    for name in ("rotation_deg_zyx", "max_shift_zyx"):
        if len(getattr(a, name)) != 3 or any(v < 0 for v in getattr(a, name)):
            raise bad(f"training.augmentation.{name}", "must be three non-negative numbers (z, y, x)")
    if not 0 < a.low_resolution_zoom[0] <= a.low_resolution_zoom[1] <= 1:
        raise bad("training.augmentation.low_resolution_zoom", "must be [low, high] within (0, 1]")
    if len(set(a.mirror_axes)) != len(a.mirror_axes) or any(v not in (0, 1, 2) for v in a.mirror_axes):
        raise bad("training.augmentation.mirror_axes", f"must be distinct axes of 0-2, got {a.mirror_axes}")


def _complete_training(d: dict, source: str) -> dict:
    """Training fields a plans.json does not record (written before they existed) filled from
    its preset, with their reasons; each filled field is logged."""
    preset = d.get("preset", "default")
    training = d.get("training")
    if preset not in PRESETS or not isinstance(training, dict):
        return d  # validation names the problem
    full = dataclasses.asdict(preset_training(preset))
    filled: list[str] = []

    def fill(have: dict, want: dict, prefix: str) -> dict:
        out = dict(have)
        for key, value in want.items():
            if key not in out:
                out[key] = value
                filled.append(prefix + key)
            elif isinstance(value, dict) and isinstance(out[key], dict) and key != "loss_weights":
                out[key] = fill(out[key], value, f"{prefix}{key}.")
        return out

    completed = fill(training, full, "training.")
    if not filled:
        return d
    reasons = dict(d.get("reasons") or {})
    for key, why in training_reasons(preset).items():
        if any(key == f or key.startswith(f + ".") for f in filled):
            reasons.setdefault(key, f"{why} (not in this file: filled from the {preset} preset on load)")
    log.info("%s: %s not recorded (an older plans.json); filled from the %s preset", source,
             ", ".join(filled), preset)
    return {**d, "training": completed, "reasons": reasons}


def load_plans(path: str | os.PathLike) -> Plans:
    path = Path(path)
    return Plans.from_json(read_json(path), str(path))


def save_plans(plans: Plans, path: str | os.PathLike) -> None:
    plans.validate(str(path))
    write_json(path, plans.to_json())
