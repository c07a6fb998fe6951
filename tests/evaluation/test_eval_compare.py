import json

import pandas as pd
import pytest

from pfseg_pipeline.cli import compare as compare_cli
from pfseg_pipeline.cli.common import run
from pfseg_pipeline.errors import UserError
from pfseg_pipeline.evaluation.compare import collect_methods, compare, read_timings


def _write_json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _summary(dices, hd95s):
    per_case = [{"case": f"c{i}", "WT": {"dice": d, "hd95": h, "sensitivity": 1.0, "specificity": 1.0},
                 "TC": {"dice": d, "hd95": h, "sensitivity": 1.0, "specificity": 1.0},
                 "ET": {"dice": d, "hd95": h, "sensitivity": None, "specificity": 1.0}}
                for i, (d, h) in enumerate(zip(dices, hd95s))]
    return {"per_case": per_case, "summary": {}, "missing": [], "regions": ["WT", "TC", "ET"],
            "hd95_definition": "pooled", "units": "mm"}


@pytest.fixture
def results(tmp_path):
    root = tmp_path / "ws" / "results" / "Demo"
    fold = root / "pfseg" / "fold_0"
    _write_json(fold / "validation" / "summary.json", _summary([0.9, 0.8], [2.0, 4.0]))
    _write_json(fold / "validation" / "timings.json", {"per_case": [
        {"case": "c0", "read": 0.5, "preprocess": 0.5, "network": 2.0, "export": 1.0, "total": 4.0},
        {"case": "c1", "read": 0.5, "preprocess": 0.5, "network": 1.0, "export": 0.0}]})  # total = sum
    _write_json(fold / "train_summary.json", {
        "parameters": 9_360_000, "seconds_per_iteration": 1.5, "peak_memory_gb": 10.5,
        "peak_memory_kind": "cuda max allocated"})
    fold = root / "resunet3d" / "fold_0"                                  # no timings.json
    _write_json(fold / "validation" / "summary.json", _summary([0.7, 0.7, 0.6], [5.0, 5.0, 8.0]))
    _write_json(fold / "train_summary.json", {
        "parameters": {"total": 1_234_567}, "peak_memory_gb": 3.25,
        "peak_memory_kind": "memory model (CPU)"})
    (root / "unet3d" / "fold_1").mkdir(parents=True)                      # other fold only: not listed
    return root


def test_table_from_hand_written_result_files(results, capsys):
    assert run(compare_cli.main, ["Demo", "--workspace", str(results.parent.parent)]) == 0
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.startswith("|")]
    assert lines[0] == ("| Method | WT DSC | WT HD95 | TC DSC | TC HD95 | ET DSC | ET HD95 | s/case | "
                        "peak GB | params |")
    assert lines[2] == ("| pfseg | 0.8500(0.0500) | 3.00(1.00) | 0.8500(0.0500) | 3.00(1.00) | "
                        "0.8500(0.0500) | 3.00(1.00) | 3.00 | 10.50 | 9.36 M |")
    assert lines[3].startswith("| resunet3d | 0.6667(0.0471) | 6.00(1.41) |")
    assert lines[3].endswith("| - | 3.25 | 1.23 M |")
    assert len(lines) == 4                                              # unet3d has no fold_0
    assert "memory model (CPU)" in out and "pooled" in out
    assert (results / "comparison.md").read_text() == out
    frame = pd.read_csv(results / "comparison.csv")
    assert list(frame["method"]) == ["pfseg", "resunet3d"]
    assert frame["WT_dice_mean"].tolist() == pytest.approx([0.85, 2 / 3])
    assert pd.isna(frame.loc[1, "seconds_per_case"])
    assert (results / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_folds_pooled_and_wt_only_columns(results):
    fold = results / "pfseg" / "fold_1"
    summary = _summary([0.6], [1.0])
    for entry in summary["per_case"]:
        del entry["TC"], entry["ET"]
    summary["regions"] = ["WT"]
    _write_json(fold / "validation" / "summary.json", summary)
    methods = collect_methods(results, ["1"])
    assert [m.name for m in methods] == ["pfseg", "unet3d"]
    markdown = compare(results, ["1"], write=False)
    assert "| Method | WT DSC | WT HD95 | s/case |" in markdown and "TC DSC" not in markdown
    assert "| unet3d | - | - | - | - | - |" in markdown
    pooled = collect_methods(results, ["0", "1"])[0]
    assert pooled.n_cases == 3 and pooled.summary["WT"]["dice"]["mean"] == pytest.approx(0.7666666)


def test_no_trained_network_is_a_user_error(tmp_path, capsys):
    with pytest.raises(UserError, match="no trained network"):
        collect_methods(tmp_path, ["0"])
    assert run(compare_cli.main, ["Nope", "--workspace", str(tmp_path)]) == 2
    assert "no results for dataset 'Nope'" in capsys.readouterr().err


def test_timings_shapes():
    assert read_timings([{"case": "a", "total": 2}]) == {"a": 2.0}
    assert read_timings({"a": 1.5, "b": {"total": 3}}) == {"a": 1.5, "b": 3.0}
    with pytest.raises(ValueError, match="no 'total'"):
        read_timings({"per_case": [{"case": "a", "network": 1.0}]})
