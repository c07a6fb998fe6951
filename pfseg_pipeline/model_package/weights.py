"""Inference-only weights in safetensors: what prediction needs of a network, and no pickle.

A checkpoint's `model` state holds every module the network was trained with; prediction runs
`forward_infer`, which never touches the modules its spec lists as training-only (PFSeg's SR
decoder, about a third of its weights at the paper's widths). `inference_network` removes them
from a built network; its state_dict is then exactly what a package stores, and what a network
built from the same plans and options, with the same modules removed, loads strictly.

safetensors is a flat header (JSON: names, dtypes, shapes, offsets) followed by raw tensor
bytes; reading it never runs code, unlike a `torch.save` file (a pickle).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pfseg_pipeline.errors import UserError, first_line
from pfseg_pipeline.networks.registry import build_network, spec_of

log = logging.getLogger(__name__)


def inference_network(model: nn.Module) -> nn.Module:
    """`model` with its spec's training-only modules removed (set to None), in place; returned.

    `forward_infer` gives the same logits as before: it never runs those modules.
    """
    return spec_of(model).drop_training_only(model)


def build_inference_network(network: str, plans, options: dict[str, Any]) -> nn.Module:
    """The network `network` built from `plans` with `options`, without its training-only modules."""
    return inference_network(build_network(network, plans, **options))


def weights_bytes(model: nn.Module, metadata: dict[str, str] | None = None) -> bytes:
    """The state_dict of `model` (built by `inference_network`) as safetensors bytes.

    `metadata`: strings stored in the header (network, fold, checkpoint).
    """
    from safetensors.torch import save

    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    return save(state, metadata={"format": "pt", **(metadata or {})})


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; an unreadable one is a UserError naming it."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: weights not found")
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:     # safetensors raises its own SafetensorError, not exported
        raise UserError(f"{path}: not a readable safetensors file ({first_line(exc, 200)})") from None


def safetensors_problem(path: str | Path) -> str | None:
    """What is wrong with a safetensors file's header (None when the library reads it)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            f.keys()
    except Exception as exc:
        return f"is not a well-formed safetensors file ({first_line(exc, 200)})"
    return None
