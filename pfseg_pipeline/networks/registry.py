"""The network registry: one `NetworkSpec` per network, the one place that knows each network.

A spec answers everything the rest of the pipeline asks about a network: how to build it from
the plans, whether it sees the whole volume in one pass (patch-free) or patches through a
sliding window, which inputs the data loader derives for it (LR image, guidance patch), which
loss it trains with (honouring the ablation row), which builder options each ablation row
sets, and which modules only training runs. Every other module asks the spec; adding a
network is one entry in `NETWORKS` plus its module.

`build_network("pfseg", plans, use_sr=True, use_sgm=False)` builds a network from the plans
alone (no training code), which is how inference rebuilds a checkpoint's network from its
stored name and `network_options`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
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
from pfseg_pipeline.networks.losses import ABLATIONS, FULL, Ablation, PFSegLoss, SegmentationLoss
from pfseg_pipeline.networks.pfseg import build_pfseg


def _pfseg_loss(plans, ablation: str) -> PFSegLoss:
    t = plans.training
    bounded = t.aux_intensity == "bounded"   # plans.validate: then every modality has its range
    return PFSegLoss(t.loss_weights, ablation, t.ssl_pool,
                     [t.aux_intensity_range[m] for m in plans.modalities] if bounded else None)


def _segmentation_loss(plans, ablation: str) -> SegmentationLoss:
    return SegmentationLoss()


@dataclass(frozen=True)
class NetworkSpec:
    """What the pipeline needs to know about one network.

    builder : `plans, **options -> SegmentationNetwork`.
    patch_free : whole volume in one forward pass (trained on the HR volume, predicted whole);
        False: trained on `plans.patch_based` patches, predicted by a Gaussian sliding window.
    derives_lr_image : the loader derives the LR input from the augmented HR volume.
    guidance_option : the builder option that switches the SGM guidance patch on (the loader
        then cuts it), or None when the network never takes one.
    make_loss : `(plans, ablation) -> loss` with `compute(outputs, batch) -> (total, terms)`.
    ablations : the ablation rows (name -> loss terms and builder options) the network accepts;
        empty: only `full`, the network as specified.
    training_only : attributes (dotted paths) of the built network that `forward_infer` never
        runs (left out of the inference parameter count); None-valued ones are skipped. Every
        network has its deep-supervision heads among them (`deep_supervision` builder option).
    """

    name: str
    builder: Callable[..., nn.Module]
    patch_free: bool
    make_loss: Callable[[Any, str], nn.Module]
    derives_lr_image: bool = False
    guidance_option: str | None = None
    ablations: Mapping[str, Ablation] = field(default_factory=dict)
    training_only: tuple[str, ...] = ()

    def options(self, ablation: str = FULL) -> dict[str, Any]:
        """The builder options of an ablation row (`full`: the network as specified)."""
        if ablation in self.ablations:
            return self.ablations[ablation].network_options()
        if ablation == FULL:
            return {}
        if self.ablations:
            raise UserError(f"--ablation {ablation!r} is not a row of {self.name} "
                            f"(choose from {', '.join(self.ablations)})")
        with_rows = [n for n, s in NETWORKS.items() if s.ablations]
        raise UserError(f"--ablation {ablation} applies to --network {' or '.join(with_rows)} only")

    def takes_guidance(self, options: Mapping[str, Any]) -> bool:
        """Whether the network built with `options` takes an SGM guidance patch."""
        if self.guidance_option is None:
            return False
        default = inspect.signature(self.builder).parameters[self.guidance_option].default
        return bool(options.get(self.guidance_option, default))

    def input_shape(self, plans) -> list[int]:
        """The training input (z, y, x): the HR shape if patch-free, else the baseline patch."""
        return list(plans.hr_shape_zyx if self.patch_free else plans.patch_based.patch_shape_zyx)

    def batch_size(self, plans) -> int:
        """The planned training batch: PFSeg's for patch-free networks, the baselines' otherwise."""
        return plans.batch_size if self.patch_free else plans.patch_based.batch_size

    def _training_only_slots(self, model: nn.Module) -> list[tuple[nn.Module, str]]:
        """(owner, attribute) of each training-only module `model` holds, its dotted path walked."""
        slots = []
        for path in self.training_only:
            *parents, leaf = path.split(".")
            owner = model
            for name in parents:
                owner = getattr(owner, name, None)
            if owner is not None and getattr(owner, leaf, None) is not None:
                slots.append((owner, leaf))
        return slots

    def training_only_modules(self, model: nn.Module) -> list[nn.Module]:
        """The training-only modules `model` holds (`training_only`, dotted paths resolved)."""
        return [getattr(owner, leaf) for owner, leaf in self._training_only_slots(model)]

    def drop_training_only(self, model: nn.Module) -> nn.Module:
        """`model` without its training-only modules (each set to None), in place; returned."""
        for owner, leaf in self._training_only_slots(model):
            setattr(owner, leaf, None)
        return model


NETWORKS: dict[str, NetworkSpec] = {spec.name: spec for spec in (
    NetworkSpec("pfseg", build_pfseg, patch_free=True, make_loss=_pfseg_loss, derives_lr_image=True,
                guidance_option="use_sgm", ablations=ABLATIONS, training_only=("sr_decoder", "ds_heads")),
    NetworkSpec("unet3d", build_unet3d, patch_free=False, make_loss=_segmentation_loss,
                training_only=("unet.ds_heads",)),
    NetworkSpec("resunet3d", build_resunet3d, patch_free=False, make_loss=_segmentation_loss,
                training_only=("unet.ds_heads",)),
    NetworkSpec("vnet", build_vnet, patch_free=False, make_loss=_segmentation_loss,
                training_only=("ds_heads",)),
    NetworkSpec("resunet3d_up", build_resunet3d_up, patch_free=True, make_loss=_segmentation_loss,
                derives_lr_image=True, training_only=("unet.ds_heads",)),
    NetworkSpec("hdc", build_hdc, patch_free=True, make_loss=_segmentation_loss,
                training_only=("unet.ds_heads",)),
)}
# what `pfseg_train` and `pfseg_predict` use when no --network is given: the method itself
DEFAULT_NETWORK = "pfseg"


def planned_ablation(name: str, plans, requested: str | None = None) -> str:
    """The ablation row a run of `name` trains: `requested` when given, else the plans' own
    (`plans.training.pfseg_branches` for a network with rows, i.e. pfseg; `full` otherwise)."""
    if requested is not None:
        return requested
    return plans.training.pfseg_branches if network_spec(name).ablations else FULL


def training_options(name: str, plans, ablation: str = FULL) -> dict[str, Any]:
    """The builder options a training run of `name` uses: the ablation row's, plus
    `deep_supervision` when `plans.training.deep_supervision` asks for it. The trainer records
    them in its checkpoints, so inference rebuilds the same modules."""
    options = network_spec(name).options(ablation)
    if plans.training.deep_supervision:
        options["deep_supervision"] = True
    return options


def network_spec(name: str) -> NetworkSpec:
    """The spec of network `name`; an unknown name is a UserError listing the choices."""
    try:
        return NETWORKS[name]
    except KeyError:
        raise UserError(f"unknown network {name!r} (choose from {', '.join(NETWORKS)})") from None


def build_network(name: str, plans, **options: Any) -> nn.Module:
    """The network `name` built from `plans`; `options` are builder options (pfseg: use_sr, use_sgm).

    The module has `forward_train`, `forward_infer`, `options` (dict, for the checkpoint),
    `divisor_zyx` and `network_name` (its registry name, the key to its spec).
    """
    builder = network_spec(name).builder
    try:
        inspect.signature(builder).bind(plans, **options)
    except TypeError:
        accepted = [p for p in inspect.signature(builder).parameters if p != "plans"]
        raise UserError(f"network {name!r} takes the options {accepted or 'none'}, got "
                        f"{sorted(options)}") from None
    model = builder(plans, **options)
    model.network_name = name
    return model


def spec_of(model: nn.Module) -> NetworkSpec:
    """The spec of a network made by `build_network` (unwrapping DDP)."""
    return network_spec(getattr(getattr(model, "module", model), "network_name", type(model).__name__))


def example_batch(name: str, plans, batch_size: int, device: torch.device | str | None = None,
                  dtype: torch.dtype | None = None, options: Mapping[str, Any] | None = None
                  ) -> dict[str, torch.Tensor]:
    """A random training batch at the planned shape (what the data loader yields for `name`).

    `image` (B, C, ...) in [0, 1), `target` (B, K, ...) 0/1, and the inputs the spec derives:
    `lr_image`, and `guidance_origin_zyx` + `guidance_patch` when the network built with
    `options` takes guidance. Tensor operations only, so it also works under FakeTensorMode.
    """
    spec = network_spec(name)
    dtype = dtype or torch.float32
    shape = spec.input_shape(plans)
    image = torch.rand(batch_size, plans.in_channels, *shape, device=device, dtype=dtype)
    target = (torch.rand(batch_size, plans.out_channels, *shape, device=device) > 0.5).to(dtype)
    batch = {"image": image, "target": target}
    if spec.derives_lr_image:
        batch["lr_image"] = lr_from_hr(image, plans.lr_scale_zyx, plans.lr_operator)
    if spec.takes_guidance(options or {}):
        patch = plans.guidance.patch_shape_zyx
        origin = guidance_origin(image, patch, plans.guidance.location)
        batch["guidance_origin_zyx"] = origin
        batch["guidance_patch"] = cut_guidance(image, origin, patch)
    return batch


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (every element of every distinct parameter tensor)."""
    return sum(p.numel() for p in module.parameters())


def inference_parameter_count(model: nn.Module) -> int:
    """Parameters that `forward_infer` uses: all but the spec's training-only modules."""
    skipped = {id(p) for m in spec_of(model).training_only_modules(model) for p in m.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in skipped)
