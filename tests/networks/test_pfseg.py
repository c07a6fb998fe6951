import logging
import time

import pytest
import torch

from pfseg_pipeline.data.labels import BRATS2020
from pfseg_pipeline.networks.losses import PFSegLoss
from pfseg_pipeline.networks.pfseg import resize_to
from pfseg_pipeline.networks.registry import build_network, count_parameters, inference_parameter_count
from pfseg_pipeline.plans import GuidancePlan, Plans

log = logging.getLogger(__name__)

# (HR shape, LR scale, guidance patch): the SGM output matches the bottleneck in each.
CONFIGS = [
    ((8, 8, 8), (1, 1, 1), (4, 4, 4)),
    ((16, 16, 16), (2, 2, 2), (4, 4, 4)),
    ((16, 24, 32), (2, 2, 2), (4, 6, 8)),
    ((12, 12, 24), (3, 3, 3), (2, 2, 4)),
    ((8, 16, 16), (1, 2, 2), (4, 4, 4)),
]


def _batch(plans, batch_size=2):
    image = torch.rand(batch_size, plans.in_channels, *plans.hr_shape_zyx)
    target = (torch.rand(batch_size, plans.out_channels, *plans.hr_shape_zyx) > 0.5).float()
    return {"image": image, "target": target}


@pytest.mark.parametrize("hr, scale, guidance", CONFIGS)
def test_output_shapes(make_plans, hr, scale, guidance):
    plans = make_plans(hr=hr, scale=scale, guidance=guidance)
    model = build_network("pfseg", plans)
    batch = _batch(plans)
    with torch.no_grad():
        out = model.forward_train(batch)
        logits = model.forward_infer(batch["image"])
    assert out["seg_logits"].shape == (2, 3, *hr)
    assert out["sr"].shape == (2, 2, *hr)
    assert out["guidance_mask"].shape == (2, 1, *hr)
    assert out["guidance_mask"].sum(dim=(1, 2, 3, 4)).tolist() == [float(torch.tensor(guidance).prod())] * 2
    assert logits.shape == (2, 3, *hr)


@pytest.mark.parametrize("use_sr, use_sgm", [(False, False), (True, False), (True, True)])
def test_ablation_options_change_outputs_and_modules(make_plans, use_sr, use_sgm):
    plans = make_plans()
    model = build_network("pfseg", plans, use_sr=use_sr, use_sgm=use_sgm)
    assert model.options == {"use_sr": use_sr, "use_sgm": use_sgm}
    assert (model.sr_decoder is not None) == use_sr and (model.sgm is not None) == use_sgm
    with torch.no_grad():
        out = model.forward_train(_batch(plans, 1))
    assert ("sr" in out) == use_sr and ("guidance_mask" in out) == use_sgm


def test_sr_decoder_not_run_by_forward_infer(make_plans):
    plans = make_plans()
    model = build_network("pfseg", plans)
    calls = []
    model.sr_decoder.register_forward_hook(lambda *args: calls.append(1))
    batch = _batch(plans, 1)
    with torch.no_grad():
        model.forward_infer(batch["image"])
        assert calls == []
        model.forward_train(batch)
    assert calls == [1]


def test_forward_dispatches_on_the_argument(make_plans):
    plans = make_plans()
    model = build_network("pfseg", plans).eval()
    batch = _batch(plans, 1)
    with torch.no_grad():
        assert isinstance(model(batch), dict)
        assert torch.allclose(model(batch["image"]), model.forward_infer(batch["image"]))


def test_sgm_resize_is_identity_at_the_planned_shape(make_plans):
    features = torch.randn(1, 3, 2, 3, 4)
    assert resize_to(features, (2, 3, 4)) is features
    assert resize_to(features, (4, 6, 8)).shape == (1, 3, 4, 6, 8)
    plans = make_plans(hr=(16, 24, 32), guidance=(4, 6, 8))
    model = build_network("pfseg", plans)
    seen = {}

    def record(name):
        def hook(module, inputs, outputs):
            seen[name] = outputs[-1].shape[2:]
        return hook

    model.sgm.register_forward_hook(record("sgm"))
    model.encoder.register_forward_hook(record("bottleneck"))
    with torch.no_grad():
        model.forward_infer(torch.rand(1, 2, 16, 24, 32))
    assert seen["sgm"] == seen["bottleneck"] == (2, 3, 4)


def test_larger_input_than_planned_works(make_plans):
    plans = make_plans(location="textured")
    model = build_network("pfseg", plans).eval()
    with torch.no_grad():
        assert model.forward_infer(torch.rand(1, 2, 24, 16, 32)).shape == (1, 3, 24, 16, 32)
        with pytest.raises(ValueError, match="multiple"):
            model.forward_infer(torch.rand(1, 2, 20, 16, 16))


def test_forward_train_uses_given_lr_and_guidance(make_plans):
    plans = make_plans()
    model = build_network("pfseg", plans).eval()
    batch = _batch(plans, 1)
    origin = torch.tensor([[0, 0, 0]])
    with torch.no_grad():
        derived = model.forward_train(batch)
        given = model.forward_train({**batch, "lr_image": torch.zeros(1, 2, 8, 8, 8),
                                     "guidance_origin_zyx": origin,
                                     "guidance_patch": batch["image"][:, :, :4, :4, :4]})
    assert not torch.allclose(derived["seg_logits"], given["seg_logits"])
    assert given["guidance_mask"][0, 0, :4, :4, :4].all() and given["guidance_mask"].sum() == 64


def test_sr_head_activation(make_plans):
    relu = build_network("pfseg", make_plans(normalization="minmax"))
    linear = build_network("pfseg", make_plans(normalization="zscore"))
    assert relu.sr_decoder.activation == "relu" and linear.sr_decoder.activation == "linear"
    with torch.no_grad():
        assert (relu.forward_train(_batch(make_plans(), 1))["sr"] >= 0).all()


def test_gradients_reach_every_parameter(make_plans):
    plans = make_plans()
    model = build_network("pfseg", plans).train()
    batch = _batch(plans)
    criterion = PFSegLoss(plans.training.loss_weights, "full", ssl_pool=2)
    loss, terms = criterion(model.forward_train(batch), batch)
    loss.backward()
    assert set(terms) >= {"seg", "sr", "guidance", "tel", "ssl", "total"}
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if p.dim() > 1:     # conv biases before an InstanceNorm get a zero gradient by design
            assert p.grad.abs().sum() > 0, name


def _paper_plans() -> Plans:
    plans = Plans(dataset_name="BraTS2020", modalities=["t2"], label_scheme=BRATS2020.to_json(),
                  hr_shape_zyx=[128, 192, 192], target_spacing_zyx=[1.0, 1.0, 1.0], preset="paper",
                  target="wt", normalization="minmax", lr_scale_zyx=[2, 2, 2], lr_operator="trilinear",
                  guidance=GuidancePlan([32, 48, 48], "center"))
    plans.network.widths = [32, 32, 64, 128, 256]
    plans.network.sgm_widths = [16, 32, 64, 64]
    plans.network.head_width = 16
    plans.validate()
    return plans


def test_paper_configuration_parameter_counts():
    model = build_network("pfseg", _paper_plans())
    total = count_parameters(model)
    inference = inference_parameter_count(model)
    sgm = count_parameters(model.sgm)
    print(f"PFSeg paper config: total {total:,}, inference path {inference:,}, "
          f"inference path without the SGM module {inference - sgm:,}")
    assert abs(total - 14.7e6) / 14.7e6 < 0.05
    assert abs(inference - 9.36e6) / 9.36e6 < 0.05
    # The paper's 8.91 M is the inference path less the SGM's own weights (the decoders still
    # read the 320-channel bottleneck); a network built without the SGM has a smaller first
    # up-stage (256 channels in).
    assert abs((inference - sgm) - 8.91e6) / 8.91e6 < 0.05
    no_sgm = build_network("pfseg", _paper_plans(), use_sgm=False)
    assert inference_parameter_count(no_sgm) < inference - sgm


@pytest.mark.slow
def test_paper_shape_cpu_inference_time():
    model = build_network("pfseg", _paper_plans()).eval()
    image = torch.rand(1, 1, 128, 192, 192)
    with torch.no_grad():
        start = time.perf_counter()
        logits = model.forward_infer(image)
        seconds = time.perf_counter() - start
    log.info("PFSeg forward_infer at 1x1x128x192x192 on CPU: %.2f s", seconds)
    threads = torch.get_num_threads()
    print(f"PFSeg forward_infer at 1x1x128x192x192 on CPU ({threads} threads): {seconds:.2f} s")
    assert logits.shape == (1, 1, 128, 192, 192)
