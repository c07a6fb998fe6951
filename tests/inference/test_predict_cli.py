"""pfseg_predict end to end: skipping, --overwrite, bad cases, --model-dir, bad checkpoints, folders."""

import json
import os
import re
import shutil

import nibabel as nib
import numpy as np
import pytest

from pfseg_pipeline.cli.common import run
from pfseg_pipeline.cli.predict import main
from pfseg_pipeline.inference.pipeline import predict_folder
from pfseg_pipeline.networks.registry import build_network

from .conftest import save_fold, tiny_plans, write_case, write_model_dir


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A workspace with pfseg (2 folds) and resunet3d (1 fold) trained on a tiny plan; 3 cases."""
    root = tmp_path_factory.mktemp("predict")
    plans = tiny_plans()
    write_model_dir(root / "ws" / "results" / "Tiny" / "pfseg", plans, "pfseg", folds=(0, 1))
    write_model_dir(root / "ws" / "results" / "Tiny" / "resunet3d", plans, "resunet3d", folds=(0,), seed=5)
    for i in range(3):
        write_case(root / "in", f"case_{i}", shape_zyx=(12 + i, 17, 15), seed=i)
    return root


def predict(*args):
    return run(main, [*map(str, args), "--device", "cpu", "--no-progress"])


def labels(path):
    return np.asarray(nib.load(path).dataobj)


def test_predicts_every_case_and_writes_timings(workspace, tmp_path):
    out = tmp_path / "out"
    assert predict("-i", workspace / "in", "-o", out, "-d", "Tiny", "--workspace", workspace / "ws") == 0
    assert sorted(p.name for p in out.glob("*.nii.gz")) == [f"case_{i}.nii.gz" for i in range(3)]
    timings = json.loads((out / "timings.json").read_text())
    assert {"per_case", "device", "network", "folds", "tta"} <= set(timings)
    # the plan's default inference (training.tta: the mirrors)
    assert timings["network"] == "pfseg" and timings["folds"] == ["0", "1"] and timings["tta"] is True
    assert [t["case"] for t in timings["per_case"]] == ["case_0", "case_1", "case_2"]
    for entry in timings["per_case"]:
        parts = [entry[k] for k in ("read", "preprocess", "network", "export")]
        assert all(v >= 0 for v in parts) and entry["total"] == pytest.approx(sum(parts), abs=1e-3)
    assert (out / "pfseg_predict.log").is_file()


def test_the_plans_tta_is_the_default_and_the_flags_override_it(workspace, tmp_path):
    source = ["-i", workspace / "in", "-d", "Tiny", "--workspace", workspace / "ws"]
    assert predict(*source, "-o", tmp_path / "default") == 0
    assert predict(*source, "-o", tmp_path / "one", "--no-tta") == 0
    model = tmp_path / "model"                       # the same weights, a plan that says one pass
    shutil.copytree(workspace / "ws" / "results" / "Tiny" / "pfseg", model)
    plans = json.loads((model / "plans.json").read_text())
    plans["training"]["tta"] = False
    (model / "plans.json").write_text(json.dumps(plans))
    assert predict("-i", workspace / "in", "--model-dir", model, "-o", tmp_path / "off") == 0
    assert predict("-i", workspace / "in", "--model-dir", model, "-o", tmp_path / "on", "--tta") == 0
    runs = ("default", "one", "off", "on")
    tta = {k: json.loads((tmp_path / k / "timings.json").read_text())["tta"] for k in runs}
    assert tta == {"default": True, "one": False, "off": False, "on": True}
    differ = 0
    for i in range(3):
        name = f"case_{i}.nii.gz"
        mirrored, single = labels(tmp_path / "default" / name), labels(tmp_path / "one" / name)
        assert (labels(tmp_path / "on" / name) == mirrored).all()
        assert (labels(tmp_path / "off" / name) == single).all()
        differ += int((mirrored != single).sum())
    assert differ > 0          # a random network's one pass is not the mean over its 8 mirrors


def test_existing_outputs_are_skipped_unless_overwrite(workspace, tmp_path):
    out = tmp_path / "out"
    base = ["-i", workspace / "in", "-o", out, "-d", "Tiny", "--workspace", workspace / "ws"]
    assert predict(*base) == 0
    old = 1_000_000_000
    for path in out.glob("*.nii.gz"):
        os.utime(path, ns=(old, old))
    (out / "case_1.nii.gz").unlink()
    assert predict(*base) == 0
    assert os.stat(out / "case_0.nii.gz").st_mtime_ns == old      # skipped
    assert os.stat(out / "case_1.nii.gz").st_mtime_ns != old      # missing one predicted again
    timings = json.loads((out / "timings.json").read_text())
    assert [t["case"] for t in timings["per_case"]] == ["case_0", "case_1", "case_2"]  # earlier kept
    assert predict(*base, "--overwrite") == 0
    assert all(os.stat(p).st_mtime_ns != old for p in out.glob("*.nii.gz"))


def test_broken_cases_are_reported_and_the_others_predicted(workspace, tmp_path, capsys):
    inp = tmp_path / "in"
    shutil.copytree(workspace / "in", inp)
    truncated = inp / "case_1" / "case_1_t2.nii.gz"
    truncated.write_bytes(truncated.read_bytes()[:60])                 # unreadable
    (inp / "case_2" / "case_2_t1.nii.gz").unlink()                      # missing modality
    write_case(inp, "case_3", shape_zyx=(12, 17, 15), seed=3)
    write_case(tmp_path / "other", "case_3", shape_zyx=(13, 17, 15), seed=3)
    shutil.copy(tmp_path / "other" / "case_3" / "case_3_t2.nii.gz", inp / "case_3")  # other grid
    out = tmp_path / "out"
    code = predict("-i", inp, "-o", out, "-d", "Tiny", "--workspace", workspace / "ws")
    err = capsys.readouterr().err
    assert code == 2
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["case_0.nii.gz"]
    assert re.search(r"case_1_t2.nii.gz: (unreadable|truncated)", err)
    assert "case case_2: missing modality t1" in err
    assert "case_3_t2.nii.gz: grid" in err
    assert "3 case(s) failed" in err
    assert "Traceback" not in err


def test_model_dir_copied_elsewhere_predicts_the_same(workspace, tmp_path):
    copy = tmp_path / "elsewhere" / "my_model"
    shutil.copytree(workspace / "ws" / "results" / "Tiny" / "resunet3d", copy)
    assert predict("-i", workspace / "in", "-o", tmp_path / "a", "--model-dir", copy) == 0
    assert predict("-i", workspace / "in", "-o", tmp_path / "b", "-d", "Tiny", "--network", "resunet3d",
                   "--workspace", workspace / "ws") == 0
    assert json.loads((tmp_path / "a" / "timings.json").read_text())["network"] == "resunet3d"
    for i in range(3):
        np.testing.assert_array_equal(labels(tmp_path / "a" / f"case_{i}.nii.gz"),
                                      labels(tmp_path / "b" / f"case_{i}.nii.gz"))


def test_corrupt_checkpoint_exits_2_naming_the_file(workspace, tmp_path, capsys):
    model = tmp_path / "pfseg"
    shutil.copytree(workspace / "ws" / "results" / "Tiny" / "pfseg", model)
    (model / "fold_1" / "checkpoint_final.pt").write_bytes(b"not a checkpoint at all")
    assert predict("-i", workspace / "in", "-o", tmp_path / "out", "--model-dir", model) == 2
    err = capsys.readouterr().err
    assert f"{model / 'fold_1' / 'checkpoint_final.pt'}: corrupt" in err and "Traceback" not in err


def test_checkpoint_of_another_plan_exits_2_naming_the_file(workspace, tmp_path, capsys):
    model = tmp_path / "pfseg"
    shutil.copytree(workspace / "ws" / "results" / "Tiny" / "pfseg", model)
    other = tiny_plans(widths=(8, 8, 16))
    save_fold(model, 0, build_network("pfseg", other), "pfseg", other)
    assert predict("-i", workspace / "in", "-o", tmp_path / "out", "--model-dir", model) == 2
    err = capsys.readouterr().err
    assert f"{model / 'fold_0' / 'checkpoint_final.pt'}: weights do not fit" in err
    assert "shape mismatch" in err and "Traceback" not in err


def test_folder_problems_are_refused(workspace, tmp_path, capsys):
    model = ["--model-dir", workspace / "ws" / "results" / "Tiny" / "pfseg"]
    assert predict("-i", tmp_path / "missing", "-o", tmp_path / "out", *model) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert predict("-i", tmp_path / "empty", "-o", tmp_path / "out", *model) == 2
    assert "empty" in capsys.readouterr().err
    inp = tmp_path / "in"
    shutil.copytree(workspace / "in", inp)
    assert predict("-i", inp, "-o", inp / "predictions", *model) == 2
    assert "inside the input folder" in capsys.readouterr().err
    assert not (inp / "predictions").exists()
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert predict("-i", inp, "-o", blocker / "out", *model) == 2
    assert "not writable" in capsys.readouterr().err
    assert predict("-i", inp, "-o", tmp_path / "out") == 2
    assert "-d NAME" in capsys.readouterr().err


def test_library_call_with_exclude_and_fold_choice(workspace, tmp_path):
    model_dir = workspace / "ws" / "results" / "Tiny" / "pfseg"
    report = predict_folder(workspace / "in", tmp_path / "out", model_dir, folds=[1], device="cpu",
                            exclude=["case_1"], workers=0, progress=False)
    assert report.ok and report.predicted == ["case_0", "case_2"]
    assert json.loads((tmp_path / "out" / "timings.json").read_text())["folds"] == ["1"]


def test_flat_folder_with_odd_names_and_uncompressed_files(workspace, tmp_path):
    inp = tmp_path / "flat in"
    inp.mkdir()
    src = workspace / "in" / "case_0"
    name = "Fall 7 é"
    for modality, channel in (("t1", "0000"), ("t2", "0002")):  # nnU-Net channel numbers
        image = nib.load(src / f"case_0_{modality}.nii.gz")
        nib.save(image, inp / f"{name}_{channel}.nii")
    (inp / "notes.txt").write_text("an extra file")
    out = tmp_path / "out"
    assert predict("-i", inp, "-o", out, "-d", "Tiny", "--workspace", workspace / "ws") == 0
    assert predict("-i", workspace / "in", "-o", tmp_path / "ref", "-d", "Tiny", "--workspace",
                   workspace / "ws") == 0
    np.testing.assert_array_equal(labels(out / f"{name}.nii.gz"), labels(tmp_path / "ref" / "case_0.nii.gz"))
