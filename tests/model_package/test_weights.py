"""Inference-only weights: the training-only modules left out, the same logits, safetensors only."""

from __future__ import annotations

import json

import pytest
import torch

from pfseg_pipeline.checkpoints import load_weights
from pfseg_pipeline.errors import UserError
from pfseg_pipeline.fileio import write_bytes
from pfseg_pipeline.model_package.weights import (
    build_inference_network,
    inference_network,
    read_weights,
    safetensors_problem,
    weights_bytes,
)
from pfseg_pipeline.networks.registry import build_network, count_parameters, inference_parameter_count
from tests.inference.conftest import tiny_plans


def _image(shape=(1, 2, 16, 24, 16), seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_pfseg_ships_without_its_sr_decoder_and_predicts_the_same(tmp_path):
    plans = tiny_plans()
    full = build_network("pfseg", plans).eval()
    expected_count = inference_parameter_count(full)
    image = _image()
    with torch.no_grad():
        expected = full.forward_infer(image)
    data = weights_bytes(inference_network(full), {"fold": "0"})
    assert full.sr_decoder is None and count_parameters(full) == expected_count
    write_bytes(tmp_path / "w.safetensors", data)
    state = read_weights(tmp_path / "w.safetensors")
    assert state and not any(k.startswith("sr_decoder.") for k in state)
    assert sum(t.numel() for t in state.values()) == expected_count
    # the header is JSON (names, shapes, offsets) and carries the metadata: nothing to unpickle
    header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])
    assert header["__metadata__"] == {"format": "pt", "fold": "0"}
    rebuilt = build_inference_network("pfseg", plans, {"use_sr": True, "use_sgm": True}).eval()
    load_weights(rebuilt, state, tmp_path / "w.safetensors", "tiny plans")       # strict
    with torch.no_grad():
        assert torch.equal(rebuilt.forward_infer(image), expected)


def test_a_network_without_training_only_modules_ships_whole(tmp_path):
    model = build_network("resunet3d", tiny_plans()).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    write_bytes(tmp_path / "w.safetensors", weights_bytes(inference_network(model)))
    state = read_weights(tmp_path / "w.safetensors")
    assert state.keys() == before.keys() and all(torch.equal(state[k], before[k]) for k in before)


def test_unreadable_weights_are_one_clear_error(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    assert "not a well-formed safetensors file" in safetensors_problem(bad)
    with pytest.raises(UserError, match="bad.safetensors: not a readable safetensors file"):
        read_weights(bad)
    with pytest.raises(UserError, match="missing.safetensors: weights not found"):
        read_weights(tmp_path / "missing.safetensors")
