"""ONNX export and the ONNX Runtime runner: the graph gives PyTorch's logits at other shapes.

Skipped without the optional extra (`pip install 'pfseg[onnx]'`)."""

from __future__ import annotations

import warnings

import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from pfseg_pipeline.errors import UserError  # noqa: E402
from pfseg_pipeline.export.onnx_export import export_onnx, onnx_bytes  # noqa: E402
from pfseg_pipeline.export.onnx_runtime import OnnxRunner  # noqa: E402
from pfseg_pipeline.parallel import available_cores  # noqa: E402


def _other_shape(planned):
    """A shape unlike the export (planned) shape: 1.5x along z, 2x along y."""
    return (planned[0] * 3 // 2, planned[1] * 2, planned[2])


def _op_types(data: bytes) -> set[str]:
    return {node.op_type for node in onnx.load_from_string(data).graph.node}


def test_onnx_export_matches_pytorch_at_another_shape(tmp_path, case, build_case, make_image, same_logits):
    name, options = case
    network, plans, planned = build_case(name, **options)
    runner = OnnxRunner(export_onnx(network, tmp_path / "model.onnx", plans.in_channels, planned))
    assert runner.network_name == name and runner.divisor_zyx == network.divisor_zyx
    for batch, shape in [(2, _other_shape(planned)), (1, planned)]:
        image = make_image(batch, shape)
        with torch.no_grad():
            same_logits(runner.forward_infer(image), network.forward_infer(image))


@pytest.mark.parametrize("rewrite", [True, False])
def test_the_export_with_and_without_the_rewrites(build_case, make_image, same_logits, rewrite):
    network, plans, planned = build_case("pfseg")
    data = onnx_bytes(network, plans.in_channels, planned, rewrite=rewrite)
    ops = _op_types(data)
    assert ("ConvTranspose" in ops) is not rewrite
    assert ("InstanceNormalization" in ops) is not rewrite
    assert {"Conv", "Resize", "AveragePool", "ReduceMean" if rewrite else "ConvTranspose"} <= ops
    image = make_image(1, (64, 48, 32))
    with torch.no_grad():
        same_logits(OnnxRunner(data)(image), network.forward_infer(image))


def test_the_runner_uses_every_allowed_cpu_and_all_graph_optimisations(build_case):
    network, plans, planned = build_case("hdc")
    runner = OnnxRunner(onnx_bytes(network, plans.in_channels, planned))
    options = runner.session.get_session_options()
    assert runner.threads == options.intra_op_num_threads == available_cores()
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert OnnxRunner(onnx_bytes(network, plans.in_channels, planned), threads=1).threads == 1


def test_the_runner_checks_its_input(build_case):
    network, plans, planned = build_case("pfseg")
    runner = OnnxRunner(onnx_bytes(network, plans.in_channels, planned))
    with pytest.raises(ValueError, match=r"expected a batch \(B, 2, Z, Y, X\)"):
        runner(torch.zeros(1, 3, 32, 32, 32))
    with pytest.raises(ValueError, match="not a multiple of the network's divisor"):
        runner(torch.zeros(1, 2, 32, 40, 32))


def test_a_file_that_is_not_a_pfseg_onnx_export_is_refused(tmp_path):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00not a model")
    with pytest.raises(UserError, match="garbage.onnx: not a loadable ONNX model"):
        OnnxRunner(garbage)
    plain = tmp_path / "plain.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)     # the TorchScript-based exporter
        torch.onnx.export(torch.nn.Conv3d(1, 1, 1), (torch.zeros(1, 1, 2, 2, 2),), str(plain), dynamo=False)
    with pytest.raises(UserError, match="plain.onnx: an ONNX model without pfseg metadata"):
        OnnxRunner(plain)


def test_a_network_in_training_mode_is_not_exported(build_case):
    network, plans, planned = build_case("pfseg")
    with pytest.raises(ValueError, match="eval mode"):
        onnx_bytes(network.train(), plans.in_channels, planned)
