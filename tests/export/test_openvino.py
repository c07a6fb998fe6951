"""The OpenVINO runner: the same ONNX export gives PyTorch's logits at other shapes, in float32,
with nested means that OpenVINO cannot merge into one imprecise mean.

Skipped without the optional extra (`pip install 'pfseg[openvino]'`)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("onnx")
ov = pytest.importorskip("openvino")

from pfseg_pipeline.errors import UserError  # noqa: E402
from pfseg_pipeline.export.onnx_export import export_onnx, onnx_bytes  # noqa: E402
from pfseg_pipeline.export.openvino_runtime import OpenVinoRunner  # noqa: E402
from pfseg_pipeline.export.rewrites import NestedMeanInstanceNorm3d  # noqa: E402
from pfseg_pipeline.parallel import available_cores  # noqa: E402


def _onnx(module: nn.Module, example: torch.Tensor) -> bytes:
    import io

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                 # the TorchScript-based exporter's deprecation
        torch.onnx.export(module, (example,), buffer, dynamo=False, opset_version=17, input_names=["x"],
                          dynamic_axes={"x": {2: "z", 3: "y", 4: "x"}})
    return buffer.getvalue()


def test_openvino_matches_pytorch_at_another_shape(tmp_path, case, build_case, make_image, same_logits):
    name, options = case
    network, plans, planned = build_case(name, **options)
    runner = OpenVinoRunner(export_onnx(network, tmp_path / "model.onnx", plans.in_channels, planned))
    assert runner.network_name == name and runner.divisor_zyx == network.divisor_zyx
    for batch, shape in [(2, (planned[0] * 3 // 2, planned[1] * 2, planned[2])), (1, planned)]:
        image = make_image(batch, shape)
        with torch.no_grad():
            first = runner.forward_infer(image)
            same_logits(first, network.forward_infer(image))
    # the result of a call is the caller's: a later call does not overwrite it
    kept = first.clone()
    runner.forward_infer(make_image(1, planned) + 1)
    assert torch.equal(first, kept)


def test_the_nested_mean_norm_stays_exact_after_a_convolution():
    """After a convolution OpenVINO keeps tensors in a blocked layout, where one float32 mean over
    all 64 x 96 x 80 voxels is off by about 1e-3 (the chained `.mean().mean().mean()` form, which
    it merges into that one mean, was); the nested means as written stay within 1e-5."""
    torch.manual_seed(0)
    conv = nn.Conv3d(4, 16, 3, padding=1)
    module = nn.Sequential(conv, NestedMeanInstanceNorm3d(nn.InstanceNorm3d(16))).eval()
    image = torch.randn(1, 4, 64, 96, 80) + 3.0          # a mean far from 0, as in a brain
    with torch.no_grad():
        exact = nn.functional.instance_norm(conv.double()(image.double()), eps=1e-5)
        conv.float()
    core = ov.Core()
    compiled = core.compile_model(core.read_model(_onnx(module, image)), "CPU",
                                  {"INFERENCE_NUM_THREADS": 2, "INFERENCE_PRECISION_HINT": "f32"})
    got = compiled.create_infer_request().infer({0: image.numpy()})[compiled.output(0)]
    assert float(np.abs(got - exact.numpy()).max()) < 1e-4


def test_the_runner_computes_in_float32_on_every_allowed_cpu(build_case):
    network, plans, planned = build_case("hdc")
    data = onnx_bytes(network, plans.in_channels, planned)
    runner = OpenVinoRunner(data)
    assert runner.threads == available_cores() == runner.compiled.get_property("INFERENCE_NUM_THREADS")
    assert str(runner.compiled.get_property("INFERENCE_PRECISION_HINT")) == "<Type: 'float32'>"
    assert OpenVinoRunner(data, threads=1).compiled.get_property("INFERENCE_NUM_THREADS") == 1


def test_a_file_that_is_not_a_pfseg_onnx_export_is_refused(tmp_path):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00not a model")
    with pytest.raises(UserError, match="garbage.onnx: not a loadable ONNX model"):
        OpenVinoRunner(garbage)
    plain = tmp_path / "plain.onnx"
    plain.write_bytes(_onnx(nn.Conv3d(1, 1, 1), torch.zeros(1, 1, 2, 2, 2)))
    with pytest.raises(UserError, match="plain.onnx: an ONNX model without pfseg metadata"):
        OpenVinoRunner(plain)


def test_without_openvino_the_runner_names_the_extra(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_openvino(name, *args, **kwargs):
        if name == "openvino":
            raise ImportError("No module named 'openvino'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_openvino)
    with pytest.raises(UserError, match=r"needs the optional packages openvino and onnx: "
                                        r"pip install 'pfseg\[openvino\]'"):
        OpenVinoRunner(b"anything")
