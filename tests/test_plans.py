"""plans.json: every training decision recorded once, and plans.json files written by main before
issue 13 (tests/fixtures/plans_main_*.json, one per preset, from main's planner) still load."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from pfseg_pipeline import presets
from pfseg_pipeline.errors import UserError
from pfseg_pipeline.plans import (
    AugmentationPlan,
    Plans,
    TrainingPlan,
    load_plans,
    preset_training,
    save_plans,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures"
NEW_FIELDS = ("training.split_seed", "training.augmentation", "training.tta")


@pytest.mark.parametrize("preset", presets.PRESETS)
def test_an_old_plans_json_loads_with_the_same_hash_and_the_presets_new_fields(preset, caplog):
    path = FIXTURES / f"plans_main_{preset}.json"
    old = json.loads(path.read_text())
    assert not set(old["training"]) & {"augmentation", "split_seed"}  # written before they existed
    with caplog.at_level(logging.INFO, logger="pfseg_pipeline.plans"):
        plans = load_plans(path)
    # the cache's key is unchanged: no cached case is rebuilt
    assert plans.hash() == json.loads((FIXTURES / "plans_main_hashes.json").read_text())[preset]
    # what the file recorded is kept as it was
    for key, value in old["training"].items():
        assert getattr(plans.training, key) == value, key
    # the new fields are the preset's, with its reasons, and the log says so
    expected = preset_training(preset)
    assert plans.training.augmentation == expected.augmentation
    assert plans.training.split_seed == expected.split_seed == 12345
    for key in NEW_FIELDS:
        assert plans.reasons[key].startswith(presets.TRAINING_REASONS[preset][key])
        assert f"filled from the {preset} preset" in plans.reasons[key]
    note = [r.getMessage() for r in caplog.records if "not recorded" in r.getMessage()]
    assert len(note) == 1 and all(f in note[0] for f in NEW_FIELDS) and str(path) in note[0]


def test_the_paper_preset_fills_the_papers_augmentation_and_tta_axes():
    plans = load_plans(FIXTURES / "plans_main_paper.json")
    a = plans.training.augmentation
    assert a.mirror_axes == [1, 2] and a.rotation_deg_zyx == [15.0, 0.0, 0.0]
    assert a.max_shift_zyx == [0.0, 0.1, 0.1]
    assert a.p_scale == a.p_gamma == a.p_noise == a.p_brightness == a.p_contrast == 0.0
    default = load_plans(FIXTURES / "plans_main_default.json").training.augmentation
    assert default == AugmentationPlan() and default.mirror_axes == [0, 1, 2]


def test_a_new_plans_json_round_trips_and_logs_nothing(tmp_path, caplog):
    old = load_plans(FIXTURES / "plans_main_demo.json")
    save_plans(old, tmp_path / "plans.json")
    caplog.clear()  # the old file's note, when a logger level lets it through
    with caplog.at_level(logging.INFO, logger="pfseg_pipeline.plans"):
        again = load_plans(tmp_path / "plans.json")
    assert again == old and again.hash() == old.hash()
    assert not [r for r in caplog.records if "not recorded" in r.getMessage()]
    recorded = json.loads((tmp_path / "plans.json").read_text())["training"]
    assert recorded["augmentation"]["mirror_axes"] == [0, 1, 2] and recorded["grad_clip"] == 12.0


def test_a_field_missing_inside_the_augmentation_is_filled_alone(tmp_path):
    """A later pfseg adds augmentation fields: an older augmentation block keeps its own values."""
    d = load_plans(FIXTURES / "plans_main_paper.json").to_json()
    del d["training"]["augmentation"]["p_noise"]
    d["training"]["augmentation"]["p_rotation"] = 0.5
    plans = Plans.from_json(d)
    assert plans.training.augmentation.p_rotation == 0.5          # kept
    assert plans.training.augmentation.p_noise == 0.0             # the paper preset's


@pytest.mark.parametrize("preset", presets.PRESETS)
def test_every_training_field_has_a_reason_in_every_preset(preset):
    reasons = presets.training_reasons(preset)
    # the planner words these (they depend on the data)
    planned_elsewhere = {"iterations_per_epoch", "region_prior", "aux_intensity_range", "pfseg_branches"}
    for name in TrainingPlan.__dataclass_fields__:
        if name not in planned_elsewhere or name in presets.TRAINING[preset]:
            assert f"training.{name}" in reasons, (preset, name)


def test_the_default_recipe_rests_on_the_recipe_study_and_the_paper_preset_keeps_the_papers():
    import re

    from bench.recipe import ROWS

    reasons = presets.training_reasons("default")
    for name in ("optimizer", "lr", "weight_decay", "scheduler", "loss_weights", "aux_intensity",
                 "deep_supervision", "region_prior_source", "augmentation"):
        named = re.findall(r"recipe:([a-z]+\d(?:-us)?)", reasons[f"training.{name}"])
        assert named and set(named) <= set(ROWS), (name, reasons[f"training.{name}"])
    assert presets.training_reasons("demo")["training.lr"] == reasons["training.lr"]
    paper = preset_training("paper")
    assert (paper.optimizer, paper.lr, paper.weight_decay, paper.scheduler, paper.deep_supervision,
            paper.aux_intensity, paper.loss_weights["sr"]) == ("adam", 1e-4, 0.0, "plateau", False, "as_is",
                                                               0.5)
    assert presets.training_reasons("paper")["training.lr"] == "1e-4, the paper's"


def test_presets_change_only_what_they_say():
    assert preset_training("default") == TrainingPlan()
    demo = preset_training("demo")
    assert (demo.epochs, demo.iterations_per_epoch, demo.lr) == (50, 10, 3e-3)
    assert demo.augmentation == AugmentationPlan() and demo.grad_clip == TrainingPlan().grad_clip
    paper = preset_training("paper")
    assert paper.lr == 1e-4 and paper.augmentation.mirror_axes == [1, 2]
    assert paper.augmentation.gamma_range == AugmentationPlan().gamma_range  # only the named keys change


@pytest.mark.parametrize("field, value, message", [
    ("p_noise", 1.5, "p_noise' must be a probability"),
    ("mirror_axes", [0, 3], "mirror_axes' must be distinct axes"),
    ("scale_range", [1.2, 0.8], "scale_range' must be [low, high]"),
    ("rotation_deg_zyx", [15.0, 15.0], "rotation_deg_zyx' must be three"),
])
def test_a_bad_augmentation_field_is_named(field, value, message):
    d = load_plans(FIXTURES / "plans_main_default.json").to_json()
    d["training"]["augmentation"][field] = value
    with pytest.raises(UserError, match=message.replace("[", r"\[")):
        Plans.from_json(d, "plans.json")


def test_the_paper_grid_is_written_once():
    from pfseg_pipeline.evaluation.paper_grid import PAPER_GRID_ZYX
    from pfseg_pipeline.plans import GuidancePlan, PatchPlan

    assert presets.PAPER_GRID_ZYX == PAPER_GRID_ZYX == (128, 192, 192)
    assert GuidancePlan().patch_shape_zyx == [32, 48, 48] and PatchPlan().patch_shape_zyx == [64, 96, 96]
    paper = load_plans(FIXTURES / "plans_main_paper.json")
    assert paper.hr_shape_zyx == list(presets.PAPER_GRID_ZYX)
