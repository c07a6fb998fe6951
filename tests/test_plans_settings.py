"""Per-run settings of plans fields (`--set FIELD=VALUE`), validated as plans.json is."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from pfseg_pipeline.errors import UserError
from pfseg_pipeline.plans import load_plans, named_augmentation, preset_training
from pfseg_pipeline.plans_settings import apply_settings, parse_setting

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture
def plans():
    return load_plans(FIXTURES / "plans_main_default.json")


@pytest.mark.parametrize("text, expected", [
    ("training.lr=0.01", ("training.lr", 0.01)),
    ("training.optimizer=sgd", ("training.optimizer", "sgd")),
    ("training.augmentation.mirror_axes=[1, 2]", ("training.augmentation.mirror_axes", [1, 2])),
    ("training.monitor_fraction=0.2", ("training.monitor_fraction", 0.2)),
    (" training.epochs =3", ("training.epochs", 3)),
    ("training.optimizer=", ("training.optimizer", "")),
])
def test_parse_setting_reads_json_else_text(text, expected):
    assert parse_setting(text) == expected


@pytest.mark.parametrize("text", ["training.lr", "=3", ""])
def test_a_setting_without_field_or_value_is_a_user_error(text):
    with pytest.raises(UserError, match="expected FIELD=VALUE"):
        parse_setting(text)


def test_settings_change_only_their_fields_are_logged_and_recorded(plans, caplog):
    with caplog.at_level(logging.INFO, logger="pfseg_pipeline.plans_settings"):
        new = apply_settings(plans, [("training.lr", 0.01), ("training.loss_weights.sr", 0.25),
                                     ("training.augmentation.p_rotation", 0.5),
                                     ("network.widths", [8, 16, 32])], "variant v1")
    assert new.training.lr == 0.01 and new.training.loss_weights["sr"] == 0.25
    assert new.training.loss_weights["tel"] == plans.training.loss_weights["tel"]
    assert new.training.augmentation.p_rotation == 0.5 and new.network.widths == [8, 16, 32]
    assert new.training.augmentation.p_scale == plans.training.augmentation.p_scale
    assert plans.training.lr != 0.01 and plans.network.widths != [8, 16, 32]   # the input is untouched
    assert new.hash() == plans.hash()
    assert new.reasons["training.lr"] == "set for this run (variant v1): --set training.lr=0.01"
    assert "--set training.lr: 0.0001 -> 0.01 (variant v1)" in caplog.text


def test_the_augmentation_takes_a_named_plan(plans):
    new = apply_settings(plans, [("training.augmentation", "paper")])
    assert new.training.augmentation == preset_training("paper").augmentation == named_augmentation("paper")
    assert new.training.augmentation.mirror_axes == [1, 2]
    with pytest.raises(UserError, match="name one of default, paper"):
        apply_settings(plans, [("training.augmentation", "strong")])


@pytest.mark.parametrize("setting, message", [
    (("training.learning_rate", 0.1), "training has no field 'learning_rate' (its fields: "),
    (("training.lr.x", 0.1), "training.lr has no field 'x'"),
    (("training.lr", "fast"), "--set: field 'training.lr' must be a number"),
    (("training.lr", -1.0), "--set: field 'training.lr' must be positive"),
    (("training.monitor_fraction", 1.0), "training.monitor_fraction' must be in [0, 1)"),
    (("training.validation_interval", 0), "training.validation_interval' must be at least 1, got 0"),
    (("normalization", "minmax"), "what the preprocessed cache was built from"),
    (("target_spacing_zyx", [2.0, 2.0, 2.0]), "re-run pfseg_plan_and_preprocess"),
    (("memory.budget_gb", 4), "'memory' records the planning and is not a setting"),
])
def test_a_bad_setting_is_named(plans, setting, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace(")", r"\)").replace("(", r"\(")):
        apply_settings(plans, [setting])


def test_no_settings_is_the_same_plans(plans):
    assert apply_settings(plans, []) is plans
    assert dataclasses.asdict(apply_settings(plans, [("training.lr", plans.training.lr)]).training) == \
        dataclasses.asdict(plans.training)
