"""The table of bad inputs and faults, per command, and the odd but valid inputs that must work.

Each `Kind` row says how to make one bad input for one command (`make`), what the command must
print (a line naming `Scenario.names` with every word of `words`), and what it may leave behind
(`left`, for docs/RELIABILITY.md). tests/bad_inputs/test_bad_inputs.py runs every row in-process
through the command's `main(argv)` wrapped in `cli.common.run`, as the console script does;
make_reliability_doc.py renders the same table as docs/RELIABILITY.md.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import builders as b

# command -> module under pfseg_pipeline.cli ("verify" is plan_and_preprocess --verify-only)
MODULES = {"verify": "plan_and_preprocess", "plan_and_preprocess": "plan_and_preprocess",
           "train": "train", "predict": "predict", "evaluate": "evaluate", "compare": "compare",
           "make_synthetic": "make_synthetic"}
CONSOLE = {"verify": "pfseg_plan_and_preprocess --verify-only"} | {
    c: f"pfseg_{c}" for c in MODULES if c != "verify"}
# logs every command may leave beside its outputs, even when it fails
LOG_FILES = ("plan_and_preprocess.log", "training_log.txt", "pfseg_predict.log", "pfseg_evaluate.log",
             "pfseg_compare.log", "make_synthetic.log")
NOTHING = "nothing (a log file at most)"


@dataclass
class Scenario:
    argv: list[str]
    names: str                          # what the error line must name (a path, an option)
    watch: list[Path]                   # folders where nothing new may appear but logs/outputs
    expect_outputs: list[Path] = field(default_factory=list)   # a batch command's good cases
    intact: list[Path] = field(default_factory=list)           # files whose bytes must not change
    allowed: tuple[str, ...] = ()       # further file names that may appear (complete files)
    check: Callable[[], None] | None = None  # further assertions on the outputs


@dataclass
class Ctx:
    """What a maker gets: this test's tmp folder, monkeypatch, and the session's templates."""

    tmp: Path
    monkeypatch: object
    raw_template: Path       # the tiny synthetic BraTS dataset (3 cases, 24x20x16)
    model_template: Path     # a results network folder: tiny pfseg plans + random weights
    workspace_template: Path  # a workspace with the tiny dataset preprocessed as "Tiny"

    def raw(self) -> Path:
        dest = self.tmp / "raw data"
        return dest if dest.is_dir() else b.copy_tree(self.raw_template, dest)

    def model(self) -> Path:
        dest = self.tmp / "model"
        return dest if dest.is_dir() else b.copy_tree(self.model_template, dest)

    def workspace(self) -> Path:
        dest = self.tmp / "ws"
        return dest if dest.is_dir() else b.copy_tree(self.workspace_template, dest)

    def predictions(self) -> Path:
        dest = self.tmp / "pred"
        return dest if dest.is_dir() else b.predictions_from_labels(self.raw_template, dest)


@dataclass(frozen=True)
class Kind:
    kind: str            # the kind of bad input (several rows may share it, one per command)
    command: str         # a key of MODULES
    problem: str         # what is wrong, in words (the doc's "bad input" column)
    make: Callable[[Ctx], Scenario]
    words: tuple[str, ...]  # every word must be on the error line (case-insensitive)
    left: str = NOTHING  # what the command leaves behind (the doc's "outputs left" column)
    exit_code: int = 2
    variant: str = ""

    @property
    def id(self) -> str:
        return "-".join(p for p in (self.kind, self.command, self.variant) if p)


# ---- scenario makers per command ---------------------------------------------------------------
def _s(*args) -> list[str]:
    return [str(a) for a in args]


def verify_args(ctx: Ctx, raw: Path) -> list[str]:
    return _s("-i", raw, "-d", "Bad", "--verify-only", "--workspace", ctx.tmp / "ws", "-np", "1")


def plan_args(ctx: Ctx, raw: Path) -> list[str]:
    return _s("-i", raw, "-d", "Bad", "--preset", "demo", "--workspace", ctx.tmp / "ws", "-np", "1")


def predict_args(ctx: Ctx, inp: Path, model: Path | None = None, *extra) -> list[str]:
    return _s("-i", inp, "-o", ctx.tmp / "out", "--model-dir", model or ctx.model(), "--device", "cpu",
              "--no-progress", "--workers", "1", *extra)


def predict_outputs(ctx: Ctx) -> list[Path]:
    out = ctx.tmp / "out"
    return [out / f"{c}.nii.gz" for c in b.GOOD] + [out / "timings.json", out / "label_scheme.json"]


def evaluate_args(ref: Path, pred: Path, *extra) -> list[str]:
    return _s("-r", ref, "-p", pred, "-np", "1", *extra)


def evaluate_outputs(pred: Path) -> list[Path]:
    return [pred / "summary.json", pred / "summary.csv"]


def scored(pred: Path, cases=b.GOOD, failed=(b.BAD,)) -> Callable[[], None]:
    """The summary scores the good cases and lists the bad one under 'failed'."""
    def check() -> None:
        summary = json.loads((pred / "summary.json").read_text())
        assert sorted(c["case"] for c in summary["per_case"]) == sorted(cases), summary["per_case"]
        assert sorted(f["case"] for f in summary["failed"]) == sorted(failed), summary["failed"]
    return check


def train_args(ctx: Ctx, *extra) -> list[str]:
    return _s("Tiny", "all", "--workspace", ctx.workspace(), "--device", "cpu", "--num-workers", "0",
              "--no-progress", *extra)


def dataset_fault(fault: Callable[[Path], None], target: str, command: str) -> Callable[[Ctx], Scenario]:
    """Damage one file of case BAD (`target`: a modality or 'seg') and run `command` on the dataset."""
    def make(ctx: Ctx) -> Scenario:
        raw = ctx.raw()
        path = b.label_file(raw) if target == "seg" else b.image_file(raw, modality=target)
        fault(path)
        if command == "verify":
            return Scenario(verify_args(ctx, raw), str(path), [ctx.tmp])
        if command == "plan_and_preprocess":
            return Scenario(plan_args(ctx, raw), str(path), [ctx.tmp])
        if command == "predict":
            return Scenario(predict_args(ctx, raw), str(path), [ctx.tmp], expect_outputs=predict_outputs(ctx))
        raise ValueError(command)
    return make


def prediction_fault(fault: Callable[[Path], None]) -> Callable[[Ctx], Scenario]:
    """Damage the prediction of case BAD and evaluate the folder."""
    def make(ctx: Ctx) -> Scenario:
        pred = ctx.predictions()
        path = pred / f"{b.BAD}.nii.gz"
        fault(path)
        return Scenario(evaluate_args(ctx.raw(), pred), str(path), [ctx.tmp],
                        expect_outputs=evaluate_outputs(pred), check=scored(pred))
    return make


def reference_fault(fault: Callable[[Path], None]) -> Callable[[Ctx], Scenario]:
    """Damage the reference label of case BAD and evaluate the folder."""
    def make(ctx: Ctx) -> Scenario:
        raw, pred = ctx.raw(), ctx.predictions()
        path = b.label_file(raw)
        fault(path)
        return Scenario(evaluate_args(raw, pred), str(path), [ctx.tmp], expect_outputs=evaluate_outputs(pred),
                        check=scored(pred))
    return make


FILE_FAULTS = [
    # kind, problem, fault, target, commands, words
    ("truncated-gz", "truncated .nii.gz (gzip stream cut in half)", b.truncate, "t1ce",
     ("verify", "plan_and_preprocess", "predict"), ("truncated",)),
    ("not-gzip", "uncompressed NIfTI under a .nii.gz name", b.not_gzip, "t1ce",
     ("verify", "predict"), ("gzip",)),
    ("zero-byte", "zero-byte image file", b.zero_bytes, "t1ce", ("verify", "predict"), ("empty", "0 bytes")),
    ("4d-image", "4D image (two volumes)", b.four_d, "t1ce", ("verify", "predict"), ("3d", "4d")),
    ("2d-image", "2D image (one slice)", b.two_d, "t1ce", ("verify", "predict"), ("3d", "2d")),
    ("nan-inf", "NaN and Inf voxels in an image", b.nan_voxels, "flair", ("verify", "predict"),
     ("nan", "inf")),
    ("all-zero", "all-zero image", b.all_zero, "t2", ("verify", "predict"), ("all zero",)),
    ("modality-shape", "modalities of different shapes", b.other_shape, "flair",
     ("verify", "predict"), ("shape", "differ")),
    ("modality-affine", "modalities whose affines differ by 2 mm (tolerance 1e-3 mm)", b.shifted_affine, "t2",
     ("verify", "predict"), ("affine", "differ")),
    ("label-values", "label value 7, outside the BraTS 2020 scheme", b.label_value_7, "seg",
     ("verify", "plan_and_preprocess"), ("label values", "7")),
    ("label-grid", "label map on another grid than its images", b.label_other_grid, "seg",
     ("verify",), ("label", "shape", "differ")),
]

KINDS: list[Kind] = []
for _kind, _problem, _fault, _target, _commands, _words in FILE_FAULTS:
    for _command in _commands:
        KINDS.append(Kind(_kind, _command, _problem, dataset_fault(_fault, _target, _command), _words,
                          left="the other cases' label maps, timings.json, the log" if _command == "predict"
                          else NOTHING))

PRED_LEFT = "summary.json and summary.csv scoring the other cases (the bad one under 'failed'), the log"
KINDS += [
    Kind("truncated-gz", "evaluate", "truncated .nii.gz prediction", prediction_fault(b.truncate),
         ("truncated",), PRED_LEFT),
    Kind("not-gzip", "evaluate", "uncompressed prediction under a .nii.gz name", prediction_fault(b.not_gzip),
         ("gzip",), PRED_LEFT),
    Kind("zero-byte", "evaluate", "zero-byte prediction file", prediction_fault(b.zero_bytes),
         ("empty", "0 bytes"), PRED_LEFT),
    Kind("nan-inf", "evaluate", "NaN voxels in a prediction", prediction_fault(b.nan_voxels), ("nan",),
         PRED_LEFT),
    Kind("label-values", "evaluate", "prediction with label value 7", prediction_fault(b.label_value_7),
         ("label values", "7"), PRED_LEFT),
    Kind("label-values", "evaluate", "reference with label value 7", reference_fault(b.label_value_7),
         ("label values", "7"), PRED_LEFT, variant="reference"),
    Kind("label-grid", "evaluate", "prediction on another grid than its reference",
         prediction_fault(b.label_other_grid), ("another grid", "shape"), PRED_LEFT),
    Kind("4d-image", "evaluate", "4D prediction", prediction_fault(b.four_d), ("3d", "4d"), PRED_LEFT),
]


# ---- missing files, duplicates, unusable case ids ------------------------------------------------
def _missing_modality(command: str):
    def make(ctx: Ctx) -> Scenario:
        raw = ctx.raw()
        b.image_file(raw, modality="t2").unlink()
        if command == "verify":
            return Scenario(verify_args(ctx, raw), str(raw / b.BAD), [ctx.tmp])
        return Scenario(predict_args(ctx, raw), str(raw / b.BAD), [ctx.tmp],
                        expect_outputs=predict_outputs(ctx))
    return make


def _missing_label(command: str):
    def make(ctx: Ctx) -> Scenario:
        raw = ctx.raw()
        b.label_file(raw).unlink()
        args = verify_args(ctx, raw) if command == "verify" else plan_args(ctx, raw)
        return Scenario(args, str(raw / b.BAD), [ctx.tmp])
    return make


def _missing_prediction_folder(ctx: Ctx) -> Scenario:
    missing = ctx.tmp / "no such predictions"
    return Scenario(evaluate_args(ctx.raw(), missing), str(missing), [ctx.tmp])


def _duplicate(command: str):
    def make(ctx: Ctx) -> Scenario:
        raw = ctx.raw()
        if command in ("verify", "predict"):
            copy = raw / "extra" / b.BAD
            shutil.copytree(raw / b.BAD, copy)
            if command == "verify":
                return Scenario(verify_args(ctx, raw), str(copy), [ctx.tmp])
            return Scenario(predict_args(ctx, raw), str(copy), [ctx.tmp], expect_outputs=predict_outputs(ctx))
        pred = ctx.predictions()
        second = pred / f"{b.BAD}.nii"
        second.write_bytes(b"")  # content does not matter: the id is ambiguous
        b.not_gzip(pred / f"{b.BAD}.nii.gz")
        (pred / f"{b.BAD}.nii.gz").rename(second)
        shutil.copyfile(b.label_file(ctx.raw_template), pred / f"{b.BAD}.nii.gz")
        return Scenario(evaluate_args(raw, pred), str(second), [ctx.tmp],
                        expect_outputs=evaluate_outputs(pred), check=scored(pred))
    return make


def _dotdot_case(command: str):
    """An nnU-Net imagesTr file named `.._0000.nii.gz`: its case id would be '..'."""
    def make(ctx: Ctx) -> Scenario:
        raw = b.to_nnunet(ctx.raw_template, ctx.tmp / "nnunet raw")
        images = raw / "imagesTr"
        for k in range(4):
            shutil.copyfile(images / f"{b.BAD}_{k:04d}.nii.gz", images / f".._{k:04d}.nii.gz")
        shutil.copyfile(raw / "labelsTr" / f"{b.BAD}.nii.gz", raw / "labelsTr" / "...nii.gz")
        names = str(raw / "imagesTr" / ".._0000.nii.gz")
        if command == "verify":
            return Scenario(verify_args(ctx, raw), names, [ctx.tmp])
        return Scenario(predict_args(ctx, raw), names, [ctx.tmp],
                        expect_outputs=[ctx.tmp / "out" / f"{c}.nii.gz" for c in b.CASES]
                        + [ctx.tmp / "out" / "timings.json", ctx.tmp / "out" / "label_scheme.json"])
    return make


def _separator_case(command: str):
    r"""A case id holding a path separator ('a\b': a valid Linux file name, a folder on Windows)."""
    def make(ctx: Ctx) -> Scenario:
        if command == "verify":
            raw = ctx.raw()
            folder = raw / "odd"
            folder.mkdir()
            for modality in b.MODALITIES:
                shutil.copyfile(b.image_file(raw, modality=modality), folder / f"a\\b_{modality}.nii.gz")
            shutil.copyfile(b.label_file(raw), folder / "a\\b_seg.nii.gz")
            return Scenario(verify_args(ctx, raw), str(folder / "a\\b_flair.nii.gz"), [ctx.tmp])
        ref = ctx.tmp / "flat refs"
        ref.mkdir()
        for case in b.CASES:
            shutil.copyfile(b.label_file(ctx.raw_template, case), ref / f"{case}.nii.gz")
        bad = ref / "a\\b.nii.gz"
        shutil.copyfile(b.label_file(ctx.raw_template), bad)
        pred = ctx.predictions()
        return Scenario(evaluate_args(ref, pred), str(bad), [ctx.tmp], expect_outputs=evaluate_outputs(pred),
                        check=scored(pred, b.CASES, ["a\\b"]))
    return make


KINDS += [
    Kind("missing-modality", "verify", "a case without its t2 image", _missing_modality("verify"),
         ("missing modality", "t2")),
    Kind("missing-modality", "predict", "a case without its t2 image", _missing_modality("predict"),
         ("missing modality", "t2"), "the other cases' label maps, timings.json, the log"),
    Kind("missing-label", "verify", "a training case without its label map", _missing_label("verify"),
         ("missing label",)),
    Kind("missing-label", "plan_and_preprocess", "a training case without its label map",
         _missing_label("plan_and_preprocess"), ("missing label",)),
    Kind("duplicate-case", "verify", "the same case id in two folders", _duplicate("verify"),
         ("duplicate case id",)),
    Kind("duplicate-case", "predict", "the same case id in two folders", _duplicate("predict"),
         ("duplicate case id",), "the other cases' label maps, timings.json, the log"),
    Kind("duplicate-case", "evaluate", "two predictions of one case (.nii and .nii.gz)",
         _duplicate("evaluate"), ("duplicate case id",), PRED_LEFT),
    Kind("case-id-dotdot", "verify", "nnU-Net imagesTr/.._0000.nii.gz (case id '..')",
         _dotdot_case("verify"), ("case id", "'..'", "not usable")),
    Kind("case-id-dotdot", "predict", "nnU-Net imagesTr/.._0000.nii.gz (case id '..')",
         _dotdot_case("predict"), ("case id", "'..'", "not usable"),
         "the other cases' label maps, timings.json, the log"),
    Kind("case-id-separator", "verify", "a case id holding a backslash (a\\b_t1.nii.gz)",
         _separator_case("verify"), ("case id", "not usable")),
    Kind("case-id-separator", "evaluate", "a reference named a\\b.nii.gz", _separator_case("evaluate"),
         ("case id", "not usable"), PRED_LEFT),
]


# ---- folders: missing, empty, output inside input, read-only, disk full -------------------------
def _missing_input(command: str):
    def make(ctx: Ctx) -> Scenario:
        missing = ctx.tmp / "no such folder"
        if command == "verify":
            return Scenario(verify_args(ctx, missing), str(missing), [ctx.tmp])
        if command == "predict":
            return Scenario(predict_args(ctx, missing), str(missing), [ctx.tmp])
        if command == "evaluate":
            return Scenario(evaluate_args(missing, ctx.predictions()), str(missing), [ctx.tmp])
        if command == "train":
            ws = ctx.tmp / "ws"
            return Scenario(_s("Missing", "0", "--workspace", ws, "--device", "cpu"),
                            str(ws / "preprocessed" / "Missing" / "plans.json"), [ctx.tmp])
        if command == "compare":
            ws = ctx.tmp / "ws"
            return Scenario(_s("Missing", "--workspace", ws), str(ws / "results" / "Missing"), [ctx.tmp])
        raise ValueError(command)
    return make


def _empty_input(command: str):
    def make(ctx: Ctx) -> Scenario:
        empty = ctx.tmp / "empty"
        empty.mkdir()
        if command == "verify":
            return Scenario(verify_args(ctx, empty), str(empty), [ctx.tmp])
        if command == "predict":
            return Scenario(predict_args(ctx, empty), str(empty), [ctx.tmp])
        if command == "evaluate":
            return Scenario(evaluate_args(empty, ctx.predictions()), str(empty), [ctx.tmp])
        if command == "compare":
            ws = ctx.tmp / "ws"
            (ws / "results" / "Empty").mkdir(parents=True)
            return Scenario(_s("Empty", "--workspace", ws), str(ws / "results" / "Empty"), [ctx.tmp])
        raise ValueError(command)
    return make


def _output_inside_input(ctx: Ctx) -> Scenario:
    raw = ctx.raw()
    out = raw / "predictions"
    args = predict_args(ctx, raw)
    args[args.index("-o") + 1] = str(out)
    return Scenario(args, str(out), [ctx.tmp])


def _read_only(command: str):
    def make(ctx: Ctx) -> Scenario:
        if command == "predict":
            out = ctx.tmp / "out"
            out.mkdir()
            b.simulate_read_only(ctx.monkeypatch, out)
            return Scenario(predict_args(ctx, ctx.raw()), str(out), [ctx.tmp])
        if command == "evaluate":
            folder = ctx.tmp / "scores"
            folder.mkdir()
            b.simulate_read_only(ctx.monkeypatch, folder)
            pred = ctx.predictions()
            return Scenario(evaluate_args(ctx.raw(), pred, "-o", folder / "summary.json"),
                            str(folder / "summary.json"), [ctx.tmp])
        if command == "plan_and_preprocess":
            raw = ctx.raw()
            ws = ctx.tmp / "ws"
            ws.mkdir()
            b.simulate_read_only(ctx.monkeypatch, ws)
            return Scenario(plan_args(ctx, raw), str(ws), [ctx.tmp])
        if command == "train":
            ws = ctx.workspace()
            results = ws / "results"
            results.mkdir()
            b.simulate_read_only(ctx.monkeypatch, results)
            return Scenario(train_args(ctx), str(results / "Tiny" / "pfseg"), [ctx.tmp])
        if command == "make_synthetic":
            out = ctx.tmp / "synthetic"
            out.mkdir()
            b.simulate_read_only(ctx.monkeypatch, out)
            return Scenario(_s(out, "--cases", "1", "--shape", "24", "20", "16"), str(out), [ctx.tmp])
        raise ValueError(command)
    return make


def _disk_full(command: str):
    """The disk fills up while a file is written: the previous version of that file stays intact."""
    def make(ctx: Ctx) -> Scenario:
        if command == "predict":
            out = ctx.tmp / "out"
            out.mkdir()
            previous = out / f"{b.BAD}.nii.gz"
            shutil.copyfile(b.label_file(ctx.raw_template), previous)
            b.disk_full_nifti(ctx.monkeypatch, match=b.BAD)
            return Scenario(predict_args(ctx, ctx.raw(), None, "--overwrite"), str(previous), [ctx.tmp],
                            expect_outputs=predict_outputs(ctx), intact=[previous])
        if command == "evaluate":
            pred = ctx.predictions()
            previous = pred / "summary.json"
            previous.write_text('{"previous": true}\n')
            b.disk_full_fsync(ctx.monkeypatch, match="summary")
            return Scenario(evaluate_args(ctx.raw(), pred), str(previous), [ctx.tmp], intact=[previous])
        if command == "plan_and_preprocess":
            raw = ctx.raw()
            b.disk_full_fsync(ctx.monkeypatch, match=b.BAD)
            return Scenario(plan_args(ctx, raw), b.BAD, [ctx.tmp], allowed=(
                "fingerprint.json", "plans.json", "dataset.json", "splits.json",
                *(f"{c}.{ext}" for c in b.GOOD for ext in ("npz", "json"))))
        raise ValueError(command)
    return make


KINDS += [
    Kind("missing-input", "verify", "input folder that does not exist", _missing_input("verify"),
         ("does not exist",)),
    Kind("missing-input", "predict", "input folder that does not exist", _missing_input("predict"),
         ("does not exist",)),
    Kind("missing-input", "evaluate", "reference folder that does not exist", _missing_input("evaluate"),
         ("does not exist",)),
    Kind("missing-input", "evaluate", "prediction folder that does not exist", _missing_prediction_folder,
         ("does not exist",), variant="prediction"),
    Kind("missing-input", "train", "dataset never preprocessed", _missing_input("train"), ("not found",)),
    Kind("missing-input", "compare", "dataset without results", _missing_input("compare"), ("no results",)),
    Kind("empty-input", "verify", "empty input folder", _empty_input("verify"), ("no cases found",)),
    Kind("empty-input", "predict", "empty input folder", _empty_input("predict"), ("empty",)),
    Kind("empty-input", "evaluate", "empty reference folder", _empty_input("evaluate"),
         ("no reference label maps",)),
    Kind("empty-input", "compare", "results folder without trained networks", _empty_input("compare"),
         ("no trained network",)),
    Kind("output-inside-input", "predict", "output folder inside the input folder", _output_inside_input,
         ("inside the input",)),
    Kind("read-only-output", "predict", "output folder not writable (simulated: root ignores chmod)",
         _read_only("predict"), ("not writable",)),
    Kind("read-only-output", "evaluate", "summary folder not writable", _read_only("evaluate"),
         ("permission denied",)),
    Kind("read-only-output", "plan_and_preprocess", "workspace not writable",
         _read_only("plan_and_preprocess"), ("permission denied",)),
    Kind("read-only-output", "train", "results folder not writable", _read_only("train"),
         ("permission denied",)),
    Kind("read-only-output", "make_synthetic", "output folder not writable", _read_only("make_synthetic"),
         ("permission denied",)),
    Kind("disk-full", "predict", "disk full while a label map is written (--overwrite)",
         _disk_full("predict"), ("disk is full",),
         "the previous label map intact; the other cases' label maps, timings.json, the log"),
    Kind("disk-full", "evaluate", "disk full while summary.json is written", _disk_full("evaluate"),
         ("disk is full",), "the previous summary.json intact, the log"),
    Kind("disk-full", "plan_and_preprocess", "disk full while a case is cached",
         _disk_full("plan_and_preprocess"), ("disk is full",),
         "the plan and the other cases' cache files (complete); no file of the bad case"),
]


# ---- dataset.json, plans.json, checkpoints, networks --------------------------------------------
def _dataset_json(edit: Callable[[dict], object]):
    def make(ctx: Ctx) -> Scenario:
        dataset = b.nnunet_dataset_json()
        raw = b.to_nnunet(ctx.raw_template, ctx.tmp / "nnunet raw", dataset)
        edited = edit(dataset)
        path = raw / "dataset.json"
        path.write_text(edited if isinstance(edited, str) else json.dumps(edited))
        return Scenario(verify_args(ctx, raw), str(path), [ctx.tmp])
    return make


def _without(d: dict, key: str) -> dict:
    return {k: v for k, v in d.items() if k != key}


def _plans_edit(command: str, field_name: str, value):
    def make(ctx: Ctx) -> Scenario:
        folder = ctx.model() if command == "predict" else ctx.workspace() / "preprocessed" / "Tiny"
        path = folder / "plans.json"
        plans = json.loads(path.read_text())
        target = plans
        *parents, last = field_name.split(".")
        for p in parents:
            target = target[p]
        target[last] = value
        path.write_text(json.dumps(plans, indent=2))
        args = predict_args(ctx, ctx.raw(), folder) if command == "predict" else train_args(ctx)
        return Scenario(args, str(path), [ctx.tmp])
    return make


def _other_plan_checkpoint(ctx: Ctx) -> Scenario:
    """The folder's plans say widths (4, 8, 8); the checkpoint was trained with (4, 8, 16)."""
    from pfseg_pipeline.plans import load_plans

    model = ctx.model()
    plans = load_plans(model / "plans.json")
    plans.network.widths = [4, 8, 16]
    path = model / "fold_0" / "checkpoint_final.pt"
    save_random_checkpoint(path, plans)
    return Scenario(predict_args(ctx, ctx.raw(), model), str(path), [ctx.tmp])


def _corrupt_checkpoint(command: str, how: str):
    def make(ctx: Ctx) -> Scenario:
        if command == "predict":
            path = ctx.model() / "fold_0" / "checkpoint_final.pt"
        else:
            path = ctx.workspace() / "results" / "Tiny" / "pfseg" / "fold_all" / "checkpoint_latest.pt"
            path.parent.mkdir(parents=True)
            shutil.copyfile(ctx.model_template / "fold_0" / "checkpoint_final.pt", path)
        if how == "truncated":
            b.truncate(path)
        else:  # a pickled Python object inside: weights_only=True refuses it, nothing runs
            import argparse

            import torch
            torch.save({"network": "pfseg", "model": {}, "epoch": argparse.Namespace(a=1)}, path)
        if command == "predict":
            return Scenario(predict_args(ctx, ctx.raw()), str(path), [ctx.tmp])
        return Scenario(train_args(ctx, "--continue"), str(path), [ctx.tmp],
                        allowed=("plans.json", "dataset.json"))
    return make


def _corrupt_cache(ctx: Ctx) -> Scenario:
    """Cached cases cut in half (a disk error after preprocessing): training names the first it
    reads (every case is damaged, so which one the sampler draws first does not matter)."""
    cases = ctx.workspace() / "preprocessed" / "Tiny" / "cases"
    for case in b.CASES:
        b.truncate(cases / f"{case}.npz")
    return Scenario(train_args(ctx), str(cases), [ctx.tmp], allowed=("plans.json", "dataset.json"))


def _missing_fold(ctx: Ctx) -> Scenario:
    model = ctx.model()
    return Scenario(predict_args(ctx, ctx.raw(), model, "-f", "3"),
                    str(model / "fold_3" / "checkpoint_final.pt"), [ctx.tmp])


def _unknown_checkpoint_network(ctx: Ctx) -> Scenario:
    import torch

    model = ctx.model()
    path = model / "fold_0" / "checkpoint_final.pt"
    ckpt = torch.load(path, weights_only=True)
    ckpt["network"] = "transunet"
    torch.save(ckpt, path)
    return Scenario(predict_args(ctx, ctx.raw(), model), str(path), [ctx.tmp])


def _unknown_network(command: str):
    def make(ctx: Ctx) -> Scenario:
        if command == "train":
            return Scenario(train_args(ctx, "--network", "transunet"), "--network", [ctx.tmp])
        return Scenario(predict_args(ctx, ctx.raw(), None, "--network", "transunet"), "transunet", [ctx.tmp])
    return make


KINDS += [
    Kind("dataset-json", "verify", "nnU-Net dataset.json without channel_names",
         _dataset_json(lambda d: _without(d, "channel_names")), ("channel_names",), variant="channels"),
    Kind("dataset-json", "verify", "nnU-Net dataset.json with file_ending .mha",
         _dataset_json(lambda d: d | {"file_ending": ".mha"}), ("file_ending",), variant="file-ending"),
    Kind("dataset-json", "verify", "nnU-Net dataset.json with labels that are not BraTS",
         _dataset_json(lambda d: d | {"labels": {"background": 0, "tumour": 5}}), ("labels",),
         variant="labels"),
    Kind("dataset-json", "verify", "nnU-Net dataset.json with a channel that is not an MR modality",
         _dataset_json(lambda d: d | {"channel_names": {"0": "CT"}}), ("channel", "CT"), variant="modality"),
    Kind("dataset-json", "verify", "nnU-Net dataset.json that is not valid JSON",
         _dataset_json(lambda d: '{"channel_names": {"0": "t1"'), ("not valid json",), variant="syntax"),
    Kind("plans-invalid", "train", "plans.json: hr_shape_zyx not a multiple of the divisor",
         _plans_edit("train", "hr_shape_zyx", [15, 16, 16]), ("hr_shape_zyx", "multiple")),
    Kind("plans-invalid", "train", "plans.json: training.epochs is a string",
         _plans_edit("train", "training.epochs", "ten"), ("training.epochs", "integer"), variant="type"),
    Kind("plans-invalid", "predict", "plans.json: network.widths not a list of integers",
         _plans_edit("predict", "network.widths", "wide"), ("network.widths", "integers")),
    Kind("plans-invalid", "predict", "plans.json: unknown normalization",
         _plans_edit("predict", "normalization", "zscore2"), ("normalization", "zscore2"), variant="value"),
    Kind("checkpoint-other-plan", "predict", "checkpoint trained with other widths than plans.json",
         _other_plan_checkpoint, ("weights do not fit", "another plan")),
    Kind("corrupt-checkpoint", "predict", "truncated checkpoint_final.pt",
         _corrupt_checkpoint("predict", "truncated"), ("checkpoint",)),
    Kind("corrupt-checkpoint", "predict", "checkpoint holding a pickled Python object (refused unread)",
         _corrupt_checkpoint("predict", "pickled"), ("checkpoint",), variant="pickled"),
    Kind("corrupt-checkpoint", "train",
         "truncated checkpoint_latest.pt with --continue (no generation before it)",
         _corrupt_checkpoint("train", "truncated"), ("checkpoint",),
         "the training log and the copies of plans.json and dataset.json in the network folder"),
    Kind("corrupt-cache", "train", "cached cases (cases/<case>.npz) truncated", _corrupt_cache,
         ("corrupt or truncated",), "the training log and the copies of plans.json and dataset.json"),
    Kind("missing-checkpoint", "predict", "-f 3 where no fold_3 was trained", _missing_fold,
         ("checkpoint not found",)),
    Kind("unknown-network", "train", "--network transunet", _unknown_network("train"), ("invalid choice",)),
    Kind("unknown-network", "predict", "--network transunet", _unknown_network("predict"),
         ("unknown network",)),
    Kind("unknown-network", "predict", "checkpoint naming network 'transunet'", _unknown_checkpoint_network,
         ("transunet",), variant="checkpoint"),
]


# ---- option values --------------------------------------------------------------------------------
def _cli(command: str, *args: str, names: str):
    def make(ctx: Ctx) -> Scenario:
        if command == "make_synthetic":
            argv = _s(ctx.tmp / "synthetic", *args)
        elif command == "predict":
            argv = predict_args(ctx, ctx.raw(), None, *args)
        elif command == "evaluate":
            argv = evaluate_args(ctx.raw(), ctx.predictions(), *args)
        elif command == "train":
            argv = train_args(ctx, *args)
        elif command == "plan_and_preprocess":
            argv = plan_args(ctx, ctx.raw()) + list(args)
        else:
            raise ValueError(command)
        return Scenario(argv, names, [ctx.tmp])
    return make


def _train_fold_seven(ctx: Ctx) -> Scenario:
    argv = train_args(ctx)
    argv[1] = "7"
    return Scenario(argv, "FOLD", [ctx.tmp])


KINDS += [
    Kind("bad-option", "make_synthetic", "--shape with 2 numbers",
         _cli("make_synthetic", "--shape", "24", "20", names="--shape"), ("expected 3",), variant="shape"),
    Kind("bad-option", "make_synthetic", "--cases -1",
         _cli("make_synthetic", "--cases", "-1", names="--cases"), ("at least 1",), variant="cases"),
    Kind("bad-option", "make_synthetic", "--shape 4 4 4 (too small)",
         _cli("make_synthetic", "--shape", "4", "4", "4", names="--shape"), ("too small",), variant="tiny"),
    Kind("bad-option", "plan_and_preprocess", "-np 0", _cli("plan_and_preprocess", "-np", "0", names="-np"),
         ("at least 1",), variant="np"),
    Kind("bad-option", "plan_and_preprocess", "-d ../escape (a dataset name with a path)",
         _cli("plan_and_preprocess", "-d", "../escape", names="../escape"), ("dataset name",),
         variant="name"),
    Kind("bad-option", "plan_and_preprocess", "--lr-scale 2 2 (two values)",
         _cli("plan_and_preprocess", "--lr-scale", "2", "2", names="--lr-scale"), ("one or three",),
         variant="lr-scale"),
    Kind("bad-option", "predict", "--workers -1", _cli("predict", "--workers", "-1", names="--workers"),
         ("0 or more",), variant="workers"),
    Kind("bad-option", "predict", "--device tpu", _cli("predict", "--device", "tpu", names="tpu"),
         ("choose",), variant="device"),
    Kind("bad-option", "evaluate", "-np 0", _cli("evaluate", "-np", "0", names="-np"), ("at least 1",),
         variant="np"),
    Kind("bad-option", "train", "--epochs 0", _cli("train", "--epochs", "0", names="--epochs"),
         ("at least 1",), variant="epochs",
         left="the training log and the copies of plans.json and dataset.json"),
    Kind("bad-option", "train", "FOLD 7", _train_fold_seven, ("invalid choice",), variant="fold"),
]


# ---- runs at once, a changed plan, a device out of memory ------------------------------------------
def _held_by_another_run(what: str):
    """A live process (pytest's parent) holds the folder the command needs: it is refused, one
    line naming that run, and nothing of the holder's is touched."""
    def make(ctx: Ctx) -> Scenario:
        if what == "fold":
            folder = ctx.workspace() / "results" / "Tiny" / "pfseg" / "fold_all"
            lock = b.foreign_lock(folder / ".pfseg.lock", "pfseg_train Tiny all")
            argv = train_args(ctx)
        elif what == "dataset":
            folder = ctx.workspace() / "preprocessed" / "Tiny"
            lock = b.foreign_lock(folder / ".pfseg.lock", "pfseg_plan_and_preprocess -d Tiny")
            argv = train_args(ctx)
        elif what == "reader":
            folder = ctx.tmp / "ws" / "preprocessed" / "Bad"
            lock = b.foreign_lock(folder / f".pfseg.reader.{socket.gethostname()}.{os.getppid()}.json",
                                  "pfseg_train Bad 0")
            argv = plan_args(ctx, ctx.raw())
        else:
            folder = ctx.tmp / "out"
            lock = b.foreign_lock(folder / ".pfseg.lock", "pfseg_predict -o out")
            argv = predict_args(ctx, ctx.raw())
        return Scenario(argv, str(folder), [ctx.tmp], intact=[lock])
    return make


def _changed_plans(ctx: Ctx) -> Scenario:
    """A fold trained for one epoch, then plans.json edited (another learning rate)."""
    from pfseg_pipeline.cli import train
    from pfseg_pipeline.cli.common import run

    assert run(train.main, train_args(ctx)) == 0
    plans_file = ctx.workspace() / "preprocessed" / "Tiny" / "plans.json"
    plans = json.loads(plans_file.read_text())
    plans["training"]["lr"] = 0.1
    plans_file.write_text(json.dumps(plans))
    network = ctx.workspace() / "results" / "Tiny" / "pfseg"
    return Scenario(train_args(ctx, "--continue", "--epochs", "2"), str(plans_file), [ctx.tmp],
                    intact=[network / "plans.json", network / "fold_all" / "checkpoint_latest.pt"])


def _out_of_memory(ctx: Ctx) -> Scenario:
    """torch.OutOfMemoryError injected into the second training step (epoch 1), on the CPU."""
    import torch

    from pfseg_pipeline.training import trainer

    plans_file = ctx.workspace() / "preprocessed" / "Tiny" / "plans.json"
    plans = json.loads(plans_file.read_text())
    plans["memory"] = {"budget_gb": 11.0, "predicted_peak_bytes": {"pfseg": 9 * 2**30},
                       "batch_size": {"pfseg": 1}}
    plans_file.write_text(json.dumps(plans))
    real_step, steps = trainer.train_step, []

    def step(*args, **kwargs):
        steps.append(1)
        if len(steps) == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real_step(*args, **kwargs)

    ctx.monkeypatch.setattr(trainer, "train_step", step)
    fold = ctx.workspace() / "results" / "Tiny" / "pfseg" / "fold_all"

    def check() -> None:
        from pfseg_pipeline.checkpoints import read_checkpoint

        assert read_checkpoint(fold / "checkpoint_latest.pt")["epoch"] == 1
        assert not (fold / "checkpoint_final.pt").exists()

    return Scenario(train_args(ctx, "--epochs", "2"), str(fold / "checkpoint_latest.pt"), [ctx.tmp],
                    allowed=("plans.json", "dataset.json", "checkpoint_latest.pt", "metrics.csv",
                             "progress.png"), check=check)


TRAINING_LEFT = "the training log and the copies of plans.json and dataset.json"
KINDS += [
    Kind("locked", "train", "the fold folder is held by another running pfseg_train (a live process)",
         _held_by_another_run("fold"), ("another pfseg run is using this fold folder", "pid")),
    Kind("locked", "train",
         "the preprocessed dataset is being rewritten by a running pfseg_plan_and_preprocess",
         _held_by_another_run("dataset"), ("another pfseg run is using this preprocessed dataset", "pid"),
         variant="dataset"),
    Kind("locked", "plan_and_preprocess", "the preprocessed dataset is being read by a running pfseg_train",
         _held_by_another_run("reader"), ("another pfseg run is reading this preprocessed dataset", "pid")),
    Kind("locked", "predict", "the output folder is being written by another running pfseg_predict",
         _held_by_another_run("output"), ("another pfseg run is using this prediction output folder", "pid")),
    Kind("plans-changed", "train", "--continue after plans.json changed since the checkpoint (training.lr)",
         _changed_plans, ("changed since checkpoint_latest.pt", "training.lr", "--force"),
         "the training log (the checkpoint and the network folder's plans.json as they were)"),
    Kind("out-of-memory", "train", "CUDA out of memory in the 2nd training step (injected on the CPU)",
         _out_of_memory, ("out of memory", "9.0 GiB", "intact", "--gpu-memory-gb 8.5"),
         f"{TRAINING_LEFT}; checkpoint_latest.pt of epoch 1 intact, metrics.csv", exit_code=1),
]


# ---- odd but valid inputs: every command simply works (exit 0) ----------------------------------
@dataclass(frozen=True)
class Odd:
    id: str
    problem: str
    make: Callable[[Path], Path]   # (a writable copy of the raw dataset) -> the dataset to use


def _spaces_non_ascii(raw: Path) -> Path:
    dest = raw.parent / "données d'entrée ü 脑"
    raw.rename(dest)
    case = dest / b.BAD
    new_id = "Ünïcode case 02"
    folder = dest / new_id
    case.rename(folder)
    for path in sorted(folder.iterdir()):
        path.rename(folder / path.name.replace(b.BAD, new_id))
    return dest


def _extra_files(raw: Path) -> Path:
    (raw / "README.txt").write_text("notes\n")
    (raw / b.BAD / "notes.json").write_text("{}\n")
    (raw / b.BAD / "screenshot.png").write_bytes(b"\x89PNG")
    (raw / ".DS_Store").write_bytes(b"\0\0")
    (raw / "survival_info.csv").write_text("id,age\n")
    (raw / b.CASES[0] / f"{b.CASES[0]}_t1_mask.nii.gz").write_bytes(b"")  # not a modality name
    return raw


def _mixed_suffixes(raw: Path) -> Path:
    for modality in ("t1", "flair"):
        b.to_uncompressed(b.image_file(raw, modality=modality))
    b.to_uncompressed(b.label_file(raw, b.CASES[0]))
    return raw


def _scaled_int16(raw: Path) -> Path:
    for modality in b.MODALITIES:
        b.scaled_int16(b.image_file(raw, modality=modality))
    return raw


def _oblique(raw: Path) -> Path:
    b.oblique_case(raw / b.BAD, degrees=12.0)
    return raw


def _ras_oblique(raw: Path) -> Path:
    b.oblique_case(raw / b.BAD, degrees=-7.0, ras=True)
    return raw


def _no_tumour(raw: Path) -> Path:
    b.no_tumour(b.label_file(raw))
    return raw


ODD = [
    Odd("spaces-non-ascii", "spaces and non-ASCII characters in folder, file and case names",
        _spaces_non_ascii),
    Odd("extra-files", "unrelated files beside the cases (txt, csv, png, .DS_Store, *_mask.nii.gz)",
        _extra_files),
    Odd("mixed-suffixes", ".nii and .nii.gz files mixed within a case and across cases", _mixed_suffixes),
    Odd("scaled-int16", "int16 images with scl_slope 0.5 and scl_inter 10", _scaled_int16),
    Odd("oblique-lps", "an LPS case on an oblique grid (rotated 12 degrees)", _oblique),
    Odd("oblique-ras", "a RAS case on an oblique grid (rotated -7 degrees)", _ras_oblique),
    Odd("no-tumour", "a case without tumour (all-zero label map)", _no_tumour),
]
ODD_COMMANDS = ("verify", "plan_and_preprocess", "predict", "evaluate")


def case_ids(raw: Path) -> list[str]:
    """The case ids of a (possibly renamed) BraTS-layout dataset: its case folders."""
    return sorted(p.name for p in raw.iterdir() if p.is_dir())


# ---- the tiny model and workspace the rows use ------------------------------------------------------
def tiny_plans(widths=(4, 8, 8)):
    from pfseg_pipeline.data.labels import BRATS2020
    from pfseg_pipeline.plans import GuidancePlan, NetworkPlan, PatchPlan, Plans, TrainingPlan

    plans = Plans(dataset_name="Tiny", modalities=list(b.MODALITIES), label_scheme=BRATS2020.to_json(),
                  hr_shape_zyx=[16, 16, 16], target_spacing_zyx=[1.0, 1.0, 1.0], preset="demo",
                  guidance=GuidancePlan([4, 4, 4], "center"), network=NetworkPlan(list(widths), [4, 8], 4),
                  patch_based=PatchPlan([8, 8, 8]),
                  training=TrainingPlan(epochs=1, iterations_per_epoch=1, lr=1e-3, scheduler="poly", seed=3))
    plans.validate()
    return plans


def save_random_checkpoint(path: Path, plans, network: str = "pfseg", seed: int = 0) -> None:
    """A checkpoint in the trainer's format (docs/ARCHITECTURE.md) holding random weights."""
    import torch

    from pfseg_pipeline.networks.registry import build_network

    torch.manual_seed(seed)
    model = build_network(network, plans)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"network": network, "network_options": dict(getattr(model, "options", {})),
                "model": model.state_dict(), "plans": plans.to_json(), "epoch": 1}, path)


def write_model_dir(folder: Path) -> Path:
    from pfseg_pipeline.fileio import write_json
    from pfseg_pipeline.plans import save_plans

    plans = tiny_plans()
    save_plans(plans, folder / "plans.json")
    write_json(folder / "dataset.json", {"name": "Tiny", "modalities": plans.modalities,
                                         "label_scheme": plans.label_scheme})
    save_random_checkpoint(folder / "fold_0" / "checkpoint_final.pt", plans)
    return folder


def write_workspace(root: Path) -> Path:
    """preprocessed/Tiny: three cached cases (4 x 16 x 16 x 16), plans, dataset.json, splits.json."""
    from pfseg_pipeline.fileio import save_npz, write_json
    from pfseg_pipeline.plans import save_plans
    from pfseg_pipeline.splits import make_splits

    plans = tiny_plans()
    pre = root / "preprocessed" / "Tiny"
    rng = np.random.default_rng(0)
    for case in b.CASES:
        seg = np.zeros((16, 16, 16), np.uint8)
        seg[5:11, 5:11, 5:11] = 2
        seg[7:9, 7:9, 7:9] = 4
        image = rng.normal(0, 1, (4, 16, 16, 16)).astype(np.float32) + (seg > 0)
        save_npz(pre / "cases" / f"{case}.npz", image=image, seg=seg)
        write_json(pre / "cases" / f"{case}.json", {"case": case, "spacing_zyx": [1.0, 1.0, 1.0]})
    save_plans(plans, pre / "plans.json")
    write_json(pre / "dataset.json", {"name": "Tiny", "cases": list(b.CASES), "modalities": plans.modalities,
                                      "label_scheme": plans.label_scheme})
    write_json(pre / "splits.json", make_splits(list(b.CASES), plans.training.split_seed))
    return root


# ---- crashes (SIGKILL at a deterministic point, then the same command again) ----------------------
@dataclass(frozen=True)
class Crash:
    id: str
    module: str          # pfseg_pipeline.cli.<module>
    pattern: str         # the kill is tied to the k-th atomic write of a file matching this
    k: int
    when: str            # "before": temporary file written, not renamed; "after": just renamed
    killed_when: str
    rerun: str
    compared: str

    @property
    def console(self) -> str:
        return f"pfseg_{self.module}"


CRASHES = [
    Crash("plan_and_preprocess-mid-write", "plan_and_preprocess", "*.npz", 2, "before",
          "the 2nd case's cache file is fully written under its temporary name, not yet renamed",
          "the same command completes: the 1st case is kept (current), the others are built",
          "every cases/*.npz byte-identical; every JSON file equal but for timings"),
    Crash("predict-mid-write", "predict", "*.nii.gz", 2, "before",
          "the 2nd label map is fully written under its temporary name, not yet renamed",
          "the same command completes: the 1st case is skipped (output present), the others predicted",
          "every label map byte-identical"),
    Crash("predict-after-write", "predict", "*.nii.gz", 1, "after",
          "the 1st label map has just been renamed into place",
          "the same command completes: the 1st case is skipped, the others predicted",
          "every label map byte-identical"),
    Crash("train-mid-checkpoint", "train", "checkpoint_latest.pt", 2, "before",
          "the checkpoint of epoch 2 of 3 is fully written under its temporary name, not yet renamed",
          "`--continue` resumes from the intact checkpoint of epoch 1 and finishes",
          "metrics.csv rows equal (timing columns excluded); final weights equal"),
]
CRASH_NOTE = ("A killed write never leaves an incomplete file under a final name; its temporary file (a "
              "hidden `.NAME.XXXX.tmpSUFFIX` beside the destination) may stay behind, and every reader "
              "ignores it (names starting with a dot).")

LIMITS = [
    ("plan_and_preprocess (fingerprint, preprocessing)", "worker processes = min(-np or CPUs, cases, 80 % "
     "of the free memory / (a worker's base + bytes per voxel x the largest case)), at least 1",
     "test_resources.py: the count from monkeypatched free-memory figures; -np 3 with memory for one "
     "worker fingerprints and preprocesses in-process"),
    ("verify", "worker processes lowered to fit 80 % of the free memory (one float32 image of the "
     "largest case, read from the headers, per worker)",
     "test_resources.py: the count from monkeypatched free-memory figures; -np 3 with memory for one "
     "worker verifies in-process"),
    ("verify, fingerprint, preprocessing", "one case per task: a worker holds one case at a time, and "
     "nothing of a finished case stays in memory",
     "test_resources.py: per-case functions never overlap in a worker, and the traced memory at the start "
     "of each of 9 cases does not grow (a reader that keeps every case fails the same check)"),
    ("discovery", "file names only: no voxel is read to find the cases", "test_resources.py: nibabel.load "
     "refused during discovery"),
    ("predict", "at most --workers cases read ahead, one in the network, two waiting for the writer",
     "test_resources.py: cases between read and written never exceed workers + 3 (9 cases, 1 worker)"),
    ("every writer", "disk full: the previous file stays intact, no temporary file left",
     "test_resources.py (fileio writers, NIfTI writer) and the disk-full rows above"),
    ("plan_and_preprocess at scale", "the peak resident memory of the whole process tree does not grow "
     "with the number of cases (40 cases of 240x240x155 within 15 % of 8)",
     "bench/preprocess_memory.py (a benchmark, not CI): docs/BENCHMARKS.md"),
]
