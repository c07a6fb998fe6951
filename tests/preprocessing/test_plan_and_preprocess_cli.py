"""pfseg_plan_and_preprocess end to end on the tiny synthetic dataset."""

from __future__ import annotations

from pfseg_pipeline.cli.common import run
from pfseg_pipeline.cli.plan_and_preprocess import main
from pfseg_pipeline.fileio import read_json
from pfseg_pipeline.plans import load_plans


def test_cli_writes_the_workspace_and_a_rerun_skips_every_case(synthetic_raw, tmp_path, capsys):
    ws = tmp_path / "ws"
    argv = ["-i", str(synthetic_raw), "-d", "Tiny", "--preset", "demo", "-np", "2", "--workspace", str(ws)]
    assert run(main, argv) == 0
    out = capsys.readouterr().out
    assert "3 case(s) preprocessed" in out and "predicted training-step peak" in out
    assert ", batch 2, PFSeg whole method, baseline patch" in out    # what PFSeg will train
    pre = ws / "preprocessed" / "Tiny"
    for name in ("dataset.json", "fingerprint.json", "plans.json", "splits.json", "plan_and_preprocess.log"):
        assert (pre / name).is_file(), name
    plans = load_plans(pre / "plans.json")
    assert plans.preset == "demo" and plans.memory["predicted_peak_bytes"]["pfseg"] > 0
    dataset = read_json(pre / "dataset.json")
    assert dataset["n_cases"] == 3 and dataset["label_scheme"]["name"] == "brats2020"
    assert dataset["layout"] == "brats" and dataset["modalities"] == ["t1", "t1ce", "t2", "flair"]
    splits = read_json(pre / "splits.json")
    assert {"folds", "paper", "paper622"} <= set(splits)
    assert sorted(p.name for p in (pre / "cases").iterdir())[:2] == ["BraTS20_Training_001.json",
                                                                     "BraTS20_Training_001.npz"]
    log = (pre / "plan_and_preprocess.log").read_text()
    assert "plan: HR" in log and "preprocessed 3 case(s)" in log
    mtimes = {p.name: p.stat().st_mtime_ns for p in (pre / "cases").iterdir()}

    assert run(main, argv) == 0
    assert "0 written, 3 unchanged" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in (pre / "cases").iterdir()} == mtimes


def test_cli_verification_problem_exits_2_without_writing(synthetic_copy, tmp_path, capsys):
    label = next(synthetic_copy.rglob("*_seg.nii.gz"))
    label.rename(label.with_name(label.name.replace("_seg", "_segmentation")))
    ws = tmp_path / "ws"
    assert run(main, ["-i", str(synthetic_copy), "-d", "X", "--workspace", str(ws)]) == 2
    assert "missing label" in capsys.readouterr().err
    assert not (ws / "preprocessed" / "X").exists()
