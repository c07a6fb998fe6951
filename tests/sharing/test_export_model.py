"""pfseg_export_model: what a package holds (and does not), its options, its formats, its size."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import torch

from pfseg_pipeline.cli.common import run
from pfseg_pipeline.cli.export_model import main
from pfseg_pipeline.fileio import write_json
from pfseg_pipeline.inference.postprocessing import Postprocessing
from pfseg_pipeline.model_package.archive import extract_package
from pfseg_pipeline.networks.registry import build_network, inference_parameter_count
from pfseg_pipeline.plans import load_plans
from pfseg_pipeline.sharing.build import absolute_paths, export_model
from tests.inference.conftest import save_fold, tiny_plans, write_model_dir

from .conftest import FINGERPRINT, NAME, SUMMARY, TRAIN_SUMMARY, make_workspace

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def export(root: Path, *args: str) -> int:
    return run(main, [NAME, *args, "--workspace", str(root)])


def members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {i.filename: archive.read(i) for i in archive.infolist()}


def test_the_package_holds_what_prediction_needs_and_no_path(workspace_with_model, tmp_path, capsys):
    root, model_dir = workspace_with_model
    write_json(model_dir / "postprocessing.json",
               Postprocessing(("WT", "TC", "ET"), ("WT",), small_et_threshold_mm3=500.0).to_json())
    out = tmp_path / "pfseg tiny.zip"
    assert export(root, "-o", str(out)) == 0
    assert f"{out}: pfseg, fold(s) 0, 1, checkpoint_final, pytorch" in capsys.readouterr().out
    files = members(out)
    assert sorted(files) == sorted([
        "pfseg_model.json", "plans.json", "dataset.json", "fingerprint.json", "postprocessing.json",
        "fold_0/checkpoint_final.safetensors", "fold_1/checkpoint_final.safetensors",
        "model_card.json", "MODEL_CARD.md"])
    # carried verbatim: plans.json as trained, the postprocessing choice, the workspace's fingerprint
    assert files["plans.json"] == (model_dir / "plans.json").read_bytes()
    assert files["postprocessing.json"] == (model_dir / "postprocessing.json").read_bytes()
    assert json.loads(files["fingerprint.json"]) == FINGERPRINT
    dataset = json.loads(files["dataset.json"])
    assert dataset["name"] == NAME and dataset["modalities"] == ["t1", "t2"] and dataset["layout"] == "brats"
    assert "raw_root" not in dataset and "cases" not in dataset
    for name, data in files.items():                    # no member mentions the exporting machine
        assert str(root).encode() not in data and str(tmp_path).encode() not in data, name
        if name.endswith(".json"):
            assert absolute_paths(json.loads(data)) == [], name
    manifest = json.loads(files["pfseg_model.json"])
    assert (manifest["network"], manifest["variant"], manifest["folds"], manifest["checkpoint"],
            manifest["format"], manifest["dataset"]) == ("pfseg", None, ["0", "1"], "final", "pytorch", NAME)


def test_the_model_card_says_what_was_trained_and_how_well_it_did(workspace_with_model, tmp_path):
    root, model_dir = workspace_with_model
    assert export(root, "-o", str(tmp_path / "m.zip")) == 0
    files = members(tmp_path / "m.zip")
    card = json.loads(files["model_card.json"])
    network = build_network("pfseg", tiny_plans())
    assert card["name"] == f"{NAME}/pfseg"
    # the plan's default inference (training.tta on; every axis flips in training)
    assert card["model"]["inference"] == ("whole volume, mean over 8 mirror combinations "
                                          "(pfseg_predict --no-tta: one pass)")
    assert card["model"]["parameters"] == {
        "inference": inference_parameter_count(network),
        "training_only": sum(p.numel() for p in network.sr_decoder.parameters())}
    assert card["input"]["modalities"] == ["t1", "t2"] and card["input"]["regions"] == ["WT", "TC", "ET"]
    assert card["training_data"]["cases"] == 10 and card["training_data"]["orientations"] == {"LPS": 10}
    fold0, fold1 = card["folds"]
    assert fold0["epochs"] == 50 and fold0["train_cases"] == 8 and fold0["split"] == "folds"
    assert fold0["validation"]["regions"]["WT"]["dice_mean"] == SUMMARY["summary"]["WT"]["dice"]["mean"]
    assert fold0["validation"]["regions"]["ET"]["hd95_mean"] == 3.5
    assert fold1["validation"] is None and fold1["epochs"] is None       # no files for fold 1
    assert fold0["trained_on"] == TRAIN_SUMMARY["compute"] and fold1["trained_on"] is None
    assert card["versions"]["pfseg_pipeline"] and card["versions"]["torch"] == torch.__version__
    text = files["MODEL_CARD.md"].decode()
    assert "| 0 | 50 | folds | 8 / 2 | WT | 0.8125 (0.0500) | 3.50 (1.00) |" in text
    assert "| 1 | - | - | - / - | - | - (-) | - (-) |" in text
    assert "10 case(s), 10 labelled" in text and "Not a medical device" in text
    assert "Trained on fold 0: AMD EPYC (AVX2), torch 2.13.0+cpu." in text   # fold 1 has no summary


def test_folds_checkpoint_and_variant(tmp_path, capsys):
    root = tmp_path / "ws"
    model_dir = make_workspace(root, variant="us", folds=(0, 1, 2))
    save_fold(model_dir, 1, build_network("pfseg", tiny_plans()).eval(), "pfseg", tiny_plans(), "best")
    out = tmp_path / "best.zip"
    assert export(root, "-o", str(out), "--variant", "us", "-f", "1", "--checkpoint", "best") == 0
    manifest = json.loads(members(out)["pfseg_model.json"])
    assert (manifest["variant"], manifest["folds"], manifest["checkpoint"]) == ("us", ["1"], "best")
    assert "fold_1/checkpoint_best.safetensors" in members(out)
    capsys.readouterr()
    # refusals: one line each, exit 2
    for args, words in [
        (["-o", str(out), "--variant", "us"], "best.zip: already exists (--overwrite replaces it)"),
        (["-o", str(tmp_path / "m.tar"), "--variant", "us"], "m.tar: the package is a zip file"),
        (["-o", str(tmp_path / "a.zip"), "--variant", "us", "--checkpoint", "latest"],
         "invalid choice: 'latest'"),
        (["-o", str(tmp_path / "b.zip")], "no trained pfseg for dataset 'Tiny'"),     # no variant: no folder
        (["-o", str(tmp_path / "c.zip"), "--variant", "us", "-f", "7"],
         "checkpoint_final.pt: checkpoint not found"),
        (["-o", str(tmp_path / "d.zip"), "--variant", "us", "--checkpoint", "best", "-f", "0"],
         "fold_0/checkpoint_best.pt: checkpoint not found"),
    ]:
        assert export(root, *args) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0], (args, err)
    assert export(root, "-o", str(out), "--variant", "us", "--overwrite") == 0
    assert json.loads(members(out)["pfseg_model.json"])["folds"] == ["0", "1", "2"]


def test_a_json_file_with_an_absolute_path_is_not_shipped(workspace_with_model, tmp_path, capsys):
    root, model_dir = workspace_with_model
    write_json(root / "preprocessed" / NAME / "fingerprint.json",
               {**FINGERPRINT, "dataset": {**FINGERPRINT["dataset"], "fitted_on": "/home/someone/cases"}})
    assert export(root, "-o", str(tmp_path / "m.zip")) == 2
    assert "fingerprint.json: holds an absolute path at 'dataset.fitted_on'" in capsys.readouterr().err
    assert not (tmp_path / "m.zip").exists()


def test_onnx_and_torchscript_packages_hold_forward_infer(workspace_with_model, tmp_path, same_logits):
    pytest.importorskip("onnxruntime")
    from pfseg_pipeline.export.onnx_runtime import OnnxRunner
    from pfseg_pipeline.export.torchscript_export import load_torchscript
    from pfseg_pipeline.inference.predictor import load_models

    root, model_dir = workspace_with_model
    reference = load_models(model_dir, ["0"]).models[0]
    image = torch.randn(2, 2, 32, 16, 48)                  # another batch and shape than exported
    with torch.no_grad():
        expected = reference.forward_infer(image)
    for fmt in ("onnx", "torchscript"):
        out = tmp_path / f"{fmt}.zip"
        assert export(root, "-o", str(out), "--format", fmt, "-f", "0") == 0
        folder = tmp_path / fmt
        manifest = extract_package(out, folder)
        assert manifest.format == fmt
        assert manifest.inference_parameters == inference_parameter_count(reference)
        weights = folder / manifest.weights("0")
        if fmt == "onnx":
            actual = OnnxRunner(weights).forward_infer(image)
        else:
            module, metadata = load_torchscript(weights)
            assert metadata["network"] == "pfseg"
            with torch.no_grad():
                actual = module(image)
        same_logits(actual, expected)


@pytest.mark.parametrize("plans_file, network", [("plans_main_default.json", "pfseg"), (None, "pfseg"),
                                                 (None, "resunet3d")])
def test_the_zip_is_at_most_1_3_x_4_bytes_per_inference_parameter_plus_1_mb(tmp_path, plans_file, network):
    """Issue 16's size bound, at the default preset's size (paper widths, ~10 M parameters at
    inference) and tiny: weights stored as float32 without the training-only modules."""
    plans = load_plans(FIXTURES / plans_file) if plans_file else tiny_plans()
    model_dir = tmp_path / "model"
    model = write_model_dir(model_dir, plans, network)[0]
    exported = export_model(model_dir, tmp_path / "m.zip")
    parameters = inference_parameter_count(model)
    assert exported.manifest.inference_parameters == parameters
    assert exported.bytes <= 1.3 * 4 * parameters + 1_000_000
    checkpoint = (model_dir / "fold_0" / "checkpoint_final.pt").stat().st_size
    if plans_file:   # the checkpoint holds the SR decoder too: the package is a fraction of it
        assert parameters > 5_000_000 and exported.bytes < 0.75 * checkpoint


@pytest.fixture
def same_logits():
    from tests.export.conftest import assert_same_logits

    return assert_same_logits


def test_the_card_names_one_pass_where_the_plan_predicts_so():
    from pfseg_pipeline.sharing.model_card import inference_words

    plans = tiny_plans()
    plans.training.tta = False
    assert inference_words(True, plans) == "whole volume, one pass"
    plans.training.tta = True
    plans.training.augmentation.mirror_axes = [1, 2]          # the paper's in-plane flips
    assert inference_words(False, plans) == ("Gaussian sliding window, mean over 4 mirror combinations "
                                             "(pfseg_predict --no-tta: one pass)")
