"""The network inputs derived from an HR volume: the LR input and the SGM guidance patch.

This is the ONE definition of the LR operator and of the guidance cutter; the data loader
(training) and the predictor (inference) both call these functions, so the LR input always
agrees with the HR volume it came from (a defect of the original code was to resample the two
separately).

Every function works on batches (B, C, Z, Y, X) with tensor operations only (no `.item()`),
so it also runs under `FakeTensorMode` (the planner's memory model) and on any device.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

LR_OPERATORS = ("avgpool", "trilinear")
GUIDANCE_LOCATIONS = ("center", "textured")
# A textured guidance window must be at least this fraction brain, so the variance measures
# tissue texture and not the brain/background edge.
MIN_BRAIN_FRACTION = 0.5


def _triple(value: Sequence[int] | int, name: str) -> tuple[int, int, int]:
    if isinstance(value, int):
        value = (value,) * 3
    out = tuple(int(v) for v in value)
    if len(out) != 3 or any(v < 1 for v in out):
        raise ValueError(f"{name} must be three positive integers (z, y, x), got {tuple(value)}")
    return out


def lr_from_hr(hr: Tensor, scale_zyx: Sequence[int] | int, operator: str = "avgpool") -> Tensor:
    """Low-resolution input (B, C, Z/sz, Y/sy, X/sx) derived from an HR volume (B, C, Z, Y, X).

    - "avgpool": area down-sampling, the mean of each sz x sy x sx block (anti-aliased);
      the default.
    - "trilinear": `F.interpolate(size=hr // scale, mode="trilinear", align_corners=False)`,
      the paper's linear resampling.

    The HR size must be a multiple of the scale on every axis (the planner's HR shapes are).

    >>> lr_from_hr(torch.ones(1, 1, 4, 4, 4), (1, 2, 2)).shape
    torch.Size([1, 1, 4, 2, 2])
    """
    scale = _triple(scale_zyx, "scale_zyx")
    if hr.dim() != 5:
        raise ValueError(f"expected an HR batch (B, C, Z, Y, X), got shape {tuple(hr.shape)}")
    spatial = tuple(hr.shape[2:])
    if any(n % s for n, s in zip(spatial, scale)):
        raise ValueError(f"HR shape {spatial} is not a multiple of the LR scale {scale}")
    if operator not in LR_OPERATORS:
        raise ValueError(f"LR operator must be one of {LR_OPERATORS}, got {operator!r}")
    if scale == (1, 1, 1):
        return hr
    if operator == "avgpool":
        return F.avg_pool3d(hr, kernel_size=scale, stride=scale)
    size = tuple(n // s for n, s in zip(spatial, scale))
    return F.interpolate(hr, size=size, mode="trilinear", align_corners=False)


def _check_patch(hr_spatial: Sequence[int], patch: tuple[int, int, int]) -> None:
    if any(p > n for p, n in zip(patch, hr_spatial)):
        raise ValueError(f"guidance patch {patch} does not fit in the volume {tuple(hr_spatial)}")


def center_origin(hr: Tensor, patch_zyx: Sequence[int]) -> Tensor:
    """Origin (B, 3) int64 of the patch centred in the volume (the paper's rule).

    While a tracer records it (ONNX / TorchScript export), the corner is computed from the
    image's shape tensor: a tensor built from Python numbers would be recorded as a constant,
    and the exported graph would keep the example shape's origin for every input.
    """
    patch = _triple(patch_zyx, "patch_zyx")
    spatial = tuple(hr.shape[2:])
    _check_patch(spatial, patch)
    if torch.jit.is_tracing():
        sizes = torch._shape_as_tensor(hr)[2:].to(torch.long)          # recorded as Shape
        corner = torch.div(sizes - torch.tensor(patch, dtype=torch.long), 2, rounding_mode="floor")
        return corner.unsqueeze(0).expand(hr.shape[0], 3)
    corner = [(n - p) // 2 for n, p in zip(spatial, patch)]
    return torch.tensor(corner, dtype=torch.long, device=hr.device).expand(hr.shape[0], 3).clone()


def textured_origin(hr: Tensor, patch_zyx: Sequence[int], stride_zyx: Sequence[int] | None = None) -> Tensor:
    """Origin (B, 3) int64 of the most textured brain window on a coarse grid.

    Candidate windows of the patch size start on a grid of step `stride_zyx` (default half the
    patch). Brain = voxels where any channel is non-zero. Among windows that are at least
    `MIN_BRAIN_FRACTION` brain (or, failing that, as brain as the best window), the one with the
    highest intensity variance over its brain voxels, averaged over channels, wins (the first on
    ties). A volume with no brain at all gets the centre patch.
    """
    patch = _triple(patch_zyx, "patch_zyx")
    spatial = tuple(hr.shape[2:])
    _check_patch(spatial, patch)
    if stride_zyx is None:
        stride = tuple(max(1, p // 2) for p in patch)
    else:
        stride = _triple(stride_zyx, "stride_zyx")
    image = hr.detach().float()
    brain = (image != 0).any(dim=1, keepdim=True).float()                  # (B, 1, Z, Y, X)
    masked = image * brain
    pool = dict(kernel_size=patch, stride=stride)
    fraction = F.avg_pool3d(brain, **pool)                                # (B, 1, gz, gy, gx)
    mean_x = F.avg_pool3d(masked, **pool)                                 # over the whole window
    mean_x2 = F.avg_pool3d(masked * masked, **pool)
    safe = fraction.clamp_min(1e-12)
    brain_mean = mean_x / safe
    variance = (mean_x2 / safe - brain_mean * brain_mean).clamp_min(0).mean(dim=1, keepdim=True)
    variance = torch.where(fraction > 0, variance, torch.zeros_like(variance))
    b = hr.shape[0]
    grid = fraction.shape[2:]
    best_fraction = fraction.reshape(b, -1).amax(dim=1)                  # (B,)
    threshold = best_fraction.clamp(max=MIN_BRAIN_FRACTION - 1e-6).view(b, 1, 1, 1, 1)
    score = torch.where(fraction >= threshold, variance, torch.full_like(variance, -1.0))
    flat = score.reshape(b, -1).argmax(dim=1)                              # (B,)
    gy_gx = grid[1] * grid[2]
    index = torch.stack([flat // gy_gx, (flat // grid[2]) % grid[1], flat % grid[2]], dim=1)
    origin = index * torch.tensor(stride, dtype=torch.long, device=hr.device)
    return torch.where((best_fraction > 0).view(b, 1), origin, center_origin(hr, patch))


def guidance_origin(hr: Tensor, patch_zyx: Sequence[int], location: str = "center") -> Tensor:
    """Origin (B, 3) int64, (z, y, x) voxel of the patch corner, of the guidance patch.

    `location` is the plan's rule: "center" (the paper) or "textured" (the journal follow-up's
    search for the most textured brain region, see `textured_origin`).
    """
    if location == "center":
        return center_origin(hr, patch_zyx)
    if location == "textured":
        return textured_origin(hr, patch_zyx)
    raise ValueError(f"guidance location must be one of {GUIDANCE_LOCATIONS}, got {location!r}")


def cut_guidance(hr: Tensor, origin: Tensor, patch_zyx: Sequence[int]) -> Tensor:
    """The guidance patches (B, C, pz, py, px) of `hr` (B, C, Z, Y, X) starting at `origin` (B, 3).

    Each sample has its own origin. Gathered with index tensors, so no host synchronisation.
    """
    patch = _triple(patch_zyx, "patch_zyx")
    _check_patch(hr.shape[2:], patch)
    origin = origin.to(device=hr.device, dtype=torch.long)
    b = hr.shape[0]
    if tuple(origin.shape) != (b, 3):
        raise ValueError(f"origin must have shape ({b}, 3), got {tuple(origin.shape)}")
    iz, iy, ix = (origin[:, axis, None] + torch.arange(patch[axis], device=hr.device) for axis in range(3))
    batch_index = torch.arange(b, device=hr.device).view(b, 1, 1, 1)
    # Advanced indices separated by the channel slice put their dims first: (B, pz, py, px, C).
    patches = hr[batch_index, :, iz.view(b, -1, 1, 1), iy.view(b, 1, -1, 1), ix.view(b, 1, 1, -1)]
    return patches.permute(0, 4, 1, 2, 3).contiguous()


def guidance_mask(shape: Sequence[int], origin: Tensor, patch_zyx: Sequence[int],
                  dtype: torch.dtype = torch.float32) -> Tensor:
    """Mask (B, 1, Z, Y, X), 1 inside each sample's guidance patch and 0 elsewhere.

    `shape` is the HR spatial shape (Z, Y, X) or a full batch shape (B, C, Z, Y, X); B is taken
    from `origin` (B, 3). The mask lives on `origin`'s device.
    """
    spatial = tuple(int(n) for n in tuple(shape)[-3:])
    patch = _triple(patch_zyx, "patch_zyx")
    _check_patch(spatial, patch)
    origin = origin.to(dtype=torch.long)
    b = origin.shape[0]
    inside = []
    for axis in range(3):
        coords = torch.arange(spatial[axis], device=origin.device).view(1, -1)
        start = origin[:, axis, None]
        inside.append((coords >= start) & (coords < start + patch[axis]))   # (B, n_axis)
    mask = inside[0].view(b, -1, 1, 1) & inside[1].view(b, 1, -1, 1) & inside[2].view(b, 1, 1, -1)
    return mask.unsqueeze(1).to(dtype)
