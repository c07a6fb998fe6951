"""The augmentation pipeline: batchgenerators transforms, then the targets and the LR input.

A batch enters as batchgenerators' dict `{"data": (B, C, Z, Y, X) float32, "seg": (B, 1, Z, Y, X)
raw label values, "case_ids": [...]}` freshly read from the cache (a copy: the cache is never
written, defect 3), and leaves as the dict `forward_train` takes: `image`, `target` (B, K, ...)
0/1 float32, and the inputs the network's spec derives (`DerivedInputs`): `lr_image`, and
`guidance_patch` + `guidance_origin_zyx`.

What is randomised, and how strongly, is `plans.training.augmentation` (an `AugmentationPlan`,
per preset in presets.py): nothing here has a default of its own.

The LR input and the guidance patch are DERIVED from the augmented HR volume with
`networks.inputs`, the same operator inference uses, so LR input and HR target always agree
(defect 8). Mirroring flips axes; nothing transposes them (defect 4).

Every transform draws from numpy's global generator, which the background workers seed from
(seed, epoch, worker, rank) (see data_loader.py), so a run is reproducible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pfseg_pipeline.data.labels import LabelScheme, labels_to_regions
from pfseg_pipeline.plans import AugmentationPlan, Plans


@dataclass(frozen=True)
class TrainingInputs:
    """How the loader cuts a training sample, and which inputs it derives for the network
    (what its spec in `networks.registry` says).

    whole_volume : the whole HR volume around the brain (patch-free networks), else a patch of
        `plans.patch_based` with foreground oversampling.
    lr_image : derive the LR input from the augmented HR volume.
    guidance : cut the SGM guidance patch (with its origin) from the augmented HR volume.
    """

    whole_volume: bool
    lr_image: bool = False
    guidance: bool = False

    @classmethod
    def for_network(cls, name: str, options: dict | None = None) -> TrainingInputs:
        from pfseg_pipeline.networks.registry import network_spec

        spec = network_spec(name)
        return cls(spec.patch_free, spec.derives_lr_image, spec.takes_guidance(options or {}))


class RegionTargets:
    """`seg` raw labels (B, 1, ...) -> `target` region masks (B, K, ...) float32 0/1."""

    def __init__(self, scheme: LabelScheme, target: str):
        self.scheme, self.target = scheme, target

    def __call__(self, **batch):
        seg = batch.pop("seg")
        labels = np.rint(seg[:, 0]).astype(np.int16)  # interpolated with order 0: already integral
        batch["target"] = np.stack([labels_to_regions(s, self.scheme, self.target) for s in labels]
                                   ).astype(np.float32)
        return batch


class DerivedInputs:
    """Derive `lr_image` and/or the SGM guidance patch from the augmented HR `data`."""

    def __init__(self, plans: Plans, lr_image: bool, guidance: bool):
        self.scale = tuple(plans.lr_scale_zyx)
        self.operator = plans.lr_operator
        self.patch = tuple(plans.guidance.patch_shape_zyx)
        self.location = plans.guidance.location
        self.lr_image, self.guidance = lr_image, guidance

    def __call__(self, **batch):
        import torch

        from pfseg_pipeline.networks import inputs

        with torch.no_grad():
            hr = torch.from_numpy(np.ascontiguousarray(batch["data"], dtype=np.float32))
            if self.lr_image:
                batch["lr_image"] = inputs.lr_from_hr(hr, self.scale, self.operator).numpy()
            if self.guidance:
                origin = inputs.guidance_origin(hr, self.patch, self.location)
                batch["guidance_origin_zyx"] = origin.numpy().astype(np.int64)
                batch["guidance_patch"] = inputs.cut_guidance(hr, origin, self.patch).numpy()
        return batch


class ToTrainingBatch:
    """Rename batchgenerators' `data` to `image`, float32 and contiguous (what forward_train reads)."""

    def __call__(self, **batch):
        batch["image"] = np.ascontiguousarray(batch.pop("data"), dtype=np.float32)
        return batch


class Compose:
    """Apply transforms in order (batchgenerators' keyword-argument calling convention)."""

    def __init__(self, transforms: list):
        self.transforms = list(transforms)

    def __call__(self, **batch):
        for t in self.transforms:
            batch = t(**batch)
        return batch

    def __repr__(self) -> str:
        return "Compose(" + ", ".join(type(t).__name__ for t in self.transforms) + ")"


def _radians(max_deg: float) -> tuple[float, float]:
    r = math.radians(max_deg)
    return (-r, r)


def augmentation_margin(patch_shape_zyx: list[int] | tuple[int, ...], config: AugmentationPlan
                        ) -> tuple[int, int, int]:
    """Voxels to read beyond a patch on each side so that its rotated and zoomed-out samples hold
    image, not zeros: the patch's half-extent per axis under the worst rotation within the planned
    angles (compound rotations about all three axes, composed as batchgenerators does, on a grid
    of 9 angles per axis) times the largest scale factor (batchgenerators samples a region
    `scale` times the patch), less the half patch, plus one voxel for the interpolation.

    >>> from pfseg_pipeline.plans import AugmentationPlan
    >>> augmentation_margin([32, 32, 32], AugmentationPlan(p_rotation=0.0, p_scale=0.0))
    (0, 0, 0)
    """
    from batchgenerators.augmentations.utils import (
        create_matrix_rotation_x_3d,
        create_matrix_rotation_y_3d,
        create_matrix_rotation_z_3d,
    )

    half = np.asarray(patch_shape_zyx, dtype=np.float64) / 2
    rotates = config.p_rotation > 0 and any(config.rotation_deg_zyx)
    angles = [np.radians(np.linspace(-a, a, 9)) if rotates and a else np.zeros(1)
              for a in config.rotation_deg_zyx]
    extent = half.copy()
    for ax in angles[0]:
        for ay in angles[1]:
            for az in angles[2]:
                rotation = create_matrix_rotation_z_3d(az, create_matrix_rotation_y_3d(
                    ay, create_matrix_rotation_x_3d(ax, np.identity(3))))
                extent = np.maximum(extent, np.abs(rotation).T @ half)   # coordinates are rows times R
    scale = max(1.0, config.scale_range[1]) if config.p_scale > 0 else 1.0
    extent *= scale
    return tuple(int(math.ceil(e - h - 1e-9)) + 1 if e > h + 1e-9 else 0 for e, h in zip(extent, half))


def augmentation_transforms(output_shape_zyx: list[int] | tuple[int, ...],
                            config: AugmentationPlan) -> list:
    """The random part, in nnU-Net's order: spatial (rotation, scaling; no elastic), noise,
    blur, brightness, contrast, low-resolution simulation, gamma on the inverted image, gamma,
    mirroring. A transform whose probability is 0 is left out (it would still draw numbers).

    The spatial transform also centre-crops its input to `output_shape_zyx`, so a loader may
    hand it a larger region (`augmentation_margin`) to keep rotated corners filled with image.
    """
    from batchgenerators.transforms.color_transforms import (
        BrightnessMultiplicativeTransform,
        ContrastAugmentationTransform,
        GammaTransform,
    )
    from batchgenerators.transforms.noise_transforms import GaussianBlurTransform, GaussianNoiseTransform
    from batchgenerators.transforms.resample_transforms import SimulateLowResolutionTransform
    from batchgenerators.transforms.spatial_transforms import MirrorTransform, SpatialTransform

    rz, ry, rx = config.rotation_deg_zyx
    transforms = [
        SpatialTransform(
            list(output_shape_zyx), do_elastic_deform=False,
            # batchgenerators' angle_x turns about the first spatial axis (z here), in-plane
            do_rotation=any(config.rotation_deg_zyx), angle_x=_radians(rz), angle_y=_radians(ry),
            angle_z=_radians(rx), p_rot_per_sample=config.p_rotation,
            do_scale=True, scale=tuple(config.scale_range), p_scale_per_sample=config.p_scale,
            # order 1: cubic costs ~4x the time on whole volumes for no measurable gain here
            border_mode_data="constant", border_cval_data=0, order_data=1,
            border_mode_seg="constant", border_cval_seg=0, order_seg=0,
            random_crop=False),
        GaussianNoiseTransform(noise_variance=tuple(config.noise_variance), p_per_sample=config.p_noise)]
    if config.p_blur:
        transforms.append(GaussianBlurTransform(tuple(config.blur_sigma), different_sigma_per_channel=True,
                                                p_per_channel=config.p_blur_per_channel,
                                                p_per_sample=config.p_blur))
    transforms += [
        BrightnessMultiplicativeTransform(multiplier_range=tuple(config.brightness_range),
                                          p_per_sample=config.p_brightness),
        ContrastAugmentationTransform(contrast_range=tuple(config.contrast_range),
                                      p_per_sample=config.p_contrast)]
    if config.p_low_resolution:
        # nearest down, cubic up: nnU-Net's orders (a blocky, then smoothed, coarser scan)
        transforms.append(SimulateLowResolutionTransform(
            zoom_range=tuple(config.low_resolution_zoom), per_channel=True,
            p_per_channel=config.p_low_resolution_per_channel, order_downsample=0, order_upsample=3,
            p_per_sample=config.p_low_resolution))
    if config.p_gamma_inverted:
        transforms.append(GammaTransform(gamma_range=tuple(config.gamma_range), invert_image=True,
                                         per_channel=config.gamma_per_channel, retain_stats=True,
                                         p_per_sample=config.p_gamma_inverted))
    transforms.append(GammaTransform(gamma_range=tuple(config.gamma_range), invert_image=False,
                                     per_channel=config.gamma_per_channel, retain_stats=True,
                                     p_per_sample=config.p_gamma))
    if config.mirror_axes:
        transforms.append(MirrorTransform(axes=tuple(config.mirror_axes)))
    return transforms


def training_transforms(plans: Plans, output_shape_zyx: list[int] | tuple[int, ...],
                        inputs: TrainingInputs, config: AugmentationPlan | None = None,
                        augment: bool = True) -> Compose:
    """The whole pipeline from a cached crop to a `forward_train` batch.

    `config` defaults to `plans.training.augmentation`. `augment=False` gives the deterministic
    part only (targets, derived inputs, renaming): the input must then already have
    `output_shape_zyx`.
    """
    steps = []
    if augment:
        steps += augmentation_transforms(output_shape_zyx, config or plans.training.augmentation)
    steps.append(RegionTargets(plans.scheme, plans.target))
    if inputs.lr_image or inputs.guidance:
        steps.append(DerivedInputs(plans, inputs.lr_image, inputs.guidance))
    steps.append(ToTrainingBatch())
    return Compose(steps)
