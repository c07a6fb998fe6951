"""The traceable inference path (export.graph) and the ONNX Runtime rewrites (export.rewrites),
in plain PyTorch: no optional package needed."""

from __future__ import annotations

import sys
import warnings

import pytest
import torch
from torch import nn

from pfseg_pipeline.errors import UserError
from pfseg_pipeline.export.graph import InferenceGraph, export_metadata
from pfseg_pipeline.export.rewrites import (
    NestedMeanInstanceNorm3d,
    SubPixelConvTranspose3d,
    for_onnx_runtime,
    supports_subpixel,
)
from pfseg_pipeline.networks.inputs import center_origin
from pfseg_pipeline.networks.pfseg import resize_to


def _trace(fn, example):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.trace(fn, (example,), check_trace=False)


def test_a_traced_center_origin_follows_the_input_shape():
    patch = (4, 6, 2)
    traced = _trace(lambda image: center_origin(image, patch), torch.zeros(1, 1, 8, 8, 8))
    for shape in [(8, 8, 8), (16, 24, 9), (5, 7, 40)]:
        image = torch.zeros(2, 1, *shape)
        expected = [[(n - p) // 2 for n, p in zip(shape, patch)]] * 2
        assert traced(image).tolist() == expected and center_origin(image, patch).tolist() == expected
    # a trace of the Python-number form keeps the 8^3 example's origin (2, 1, 3) for every input
    frozen = _trace(lambda image: torch.tensor([(n - p) // 2 for n, p in zip(image.shape[2:], patch)]),
                    torch.zeros(1, 1, 8, 8, 8))
    assert frozen(torch.zeros(1, 1, 16, 24, 9)).tolist() == [2, 1, 3]


def test_a_traced_resize_is_recorded_even_where_the_example_sizes_agree():
    features = torch.arange(8.0).reshape(1, 1, 2, 2, 2)
    traced = torch.jit.trace(lambda x, like: resize_to(x, like.shape[2:]),
                             (features, torch.zeros(1, 1, 2, 2, 2)), check_trace=False)
    assert torch.equal(traced(features, torch.zeros(1, 1, 2, 2, 2)), features)
    assert traced(features, torch.zeros(1, 1, 4, 4, 4)).shape == (1, 1, 4, 4, 4)
    assert resize_to(features, (2, 2, 2)) is features                # untraced: the identity itself


@pytest.mark.parametrize("location, lr_operator", [("center", "avgpool"), ("textured", "trilinear")])
def test_inference_graph_is_forward_infer(build_case, make_image, location, lr_operator):
    network, _, _ = build_case("pfseg", location, lr_operator)
    graph = InferenceGraph(network).eval()
    with torch.no_grad():
        for shape in [(32, 32, 32), (48, 32, 64)]:      # the planned shape, then a larger one
            image = make_image(2, shape)
            assert torch.equal(graph(image), network.forward_infer(image))


def test_inference_graph_of_a_baseline_calls_its_forward_infer(build_case, make_image):
    network, _, _ = build_case("hdc")
    image = make_image(1, (32, 48, 32))
    with torch.no_grad():
        assert torch.equal(InferenceGraph(network)(image), network.forward_infer(image))


@pytest.mark.parametrize("kernel, stride, padding", [
    ((4, 4, 4), (2, 2, 2), (1, 1, 1)),      # UpStage at scale 2 (the paper's stage)
    ((4, 1, 3), (2, 1, 3), (1, 0, 0)),      # anisotropic LR scale (2, 1, 3)
    ((2, 2, 2), (2, 2, 2), (0, 0, 0)),      # V-Net's up-convolution
    ((5, 5, 5), (3, 3, 3), (1, 1, 1)),      # phases with different numbers of taps
])
def test_subpixel_equals_the_transposed_convolution(kernel, stride, padding):
    conv = nn.ConvTranspose3d(3, 5, kernel, stride=stride, padding=padding)
    image = torch.randn(2, 3, 4, 5, 6)
    with torch.no_grad():
        expected = conv(image)
        actual = SubPixelConvTranspose3d(conv)(image)
    assert actual.shape == expected.shape == (2, 5, 4 * stride[0], 5 * stride[1], 6 * stride[2])
    assert float((actual - expected).abs().max()) < 1e-5


def test_subpixel_refuses_a_transposed_convolution_that_does_not_scale_by_its_stride():
    odd = nn.ConvTranspose3d(2, 2, 3, stride=2, padding=1)      # 2n - 1 voxels, not 2n
    assert not supports_subpixel(odd)
    with pytest.raises(ValueError, match="exactly its stride"):
        SubPixelConvTranspose3d(odd)
    model = nn.Sequential(odd, nn.ConvTranspose3d(2, 2, 4, stride=2, padding=1))
    rewritten = for_onnx_runtime(model)
    assert isinstance(rewritten[0], nn.ConvTranspose3d)
    assert isinstance(rewritten[1], SubPixelConvTranspose3d)


def test_an_up_stage_becomes_one_phase_module_with_its_activation_before_the_interleave():
    from pfseg_pipeline.networks.blocks import UpStage

    stage = UpStage(3, 4, (2, 1, 3)).eval()
    nn.init.normal_(stage.conv.bias)              # negative values: the LeakyReLU's slope shows
    rewritten = for_onnx_runtime(nn.Sequential(stage))
    assert isinstance(rewritten[0], SubPixelConvTranspose3d)
    assert isinstance(rewritten[0].activation, nn.LeakyReLU)
    image = torch.randn(2, 3, 5, 4, 3)
    with torch.no_grad():
        expected = stage(image)
        assert float(expected.min()) < 0
        assert float((rewritten(image) - expected).abs().max()) < 1e-5


@pytest.mark.parametrize("affine", [False, True])
def test_nested_mean_instance_norm_is_instance_norm_and_exact_on_a_sparse_volume(affine):
    norm = nn.InstanceNorm3d(3, affine=affine, eps=1e-3)
    if affine:
        nn.init.normal_(norm.weight)
        nn.init.normal_(norm.bias)
    # a "brain" of values around 2 in a zero background: one float32 running sum over all
    # voxels would be off by about 1e-3 here (the reason for the nested means)
    image = torch.zeros(2, 3, 24, 40, 36, dtype=torch.float64)
    image[:, :, 4:20, 5:35, 6:30] = torch.randn(2, 3, 16, 30, 24, dtype=torch.float64) * 0.5 + 2
    with torch.no_grad():
        exact = norm.double()(image)
        nested = NestedMeanInstanceNorm3d(norm.float())(image.float())
    assert float((nested.double() - exact).abs().max()) < 1e-5
    with pytest.raises(ValueError, match="running statistics"):
        NestedMeanInstanceNorm3d(nn.InstanceNorm3d(3, track_running_stats=True))


def test_for_onnx_runtime_rewrites_a_copy_with_the_same_output(build_case, make_image):
    network, _, _ = build_case("pfseg")
    rewritten = for_onnx_runtime(network)
    kinds = (nn.ConvTranspose3d, SubPixelConvTranspose3d, nn.InstanceNorm3d, NestedMeanInstanceNorm3d)
    count = [sum(isinstance(m, cls) for m in net.modules()) for net in (network, rewritten) for cls in kinds]
    # seg and SR decoders: 3 skip up-stages + the LR -> HR stage each; 3 norms per residual
    # block (4 + 3 encoder blocks, 4 blocks per decoder); the original is untouched
    assert count == [8, 0, 45, 0, 0, 8, 0, 45]
    image = make_image(1, (48, 32, 32))
    with torch.no_grad():
        assert float((rewritten.forward_infer(image) - network.forward_infer(image)).abs().max()) < 1e-5


def test_export_metadata_describes_the_network(build_case):
    network, plans, _ = build_case("pfseg")
    meta = export_metadata(network, plans.in_channels)
    assert meta["network"] == "pfseg" and meta["in_channels"] == 2
    assert meta["divisor_zyx"] == [16, 16, 16]
    resunet, _, _ = build_case("resunet3d")
    assert export_metadata(resunet, 2)["divisor_zyx"] == [8, 8, 8]


def test_onnx_export_without_the_onnx_package_is_one_clear_error(monkeypatch, build_case):
    from pfseg_pipeline.export.onnx_export import onnx_bytes

    monkeypatch.setitem(sys.modules, "onnx", None)      # import onnx now raises ImportError
    network, _, planned = build_case("pfseg")
    with pytest.raises(UserError, match=r"pip install 'pfseg\[onnx\]'"):
        onnx_bytes(network, 2, planned)
