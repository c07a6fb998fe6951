"""The exported backends (ONNX Runtime, OpenVINO) under the predictor: whole volume and sliding
window give PyTorch's probabilities; the device rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pfseg_pipeline.errors import UserError
from pfseg_pipeline.inference.backends import OnnxModule, backend_device, check_backend, to_backend
from pfseg_pipeline.inference.predictor import Predictor
from pfseg_pipeline.networks.registry import build_network, network_spec

from .conftest import tiny_plans


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("network", ["pfseg", "resunet3d", "hdc"])
def test_the_predictor_on_an_exported_backend_gives_pytorchs_probabilities(network, backend):
    pytest.importorskip(backend)
    plans = tiny_plans()
    models = [build_network(network, plans).eval() for _ in range(2)]
    onnx = to_backend(models, plans, network, backend, threads=1)
    assert all(isinstance(m, OnnxModule) and m.divisor_zyx == models[0].divisor_zyx for m in onnx)
    # larger than the exported shape (HR 16^3, patch 8^3) on every axis and a multiple of it on
    # none: padding; for the patch-based network 16 windows (8 mirrors each), in batches
    shape = (20, 30, 17) if network_spec(network).patch_free else (12, 18, 10)
    image = torch.randn(2, *shape, generator=torch.Generator().manual_seed(3)).numpy()
    eager = Predictor(models, plans, network, device="cpu", tta=True).predict_preprocessed(image)
    ort = Predictor(onnx, plans, network, device="cpu", tta=True).predict_preprocessed(image)
    assert ort.shape == eager.shape == (3, *shape)
    assert float(np.abs(ort - eager).max()) < 1e-4
    assert to_backend(models, plans, network, "torch") == models


def test_which_device_each_backend_runs_on():
    assert backend_device("onnxruntime", "auto") == "cpu"
    assert backend_device("onnxruntime", "cpu") == "cpu" and backend_device("openvino", "auto") == "cpu"
    assert backend_device("torch", "cuda:1") == "cuda:1" and backend_device(None, "auto") == "auto"
    with pytest.raises(UserError, match="--backend onnxruntime runs on the CPU"):
        backend_device("onnxruntime", "cuda")
    with pytest.raises(UserError, match="--backend openvino runs on the CPU"):
        backend_device("openvino", "cuda:0")
    with pytest.raises(UserError, match="--backend 'tensorrt': choose from torch, onnxruntime, openvino"):
        check_backend("tensorrt")
