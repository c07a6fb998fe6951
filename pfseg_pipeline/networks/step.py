"""The one training step, and the optimiser it steps, built from the plans (torch only).

`train_step` is what the trainer runs every iteration, what the memory model traces under
FakeTensorMode and what the GPU check times on CUDA:

    zero_grad (the previous step's gradients freed before the forward pass, not kept through
    it) -> forward_train under autocast (float16 when `amp`) -> outputs to float32 -> the
    network's loss (float32) -> backward through the GradScaler -> unscale + clip the gradient
    norm -> optimiser step (skipped by the scaler on an overflow) -> scaler update

It imports nothing beyond torch and the networks, so the GPU machine (torch and numpy only)
runs it, and no copy of it exists anywhere else.

The optimiser comes from `plans.training` (`optimizer`, `lr`, `weight_decay`, and `momentum` for
SGD, always with Nesterov momentum) through `OPTIMIZERS`, one factory per name.

The memory layout of the weights and the batch is `step_memory_format(device)`: channels-last
on a CPU, where oneDNN's 3D convolutions run faster in it (bench/memory_format.py), torch's
default elsewhere. The memory model traces the default layout: the GPU's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from pfseg_pipeline.errors import UserError
from pfseg_pipeline.networks.losses import FULL
from pfseg_pipeline.networks.registry import build_network, example_batch, network_spec, training_options


def _adam(parameters: Iterable[Tensor], training, fused: bool | None) -> torch.optim.Optimizer:
    return torch.optim.Adam(parameters, lr=training.lr, weight_decay=training.weight_decay, fused=fused)


def _sgd(parameters: Iterable[Tensor], training, fused: bool | None) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum (nnU-Net's: lr 1e-2, momentum 0.99, weight decay 3e-5)."""
    return torch.optim.SGD(parameters, lr=training.lr, momentum=training.momentum, nesterov=True,
                           weight_decay=training.weight_decay, fused=fused)


# plans.training.optimizer -> (parameters, training plan, fused) -> optimiser. `fused`: None for
# torch's default implementation; True for one fused kernel per step (the memory model's choice).
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {"adam": _adam, "sgd": _sgd}


def make_optimizer(parameters: Iterable[Tensor], training,
                   fused: bool | None = None) -> torch.optim.Optimizer:
    """The optimiser `training.optimizer` names (a `TrainingPlan`), with its lr and weight decay."""
    try:
        factory = OPTIMIZERS[training.optimizer]
    except KeyError:
        raise UserError(f"plans.json: field 'training.optimizer' must be one of {', '.join(OPTIMIZERS)}, "
                        f"got {training.optimizer!r}") from None
    return factory(parameters, training, fused)


def step_memory_format(device: torch.device | str) -> torch.memory_format:
    """The layout the trainer keeps the weights and batches in on `device`: channels-last
    (N, Z, Y, X, C in memory) on a CPU, where a training step of PFSeg at the demo's plan takes
    0.6-0.8 of its time in torch's default layout (oneDNN's 3D convolution kernels, the
    backward ones most; InstanceNorm still copies to the default layout and back); the default
    elsewhere, where it is unmeasured (bench/memory_format.py measures it on the CPU;
    bench/gpu_check.py times both layouts on a GPU, and has not yet been run on one)."""
    return torch.channels_last_3d if torch.device(device).type == "cpu" else torch.contiguous_format


def to_memory_format(batch: Mapping[str, Any], memory_format: torch.memory_format) -> dict[str, Any]:
    """`batch` with its 5-D floating tensors (image, target, LR image, guidance patch) in
    `memory_format`; everything else as it is. The values are the same, only their order in
    memory differs."""
    return {k: v.contiguous(memory_format=memory_format)
            if isinstance(v, Tensor) and v.dim() == 5 and torch.is_floating_point(v) else v
            for k, v in batch.items()}


def _to_float(value: Any) -> Any:
    """Floating tensors to float32, through lists and tuples (deep-supervision outputs)."""
    if isinstance(value, Tensor):
        return value.float() if torch.is_floating_point(value) else value
    if isinstance(value, (list, tuple)):
        return type(value)(_to_float(v) for v in value)
    return value


def train_step(model: nn.Module, batch: Mapping[str, Tensor], loss, optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, grad_clip: float | None, amp: bool,
               parameters: Iterable[Tensor] | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """One optimisation step of `model` on `batch`; returns (total loss, {term: loss tensor}).

    Parameters
    ----------
    model : a network (or its DDP wrapper) whose `forward(batch dict)` runs `forward_train`.
    batch : `image` (B, C, Z, Y, X), `target` (B, K, Z, Y, X) and derived inputs, on the device.
    loss : the network's loss, `compute(outputs, batch) -> (total, terms)` in float32.
    optimizer, scaler : the scaler is disabled (a pass-through) when `amp` is off.
    grad_clip : max global gradient norm (`plans.training.grad_clip`); None or 0: no clipping.
    amp : float16 autocast on the batch's device.
    parameters : what to clip (default: `model.parameters()`).

    The terms stay on the device (no host synchronisation).
    """
    device_type = batch["image"].device.type
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device_type, dtype=torch.float16, enabled=amp):
        outputs = model(batch)  # forward(dict) dispatches to forward_train, through DDP too
    outputs = {k: _to_float(v) for k, v in outputs.items()}
    total, terms = loss.compute(outputs, batch)
    scaler.scale(total).backward()
    if grad_clip:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters() if parameters is None else parameters, grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return total, terms


@dataclass
class TrainingStep:
    """A network, its optimiser, loss and scaler with one batch: calling it runs `train_step`."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    loss: nn.Module
    scaler: torch.amp.GradScaler
    batch: dict[str, Tensor]
    grad_clip: float | None
    amp: bool

    def __call__(self) -> tuple[Tensor, dict[str, Tensor]]:
        return train_step(self.model, self.batch, self.loss, self.optimizer, self.scaler, self.grad_clip,
                          self.amp)


def build_step(network: str, plans, batch_size: int, *, ablation: str = FULL, amp: bool = False,
               device: torch.device | str | None = None, fused: bool | None = None,
               memory_format: torch.memory_format = torch.contiguous_format) -> TrainingStep:
    """The training step of `network` as the plans define it, on a random batch at the planned
    shape (`registry.example_batch`): weights drawn first, then the batch, from torch's generator.

    `amp` enables float16 autocast and the GradScaler; `fused` picks the optimiser's
    implementation (see `OPTIMIZERS`); `memory_format` the layout of the weights and the batch
    (the default: what the memory model traces; the trainer's is `step_memory_format`). Tensor
    operations only: it builds under FakeTensorMode.
    """
    spec = network_spec(network)
    options = training_options(network, plans, ablation)
    model = build_network(network, plans, **options).train()
    if device is not None:
        model = model.to(device)
    if memory_format != torch.contiguous_format:
        model = model.to(memory_format=memory_format)
    optimizer = make_optimizer(model.parameters(), plans.training, fused=fused)
    batch = to_memory_format(example_batch(network, plans, batch_size, device=device, options=options),
                             memory_format)
    scaler = torch.amp.GradScaler(batch["image"].device.type, enabled=amp)
    return TrainingStep(model, optimizer, spec.make_loss(plans, ablation), scaler, batch,
                        plans.training.grad_clip or None, amp)
