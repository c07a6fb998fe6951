"""TorchScript export: the traced, frozen forward_infer gives PyTorch's logits at other shapes."""

from __future__ import annotations

import warnings

import pytest
import torch

from pfseg_pipeline.errors import UserError
from pfseg_pipeline.export.torchscript_export import export_torchscript, load_torchscript


def _other_shape(planned):
    """A shape unlike the export (planned) shape: 1.5x along z, 2x along y."""
    return (planned[0] * 3 // 2, planned[1] * 2, planned[2])


def test_torchscript_export_matches_pytorch_at_another_shape(tmp_path, case, build_case, make_image,
                                                             same_logits):
    name, options = case
    network, plans, planned = build_case(name, **options)
    path = export_torchscript(network, tmp_path / "model.ts", plans.in_channels, planned)
    module, metadata = load_torchscript(path)
    assert metadata["network"] == name and metadata["in_channels"] == plans.in_channels
    for batch, shape in [(2, _other_shape(planned)), (1, planned)]:
        image = make_image(batch, shape)
        with torch.no_grad():
            same_logits(module(image), network.forward_infer(image))


def test_a_torchscript_file_that_is_not_an_export_is_refused(tmp_path):
    garbage = tmp_path / "garbage.ts"
    garbage.write_bytes(b"not a zip archive")
    with pytest.raises(UserError, match="garbage.ts: not a loadable TorchScript file"):
        load_torchscript(garbage)
    plain = tmp_path / "plain.ts"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)     # TorchScript, as of torch 2.13
        torch.jit.save(torch.jit.script(torch.nn.Identity()), str(plain))
    with pytest.raises(UserError, match="plain.ts: a TorchScript file without pfseg.json"):
        load_torchscript(plain)
