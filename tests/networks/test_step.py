"""The one training step: the trainer, the memory model and the GPU check run the same step, and
it clips, scales and steps as networks/step.py says."""

from __future__ import annotations

import pytest
import torch

from pfseg_pipeline.networks.registry import build_network, example_batch, network_spec
from pfseg_pipeline.networks.step import build_step, make_optimizer, step_memory_format, train_step
from pfseg_pipeline.planners import memory
from pfseg_pipeline.training.trainer import Trainer, TrainOptions


@pytest.mark.parametrize("network", ["pfseg", "resunet3d"])
def test_trainer_memory_model_and_gpu_check_update_the_weights_alike(tmp_path, make_plans, network):
    """From the same seed (weights, then batch), two steps of each, AMP off on the CPU. The
    memory model creates the optimiser's state before its step (its warm-up), so the other two
    get the same warm-up; it is asked for the trainer's optimiser implementation (`fused=False`:
    its trace uses the fused one, whose update differs in the last bits). The memory model and
    the GPU check agree bit for bit; the trainer keeps a CPU's weights in channels-last
    (`step_memory_format`), whose convolutions sum in another order: to float32 rounding."""
    from bench.gpu_check import training_step

    plans = make_plans(hr=(16, 16, 16), patch=(8, 8, 8))
    plans.training.grad_clip = 0.05  # small enough that clipping acts on these steps
    cpu = torch.device("cpu")

    torch.manual_seed(3)
    traced = memory.traced_step(network, plans, 2, amp=False, fused=False)

    gpu = training_step(network, plans, 2, cpu, amp=False, seed=3)
    memory.init_optimizer_state(gpu.model, gpu.optimizer)

    torch.manual_seed(3)
    model = build_network(network, plans)
    batch = example_batch(network, plans, 2)
    optimizer = make_optimizer(model.parameters(), plans.training)
    memory.init_optimizer_state(model, optimizer)
    trainer = Trainer(model, network_spec(network).make_loss(plans, "full"), None, None, optimizer, None, cpu,
                      tmp_path, plans, TrainOptions(epochs=1, iterations_per_epoch=1,
                                                    grad_clip=plans.training.grad_clip),
                      {"network": network})

    assert all(p.is_contiguous(memory_format=torch.channels_last_3d) for p in model.parameters()
               if p.dim() == 5)
    before = [p.detach().clone() for p in model.parameters()]
    for _ in range(2):
        a, _ = traced()
        b, _ = gpu()
        c, _ = trainer._step(trainer._to_device(batch))
        assert torch.equal(a, b) and torch.allclose(a, c, rtol=1e-5, atol=0)
    for (name, x), y, z in zip(traced.model.named_parameters(), gpu.model.parameters(), model.parameters()):
        # within Adam's largest move on two steps (2 lr): a conv bias before a norm has a gradient of
        # rounding noise, whose sign Adam turns into a whole step (its gradients: the test below)
        assert torch.equal(x, y) and torch.allclose(x, z, rtol=0, atol=2.5 * plans.training.lr), name
    assert any(not torch.equal(p, w) for p, w in zip(model.parameters(), before))  # the weights moved


@pytest.mark.parametrize("network", ["pfseg", "resunet3d"])
def test_a_channels_last_step_computes_the_default_layouts_loss_and_gradients(make_plans, network):
    """The CPU trainer's layout changes the order of sums, not the function: from the same seed,
    the loss, every loss term and every gradient of one step agree to float32 rounding, while the
    weights, the batch and the gradients really are channels-last."""
    plans = make_plans(hr=(16, 16, 16), patch=(8, 8, 8))
    torch.manual_seed(0)
    default = build_step(network, plans, 2)
    torch.manual_seed(0)
    last = build_step(network, plans, 2, memory_format=step_memory_format("cpu"))
    assert step_memory_format("cpu") == torch.channels_last_3d
    assert last.batch["image"].is_contiguous(memory_format=torch.channels_last_3d)
    assert not last.batch["image"].is_contiguous()
    for a, b in zip(default.model.parameters(), last.model.parameters()):
        assert torch.equal(a, b)     # the same weights (the same seed), in another layout
        assert a.dim() != 5 or b.is_contiguous(memory_format=torch.channels_last_3d)
    total_a, terms_a = default()
    total_b, terms_b = last()
    assert float(total_b.detach()) == pytest.approx(float(total_a.detach()), rel=1e-5)
    assert terms_a.keys() == terms_b.keys()
    for name in terms_a:
        assert float(terms_b[name].detach()) == pytest.approx(float(terms_a[name].detach()), rel=1e-5,
                                                              abs=1e-7), name
    scale = max(float(p.grad.abs().max()) for p in default.model.parameters())
    for (name, a), b in zip(default.model.named_parameters(), last.model.parameters()):
        assert b.grad.is_contiguous(memory_format=torch.channels_last_3d) or b.dim() < 5, name
        # to rounding of the largest gradient: a conv bias before a norm has a true gradient of 0
        assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-5 * scale), name
    assert scale > 1e-3


def test_the_default_layout_is_kept_off_the_cpu():
    assert step_memory_format("meta") == torch.contiguous_format
    assert step_memory_format(torch.device("cpu")) == torch.channels_last_3d


def test_the_step_clips_the_gradient_norm(make_plans):
    plans = make_plans()
    step = build_step("unet3d", plans, 1)
    step.grad_clip = None
    step()
    unclipped = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in step.model.parameters()]))
    assert unclipped > 1e-3
    step.grad_clip = float(unclipped) / 10
    step()
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in step.model.parameters()]))
    assert norm <= step.grad_clip * (1 + 1e-5)


def test_scaler_and_fp16_autocast_run_on_the_cpu_and_under_fake_tensors(make_plans):
    """What the memory model relies on: an enabled GradScaler with CPU float16 autocast, for real
    and under FakeTensorMode (where only a fused optimiser can take the scaler's overflow flag)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    plans = make_plans()
    step = build_step("pfseg", plans, 1, amp=True, fused=True)
    total, terms = step()
    assert step.scaler.is_enabled() and step.scaler.get_scale() > 1
    assert torch.isfinite(total) and {"seg", "sr", "guidance", "tel", "ssl"} <= set(terms)
    with FakeTensorMode():
        fake = build_step("pfseg", plans, 1, amp=True, fused=True)
        memory.init_optimizer_state(fake.model, fake.optimizer)
        fake()
        default = build_step("pfseg", plans, 1, amp=True, fused=None)
        memory.init_optimizer_state(default.model, default.optimizer)
        with pytest.raises(Exception, match="local_scalar_dense"):
            default()  # the scaler's .item() on the overflow flag: why the trace uses a fused Adam


def test_outputs_go_to_float32_through_lists(make_plans):
    """Deep-supervision outputs (a list of logits) reach the loss in float32, like the others."""
    seen = {}

    class Loss(torch.nn.Module):
        def compute(self, outputs, batch):
            seen.update(outputs)
            return outputs["seg_logits"].mean() + sum(o.mean() for o in outputs["deep"]), {}

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv3d(1, 1, 1)

        def forward(self, batch):
            x = self.conv(batch["image"]).half()
            return {"seg_logits": x, "deep": [x[:, :, ::2], x[:, :, ::4]]}

    net = Net()
    batch = {"image": torch.rand(1, 1, 4, 4, 4)}
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    train_step(net, batch, Loss(), optimizer, torch.amp.GradScaler("cpu", enabled=False), None, False)
    assert seen["seg_logits"].dtype == torch.float32
    assert [o.dtype for o in seen["deep"]] == [torch.float32, torch.float32]


def test_sgd_is_nesterov_with_the_planned_momentum_and_weight_decay():
    """Two steps on f(w) = sum(w * g) by hand: v <- mu v + (grad + wd w); w <- w - lr (grad + wd w
    + mu v), PyTorch's Nesterov form (nnU-Net's optimiser: lr 1e-2, momentum 0.99, wd 3e-5)."""
    import dataclasses

    from pfseg_pipeline.plans import TrainingPlan

    training = dataclasses.replace(TrainingPlan(), optimizer="sgd", lr=1e-2, momentum=0.99, weight_decay=3e-5)
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
    g = torch.tensor([0.3, 0.1, -0.7], dtype=torch.float64)
    optimizer = make_optimizer([w], training)
    group = optimizer.param_groups[0]
    assert type(optimizer) is torch.optim.SGD and group["nesterov"] is True
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (1e-2, 0.99, 3e-5)
    assert group["dampening"] == 0
    expected, velocity = w.detach().clone(), torch.zeros(3, dtype=torch.float64)
    for _ in range(2):
        optimizer.zero_grad()
        (w * g).sum().backward()
        optimizer.step()
        d = g + 3e-5 * expected
        velocity = 0.99 * velocity + d
        expected = expected - 1e-2 * (d + 0.99 * velocity)
    torch.testing.assert_close(w.detach(), expected, rtol=0, atol=1e-15)
    torch.testing.assert_close(optimizer.state[w]["momentum_buffer"], velocity, rtol=0, atol=1e-15)
    # Adam ignores the momentum field; an unknown name is one clear line
    assert type(make_optimizer([w], dataclasses.replace(training, optimizer="adam"))) is torch.optim.Adam
    from pfseg_pipeline.errors import UserError

    with pytest.raises(UserError, match="training.optimizer' must be one of adam, sgd"):
        make_optimizer([w], dataclasses.replace(training, optimizer="rmsprop"))
