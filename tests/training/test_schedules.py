"""The learning-rate schedules: poly by iteration, plateau on the monitor cases, as plans data."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pfseg_pipeline.errors import UserError
from pfseg_pipeline.plans import TrainingPlan
from pfseg_pipeline.training.schedules import PolyDecay, make_scheduler


def _optimizer(lr=0.01):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=lr)


def test_poly_decay_follows_the_formula_by_iteration():
    """lr = 0.01 (1 - t / 200) ** 0.9: 10 epochs of 20 iterations."""
    training = dataclasses.replace(TrainingPlan(), scheduler="poly", epochs=10, lr=0.01)
    optimizer = _optimizer()
    poly = make_scheduler(optimizer, training, 20, monitored=True)
    assert isinstance(poly, PolyDecay) and poly.per_iteration and poly.total_iterations == 200
    for t, expected in [(0, 0.01), (20, 0.01 * 0.9 ** 0.9), (100, 0.01 * 0.5 ** 0.9),
                        (199, 0.01 * 0.005 ** 0.9), (200, 0.0), (250, 0.0)]:
        poly.set_iteration(t)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-12, abs=1e-15)
    # a pure function of the iteration: no state but the initial rate survives a checkpoint
    poly.set_iteration(150)
    again = PolyDecay(_optimizer(lr=0.01 * 0.25 ** 0.9), 200, 0.9)   # what an optimizer state holds
    again.load_state_dict(poly.state_dict())
    again.set_iteration(100)
    assert again.optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * 0.5 ** 0.9)


def test_the_exponent_is_plans_data():
    training = dataclasses.replace(TrainingPlan(), scheduler="poly", epochs=1, poly_exponent=2.0)
    optimizer = _optimizer()
    make_scheduler(optimizer, training, 10, monitored=False).set_iteration(5)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * 0.25)


def test_plateau_takes_the_authors_values_from_the_plans_and_needs_monitor_cases():
    training = TrainingPlan()
    assert (training.scheduler, training.plateau_factor, training.plateau_patience) == ("plateau", 0.1, 20)
    plateau = make_scheduler(_optimizer(), training, 5, monitored=True)
    assert isinstance(plateau, torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert (plateau.factor, plateau.patience, plateau.mode) == (0.1, 20, "max")
    # no monitor cases: nothing may steer the rate, so poly decay over the run stands in
    fallback = make_scheduler(_optimizer(), training, 5, monitored=False)
    assert isinstance(fallback, PolyDecay) and fallback.total_iterations == training.epochs * 5


def test_an_unknown_schedule_is_a_user_error():
    with pytest.raises(UserError, match="training.scheduler' must be one of plateau, poly"):
        make_scheduler(_optimizer(), dataclasses.replace(TrainingPlan(), scheduler="cosine"), 1, False)
