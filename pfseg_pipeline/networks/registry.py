"""Network registry: a plain dict of builders, `plans -> nn.Module`.

`build_network("pfseg", plans, use_sr=True, use_sgm=False)` builds a network from the plans
alone (no training code), which is how inference rebuilds a checkpoint's network from its
stored name and `network_options`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from pfseg_pipeline.errors import UserError
from pfseg_pipeline.networks.baselines import (
    build_hdc,
    build_resunet3d,
    build_resunet3d_up,
    build_unet3d,
    build_vnet,
)
from pfseg_pipeline.networks.inputs import cut_guidance, guidance_origin, lr_from_hr
from pfseg_pipeline.networks.pfseg import build_pfseg

NETWORKS: dict[str, Callable[..., nn.Module]] = {
    "pfseg": build_pfseg,
    "resunet3d": build_resunet3d,
    "unet3d": build_unet3d,
    "vnet": build_vnet,
    "hdc": build_hdc,
    "resunet3d_up": build_resunet3d_up,
}
# Whole volume in one forward pass; the others are trained on patches and slide a window.
PATCH_FREE = frozenset({"pfseg", "resunet3d_up", "hdc"})


def _builder(name: str) -> Callable[..., nn.Module]:
    try:
        return NETWORKS[name]
    except KeyError:
        raise UserError(f"unknown network {name!r} (choose from {', '.join(NETWORKS)})") from None


def build_network(name: str, plans, **options: Any) -> nn.Module:
    """The network `name` built from `plans`; `options` are builder options (pfseg: use_sr, use_sgm).

    The module has `forward_train`, `forward_infer`, `options` (dict, for the checkpoint),
    `divisor_zyx` and `patch_free`.
    """
    builder = _builder(name)
    try:
        inspect.signature(builder).bind(plans, **options)
    except TypeError:
        accepted = [p for p in inspect.signature(builder).parameters if p != "plans"]
        raise UserError(f"network {name!r} takes the options {accepted or 'none'}, got "
                        f"{sorted(options)}") from None
    model = builder(plans, **options)
    model.network_name = name
    return model


def input_shape(name: str, plans) -> list[int]:
    """The planned training input shape (z, y, x): HR shape if patch-free, else the patch shape."""
    _builder(name)
    return list(plans.hr_shape_zyx if name in PATCH_FREE else plans.patch_based.patch_shape_zyx)


def example_batch(name: str, plans, batch_size: int, device: torch.device | str | None = None,
                  dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """A random training batch at the planned shape (what the data loader yields for `name`).

    `image` (B, C, ...) in [0, 1), `target` (B, K, ...) 0/1; pfseg also gets `lr_image`,
    `guidance_origin_zyx` and `guidance_patch`, resunet3d_up `lr_image`, as the loader derives
    them. Tensor operations only, so it also works under FakeTensorMode.
    """
    dtype = dtype or torch.float32
    shape = input_shape(name, plans)
    image = torch.rand(batch_size, plans.in_channels, *shape, device=device, dtype=dtype)
    target = (torch.rand(batch_size, plans.out_channels, *shape, device=device) > 0.5).to(dtype)
    batch = {"image": image, "target": target}
    if name in ("pfseg", "resunet3d_up"):
        batch["lr_image"] = lr_from_hr(image, plans.lr_scale_zyx, plans.lr_operator)
    if name == "pfseg":
        patch = plans.guidance.patch_shape_zyx
        origin = guidance_origin(image, patch, plans.guidance.location)
        batch["guidance_origin_zyx"] = origin
        batch["guidance_patch"] = cut_guidance(image, origin, patch)
    return batch


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (every element of every distinct parameter tensor)."""
    return sum(p.numel() for p in module.parameters())


def inference_parameter_count(model: nn.Module) -> int:
    """Parameters that `forward_infer` uses: all but the training-only modules (PFSeg's SR decoder)."""
    training_only = getattr(model, "training_only_modules", lambda: [])()
    skipped = {id(p) for m in training_only for p in m.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in skipped)
