"""The model card of a package: what the model is, what it was trained on, how well it did.

`model_card` gathers it as JSON (`model_card.json`), `card_markdown` renders it for people
(`MODEL_CARD.md`). Sources, all in the results network folder: plans.json (input, grid,
network), the fingerprint (the training data: cases, shapes, spacings, orientations), each
fold's `train_summary.json` (split, cases, epochs) and `validation/summary.json` (Dice and
HD95 per region on the fold's held-out cases, and which checkpoint produced them).
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

from pfseg_pipeline.data.labels import region_names
from pfseg_pipeline.devices import compute_words
from pfseg_pipeline.errors import UserError
from pfseg_pipeline.fileio import read_json
from pfseg_pipeline.plans import Plans

INTENDED_USE = ("Research on 3D brain-tumour segmentation from multi-modal MRI. Not a medical "
                "device: not validated for diagnosis or treatment.")
LIMITATIONS = ("Expect the validation figures only on scans like the training data (modalities, "
               "resolution, orientation, preprocessing: see training_data); validation figures "
               "come from the folds' held-out cases, not from an independent test set.")


def _optional_json(path: Path) -> dict | None:
    try:
        data = read_json(path) if path.is_file() else None
    except UserError:
        return None
    return data if isinstance(data, dict) else None


def training_data_summary(fingerprint: dict | None) -> dict[str, Any] | None:
    """The dataset-wide part of a fingerprint a reader of the card needs (no case ids, no paths)."""
    if not fingerprint or not isinstance(fingerprint.get("dataset"), dict):
        return None
    d = fingerprint["dataset"]
    spacing = d.get("spacing_zyx") or {}
    box_mm = d.get("brain_box_mm_zyx") or {}
    return {"cases": d.get("n_cases"), "labelled_cases": d.get("n_labelled"),
            "modalities": fingerprint.get("modalities"),
            "label_scheme": (fingerprint.get("label_scheme") or {}).get("name"),
            "median_shape_zyx": d.get("median_shape_zyx"), "median_spacing_zyx": d.get("median_spacing_zyx"),
            "spacing_range_zyx": [spacing.get("p0"), spacing.get("p100")],
            "median_brain_box_mm_zyx": box_mm.get("p50"), "orientations": d.get("orientations")}


def fold_record(fold_dir: Path, fold: str, checkpoint: str) -> dict[str, Any]:
    """One fold's training facts and validation figures (None where its files are missing).

    `epochs`: the epochs trained when `checkpoint` ("final" or "best") was saved.
    """
    train = _optional_json(fold_dir / "train_summary.json") or {}
    last = train.get("final_epoch" if checkpoint == "final" else "best_epoch")
    summary = _optional_json(fold_dir / "validation" / "summary.json")
    validation = None
    if summary and isinstance(summary.get("summary"), dict):
        regions = {}
        for region, metrics in summary["summary"].items():
            if isinstance(metrics, dict):
                regions[region] = {f"{name}_{stat}": (metrics.get(name) or {}).get(stat)
                                   for name in ("dice", "hd95") for stat in ("mean", "std")}
                regions[region]["n"] = (metrics.get("dice") or {}).get("n")
        validation = {"cases_from": summary.get("cases_from", "validation"),
                      "checkpoint": summary.get("checkpoint", "final"), "regions": regions}
    return {"fold": fold, "epochs": last + 1 if isinstance(last, int) else None,
            "split": train.get("split"), "train_cases": train.get("train_cases"),
            "val_cases": train.get("val_cases"), "validation": validation,
            "trained_on": train.get("compute")}   # the kernels: elsewhere a retraining sums in another order


def inference_words(patch_free: bool, plans: Plans) -> str:
    """How pfseg_predict runs the network by default: whole volume or sliding window, one pass or
    the mean over the mirror combinations of the axes training flipped (the plan's training.tta)."""
    how = "whole volume" if patch_free else "Gaussian sliding window"
    if not plans.training.tta:
        return f"{how}, one pass"
    mirrors = 2 ** len(set(plans.training.augmentation.mirror_axes))
    return f"{how}, mean over {mirrors} mirror combinations (pfseg_predict --no-tta: one pass)"


def model_card(*, dataset: str, network: str, variant: str | None, network_options: dict,
               patch_free: bool, checkpoint: str, fmt: str, plans: Plans, folds: list[dict[str, Any]],
               fingerprint: dict | None, parameters: dict[str, int], versions: dict[str, str],
               created: str) -> dict[str, Any]:
    """The card as JSON-ready data (`model_card.json`)."""
    name = f"{dataset}/{network}" + (f"__{variant}" if variant else "")
    return {
        "name": name,
        "intended_use": INTENDED_USE,
        "limitations": LIMITATIONS,
        "model": {"network": network, "variant": variant, "network_options": dict(network_options),
                  "inference": inference_words(patch_free, plans),
                  "checkpoint": checkpoint, "format": fmt, "folds": [f["fold"] for f in folds],
                  "ensemble": "mean of the folds' sigmoid probabilities" if len(folds) > 1 else None,
                  "parameters": parameters},
        "input": {"modalities": list(plans.modalities), "target": plans.target,
                  "regions": list(region_names(plans.target)), "label_scheme": plans.label_scheme,
                  "preset": plans.preset, "normalization": plans.normalization,
                  "target_spacing_zyx": list(plans.target_spacing_zyx),
                  "hr_shape_zyx": list(plans.hr_shape_zyx), "lr_scale_zyx": list(plans.lr_scale_zyx)},
        "training_data": training_data_summary(fingerprint),
        "folds": folds,
        "versions": {**versions, "python": platform.python_version()},
        "created": created,
    }


def _fmt(value: Any, digits: int = 4) -> str:
    return "-" if value is None else (f"{value:.{digits}f}" if isinstance(value, float) else str(value))


def card_markdown(card: dict[str, Any]) -> str:
    """The card for people (`MODEL_CARD.md`)."""
    m, i, data = card["model"], card["input"], card["training_data"]
    params = m["parameters"]
    lines = [f"# {card['name']}", "",
             f"A {m['network']} network ({m['inference']}) trained with pfseg "
             f"{card['versions'].get('pfseg_pipeline', '?')}; {len(m['folds'])} fold(s) "
             f"({', '.join(m['folds'])}), checkpoint `{m['checkpoint']}`, stored as {m['format']}.", "",
             f"**Intended use.** {card['intended_use']}", "",
             f"**Limitations.** {card['limitations']}", "",
             "## Input and output", "",
             f"- Modalities, in channel order: {', '.join(i['modalities'])}.",
             f"- Output: the {', '.join(i['regions'])} region(s) ({i['target']}), written as "
             f"{i['label_scheme'].get('name', '?')} labels {i['label_scheme'].get('labels', {})} on each "
             "input's own grid.",
             f"- Preprocessing (applied by pfseg): preset {i['preset']}, {i['normalization']} "
             f"normalisation, target spacing {_joined(i['target_spacing_zyx'])} mm (z y x), network input at "
             f"least {_joined(i['hr_shape_zyx'])} voxels, LR scale {_joined(i['lr_scale_zyx'])}.",
             f"- Parameters: {params.get('inference', 0) / 1e6:.2f} M used at inference"
             + (f" (plus {params['training_only'] / 1e6:.2f} M training-only, not shipped)"
                if params.get("training_only") else "") + ".", ""]
    lines += ["## Training data", ""]
    if data:
        lines += [f"- {data['cases']} case(s), {data['labelled_cases']} labelled; modalities "
                  f"{', '.join(data['modalities'] or [])}; label scheme {data['label_scheme']}.",
                  f"- Median shape {_joined(data['median_shape_zyx'])} voxels, median spacing "
                  f"{_joined(data['median_spacing_zyx'])} mm (z y x); orientations "
                  f"{data['orientations']}.", ""]
    else:
        lines += ["No fingerprint was found beside the model.", ""]
    lines += ["## Validation (each fold's held-out cases)", "",
              "| fold | epochs | split | train / held-out cases | region | Dice mean (std) "
              "| HD95 mm mean (std) |",
              "|---|---:|---|---|---|---|---|"]
    for f in card["folds"]:
        cases = f"{_fmt(f['train_cases'])} / {_fmt(f['val_cases'])}"
        regions = (f["validation"] or {}).get("regions") or {"-": {}}
        for region, r in regions.items():
            lines.append(f"| {f['fold']} | {_fmt(f['epochs'])} | {_fmt(f['split'])} | {cases} | {region} | "
                         f"{_fmt(r.get('dice_mean'))} ({_fmt(r.get('dice_std'))}) | "
                         f"{_fmt(r.get('hd95_mean'), 2)} ({_fmt(r.get('hd95_std'), 2)}) |")
    trained_on = [f"fold {f['fold']}: {compute_words(f['trained_on'])}" for f in card["folds"]
                  if f.get("trained_on")]
    if trained_on:   # a retraining reproduces the weights bit for bit only on the same kernels
        lines += ["", "Trained on " + "; ".join(trained_on) + "."]
    lines += ["", "## Use", "",
              "```",
              "pfseg_predict -i SCANS -o PREDICTIONS --model-dir THIS.zip",
              "pfseg_install_model THIS.zip          # into the workspace: pfseg_predict -d NAME",
              "python -c \"from pfseg_pipeline.api import load_model; print(load_model('THIS.zip'))\"",
              "```", "",
              "Versions: " + ", ".join(f"{k} {v}" for k, v in card["versions"].items())
              + f"; created {card['created']}.",
              ""]
    return "\n".join(lines)


def _joined(values: Any) -> str:
    return "x".join(_fmt(v, 3) if isinstance(v, float) else str(v) for v in values) if values else "-"
