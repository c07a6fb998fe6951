"""The presets' fixed decisions, as plain data: the one place each is written.

- `default`: self-configured (the planner decides shapes, LR scale and batch from the data and
  the memory budget); trains with the recipe that `TrainingPlan`'s defaults in plans.py hold.
- `paper`: the paper's protocol (PFSEG_METHOD.md, "Data protocol"): T2 alone, whole tumour,
  the 128x192x192 grid, the paper's augmentation.
- `demo`: `default` with narrow networks and a short training, so `make demo` runs on a CPU.

Each preset's training recipe is `TrainingPlan`'s defaults (plans.py) changed by `TRAINING`
below, and every field of it has a one-line reason in `TRAINING_REASONS`; the planner writes
both into plans.json, and an older plans.json without a field gets it from here on load.
This module imports nothing of the package, so plans.py (below the planners) can read it.
"""

from __future__ import annotations

from typing import Any

PRESETS = ("default", "paper", "demo")

# ---- the paper's protocol --------------------------------------------------------------------------
# BraTS' 155x240x240 (z y x) cropped in-plane to 192 and resampled to 128 slices: the paper's HR
# grid, written once here (planner, evaluation on the paper grid, benchmarks, the plans' defaults)
PAPER_GRID_ZYX = (128, 192, 192)
PAPER_MODALITIES = ("t2",)
PAPER_TARGET = "wt"                                          # the binary whole tumour
PAPER_GUIDANCE_ZYX = tuple(n // 4 for n in PAPER_GRID_ZYX)   # 32x48x48: the SGM's centre patch
PAPER_PATCH_ZYX = tuple(n // 2 for n in PAPER_GRID_ZYX)      # 64x96x96: the baselines' patch
PAPER_BATCH_SIZE = 1

# ---- the demo's sizes (small widths, a short training: minutes on a CPU) --------------------------
DEMO_WIDTHS = (8, 16, 32, 64)
DEMO_SGM_WIDTHS = (8, 16, 32)        # 2 poolings: guidance = HR / 4 matches the bottleneck
DEMO_HEAD_WIDTH = 8
DEMO_BATCH_SIZE = 2                  # a CPU step costs time in proportion to the batch

# ---- the training recipe ----------------------------------------------------------------------------
# The paper's augmentation: in-plane flips, shifts and rotations only.
PAPER_AUGMENTATION = {
    "rotation_deg_zyx": [15.0, 0.0, 0.0], "p_scale": 0.0, "mirror_axes": [1, 2], "p_gamma": 0.0,
    "p_noise": 0.0, "p_brightness": 0.0, "p_contrast": 0.0, "max_shift_zyx": [0.0, 0.1, 0.1],
}
# nnU-Net v2's augmentation (nnUNetTrainer.get_training_transforms, 3D full resolution): rotation
# +-30 deg about every axis and scaling 0.7-1.4 (p 0.2 each), Gaussian noise (variance 0-0.1, p
# 0.1), blur (sigma 0.5-1, per channel p 0.5; p 0.2), brightness x0.75-1.25 (p 0.15), contrast
# 0.75-1.25 (p 0.15), low-resolution simulation (zoom 0.5-1, per channel p 0.5; p 0.25), gamma
# 0.7-1.5 on the inverted image (p 0.1) and on the image (p 0.3), per channel; every axis mirrors
NNUNET_AUGMENTATION = {
    "rotation_deg_zyx": [30.0, 30.0, 30.0], "p_rotation": 0.2, "scale_range": [0.7, 1.4], "p_scale": 0.2,
    "noise_variance": [0.0, 0.1], "p_noise": 0.1, "blur_sigma": [0.5, 1.0], "p_blur": 0.2,
    "p_blur_per_channel": 0.5, "brightness_range": [0.75, 1.25], "p_brightness": 0.15,
    "contrast_range": [0.75, 1.25], "p_contrast": 0.15, "low_resolution_zoom": [0.5, 1.0],
    "p_low_resolution": 0.25, "p_low_resolution_per_channel": 0.5, "gamma_range": [0.7, 1.5],
    "p_gamma_inverted": 0.1, "p_gamma": 0.3, "gamma_per_channel": True, "mirror_axes": [0, 1, 2],
}
# The paper's training recipe (the authors' code: Adam 1e-4 without weight decay, ReduceLROnPlateau
# 0.1 / 20, the 0.5 weights on T2 in [0, 1], one output), written out for the paper preset so that
# it keeps it whatever the default preset's measured recipe (TrainingPlan's defaults) becomes.
PAPER_RECIPE: dict[str, Any] = {
    "optimizer": "adam", "lr": 1e-4, "weight_decay": 0.0, "scheduler": "plateau", "plateau_factor": 0.1,
    "plateau_patience": 20, "loss_weights": {"seg": 1.0, "sr": 0.5, "guidance": 0.5, "tel": 0.5, "ssl": 0.5},
    "aux_intensity": "as_is", "deep_supervision": False, "region_prior_source": "dataset",
    "pfseg_branches": "full", "tta": False,
}
# the augmentation plans by name (`pfseg_train --set training.augmentation=NAME`): what each
# changes of AugmentationPlan's defaults
AUGMENTATIONS: dict[str, dict[str, Any]] = {"default": {}, "paper": PAPER_AUGMENTATION,
                                            "nnunet": NNUNET_AUGMENTATION}
# per preset, the TrainingPlan fields that differ from its defaults (a nested dict changes only
# the keys it names)
TRAINING: dict[str, dict[str, Any]] = {
    "default": {},
    "paper": {**PAPER_RECIPE, "augmentation": PAPER_AUGMENTATION},
    "demo": {"epochs": 50, "iterations_per_epoch": 10, "validation_interval": 5},
}

# reasons shared by every preset
_COMMON_REASONS = {
    "training.epochs": "100 epochs, as in the paper",
    "training.momentum": "0.99, nnU-Net's Nesterov momentum; used by optimizer sgd only",
    "training.grad_clip": "the global gradient norm clipped at 12 (nnU-Net's value): one bad batch cannot "
                          "throw the weights far",
    "training.poly_exponent": "0.9, nnU-Net's poly decay, stepped per iteration",
    "training.plateau_factor": "0.1, the authors' code (ReduceLROnPlateau factor)",
    "training.plateau_patience": "20 epochs, the authors' code",
    "training.ssl_pool": "the paper's SSL pooling factor k = 10",
    "training.seed": "one fixed seed: initial weights, sampling and augmentation repeat from run to run",
    "training.split_seed": "folds dealt by a hash of (seed, case id): a case keeps its fold whatever other "
                           "cases are present",
    "training.augmentation.mirror_axes": "every axis may flip in training, so test-time augmentation "
                                         "averages over the same flips",
    "training.validation_interval": "1: the fold's validation Dice after every epoch, a progress curve "
                                    "that steers nothing",
}
_NO_MONITOR = {
    "training.monitor_fraction": "0: no monitor cases, every training case trains; the fold's validation "
                                 "Dice is logged as a progress curve and steers nothing",
    "training.early_stopping_patience": "0: a run trains for its planned epochs (early stopping would "
                                        "need monitor cases)",
}
# the paper preset's: the paper's recipe (PAPER_RECIPE)
_PAPER_REASONS = {
    **_NO_MONITOR,
    "training.optimizer": "Adam, lr 1e-4, as in the paper",
    "training.lr": "1e-4, the paper's",
    "training.weight_decay": "none: the paper's Adam has no weight decay",
    "training.scheduler": "ReduceLROnPlateau (the paper), on the monitor cases' Dice only: the cases a fold "
                          "reports never steer its training, so without monitor cases poly decay stands in",
    "training.loss_weights": "the paper's: segmentation 1, SR and guidance 0.5, TEL and SSL 0.5",
    "training.deep_supervision": "off: one segmentation output, as the paper",
    "training.pfseg_branches": "full: the segmentation network, SR decoder and SGM with every loss term, "
                               "as the paper",
    "training.region_prior_source": "dataset: the planned region_prior (every labelled case) starts every "
                                    "network and fold alike",
    "training.aux_intensity": "as_is: SR, guidance, TEL and SSL see the network's intensities, as the paper "
                              "(min-max 0-1 in this preset)",
    "training.augmentation": "the paper's: in-plane flips, shifts (+-10 % in-plane) and rotations "
                             "(+-15 deg about z) only",
    "training.augmentation.mirror_axes": "the paper flips in-plane (y, x) only, so test-time "
                                         "augmentation averages over those flips",
    "training.tta": "off: the paper predicts each volume in one pass (`pfseg_predict --tta` averages over "
                    "the in-plane mirrors)",
}
# The default preset's: the recipe study (`python -m bench recipe`; docs/BENCHMARKS.md, "Recipe
# study"), each reason naming the table row it rests on. Every row changes one thing against the
# recipe before the study (the paper's, on the default augmentation): 16 training and 8 test
# MNI152-anatomy cases at 4 mm, narrow networks, 500 iterations, 3 paired seeds; mean Dice = WT,
# TC and ET averaged on the test cases, a gain = the paired difference +- its standard error. A
# change was adopted where it wins (gain above its standard error) for PFSeg, or for ResUNet3D
# where it leaves PFSeg's runs as they were, and loses beyond its standard error for neither.
_MEASURED_REASONS = {
    **_NO_MONITOR,
    "training.tta": "on: the mean over the 8 mirror combinations beat one pass with the same models in "
                    "bench tta (80 test cases, 3 paired seeds): +0.0014 +- 0.0005 mean Dice for PFSeg (WT "
                    "HD95 8.5 -> 7.7 mm) and +0.0038 +- 0.0010 for ResUNet3D, at 8 network passes per case "
                    "(`pfseg_predict --no-tta`: one pass, the fast path)",
    "training.optimizer": "Adam: recipe:c4 (Adam 3e-3) beat nnU-Net's SGD 1e-2 with Nesterov momentum, "
                          "weight decay and poly decay (recipe:c3) by +0.013 +- 0.007 mean Dice for PFSeg "
                          "and +0.041 +- 0.012 for ResUNet3D",
    "training.lr": "3e-3: recipe:c4, +0.185 +- 0.042 mean Dice over the paper's 1e-4 for PFSeg (ResUNet3D "
                   "+0.442 +- 0.048), and above 1e-3 (recipe:c2) by +0.025 +- 0.003 (+0.030 +- 0.009) and "
                   "3e-4 (recipe:c1)",
    "training.weight_decay": "none: recipe:c4's Adam has none (nnU-Net's 3e-5 came with its SGD, recipe:c3, "
                             "which trailed)",
    "training.scheduler": "plateau on monitor cases only, and there are none by default, so poly decay by "
                          "iteration: a plateau on 20 % monitor cases (recipe:b1) did not win for PFSeg "
                          "(-0.024 +- 0.063); ResUNet3D's gain there (+0.155 +- 0.076) came from the "
                          "undecayed rate at the old lr 1e-4, which recipe:c4 gives it more of",
    "training.loss_weights": "the paper's: segmentation 1, SR and guidance 0.5, TEL and SSL 0.5; 0.1 "
                             "(recipe:a2, -0.058 +- 0.054 mean Dice for PFSeg) and 1 on the bounded scale "
                             "(recipe:a3, -0.060 +- 0.056) did not win",
    "training.aux_intensity": "as_is (the network's z-scores): the bounded 0-1 scale (recipe:a1, -0.058 +- "
                              "0.056 mean Dice for PFSeg) did not win",
    "training.deep_supervision": "off: one segmentation output; deep supervision (recipe:d1) did not win, "
                                 "-0.004 +- 0.001 mean Dice for PFSeg and -0.010 +- 0.009 for ResUNet3D",
    "training.region_prior_source": "fold: each run's own prior, from its training cases and its "
                                    "network's sampling (recipe:g1): +0.123 +- 0.099 mean Dice for "
                                    "ResUNet3D, whose patches hold more tumour than the volume; PFSeg's runs "
                                    "were the same (on all training cases a whole volume's prior is the "
                                    "dataset's), and in a fold it leaves out the held-out cases, which the "
                                    "dataset prior counts",
    "training.augmentation": "rotation +-15 deg and scaling 0.85-1.25 (p 0.2 each), mirroring on every "
                             "axis, gamma, noise, brightness and contrast; no elastic deformation: nnU-Net's "
                             "stronger augmentation (recipe:e1) did not win at the study's 500 iterations, "
                             "-0.063 +- 0.052 mean Dice for PFSeg and -0.010 +- 0.007 for ResUNet3D",
}
# the default and demo presets' PFSeg branches (`pfseg_branches`), whose reason depends on the LR scale
_BRANCHES_REASONS = {
    "scale 1": "full (segmentation network, SR decoder, SGM) at LR scale 1 too: in bench branches (80 test "
               "cases, 6 of them without ET; 3 paired seeds, 496 iterations) the whole method beat the "
               "segmentation network alone by +0.018 +- 0.008 mean Dice, and US painted ET into 2 of its "
               "18 ET-free case-runs, the whole method into none (recipe:c4-us had found the two level on 8 "
               "test cases, each with ET); at equal time US (864 iterations) is level with it, full - US "
               "-0.004 +- 0.004, so `--ablation us` (in pfseg__us, about 0.6 of the time per iteration) is "
               "the choice where training time is the budget",
    "scale 1, over budget": "us (the segmentation network alone) at LR scale 1, where the whole method's "
                            "step does not fit the budget: dropping the SR decoder and SGM costs less "
                            "than a coarser input: at scale 1 the whole method led US by +0.018 +- 0.008 "
                            "mean Dice (bench branches), while US at LR scale 2 scored 0.718 mean Dice "
                            "against 0.922 at scale 1 on the same cases and recipe (bench branches_lr2, "
                            "bench branches)",
    "above 1": "us (the segmentation network alone) above LR scale 1: in bench branches_lr2 (LR scale 2, an "
               "8 mm input for 4 mm cases, the default recipe, 3 paired seeds, 80 test cases) the whole "
               "method did not win, full - US -0.014 +- 0.016 mean Dice at equal iterations and -0.048 +- "
               "0.022 at equal time, nor at LR scale 4 (bench branches_lr4, a 16 mm input: -0.010 +- 0.018 "
               "and -0.033 +- 0.006); the paper's ablation (scale 2 on BraTS: +0.025 Dice for the branches) "
               "stays the paper preset's, which trains the whole method at every scale (`pfseg_train "
               "--ablation full` trains it here, into pfseg__full)",
}


def pfseg_branches(lr_scale_zyx, full_fits: bool = True) -> tuple[str, str]:
    """(training.pfseg_branches, its reason) of the default and demo presets at this LR scale: the
    whole method at scale 1 on every axis where its step fits the budget (`full_fits`; bench
    branches), else the segmentation network alone: at scale 1 when the whole method does not fit
    (the planner drops the branches before it coarsens the input), and above scale 1 (bench
    branches_lr2: the branches did not win there)."""
    if all(int(s) == 1 for s in lr_scale_zyx):
        return ("full", _BRANCHES_REASONS["scale 1"]) if full_fits else (
            "us", _BRANCHES_REASONS["scale 1, over budget"])
    return "us", _BRANCHES_REASONS["above 1"]


# what the planner adds to its own reason for iterations_per_epoch (one pass over the cases) per preset
ITERATIONS_PER_EPOCH_NOTE = {
    "default": "; nnU-Net's fixed 250 per epoch (recipe:f1) did not win: -0.059 +- 0.052 mean Dice for "
               "PFSeg, -0.001 +- 0.003 for ResUNet3D",
}
TRAINING_REASONS: dict[str, dict[str, str]] = {
    "default": {**_COMMON_REASONS, **_MEASURED_REASONS},
    "paper": {**_COMMON_REASONS, **_PAPER_REASONS},
    "demo": {**_COMMON_REASONS, **_MEASURED_REASONS,
             "training.epochs": "demo preset: 50 epochs of 10 iterations",
             "training.iterations_per_epoch": "demo preset: 10 iterations per epoch, a fixed short run",
             "training.validation_interval": "demo preset: the validation cases every 5 epochs and after the "
                                             "last: at 10 iterations per epoch, scoring them after every "
                                             "epoch took 127 of the demo's 835 training seconds "
                                             "(2026-12-01)"},
}


def training_overrides(preset: str) -> dict[str, Any]:
    """The TrainingPlan fields `preset` sets (the rest are TrainingPlan's defaults)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r} (choose from {', '.join(PRESETS)})")
    return TRAINING[preset]


def training_reasons(preset: str) -> dict[str, str]:
    """`training.<field>` -> the one-line reason of the preset's value."""
    training_overrides(preset)
    return dict(TRAINING_REASONS[preset])
