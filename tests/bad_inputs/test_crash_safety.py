"""SIGKILL plan_and_preprocess, predict and train at deterministic points (crash_runner.py), run
them again, and compare the final outputs with an uninterrupted run's (the CRASHES table)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pfseg_pipeline.cli import plan_and_preprocess
from pfseg_pipeline.cli.common import run

from . import builders as b
from .kinds import CRASHES, write_model_dir, write_workspace

RUNNER = Path(__file__).with_name("crash_runner.py")
TIMING_COLUMNS = {"train_seconds", "val_seconds", "epoch_seconds", "seconds"}
CRASH = {c.id: c for c in CRASHES}


def start(module: str, argv: list, pattern: str = "-", k: int = 0, when: str = "before") -> subprocess.Popen:
    """The command as a subprocess (one thread per library, as a worker would run), killed by
    crash_runner.py at the k-th write of a file matching `pattern` ('-': never)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("PFSEG_HOME", None)
    return subprocess.Popen([sys.executable, str(RUNNER), module, pattern, str(k), when, "--",
                             *map(str, argv)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)


def finish(process: subprocess.Popen, timeout: float = 120) -> subprocess.CompletedProcess:
    out, err = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def launch(module: str, argv: list, pattern: str = "-", k: int = 0, when: str = "before"
           ) -> subprocess.CompletedProcess:
    return finish(start(module, argv, pattern, k, when))


def launch_pair(crash, reference_argv: list, crashed_argv: list):
    """The uninterrupted reference run and the run to be killed, side by side."""
    reference = start(crash.module, reference_argv)
    killed = start(crash.module, crashed_argv, crash.pattern, crash.k, crash.when)
    reference, killed = finish(reference), finish(killed)
    assert reference.returncode == 0, reference.stderr
    assert killed.returncode == -9, f"not killed (exit {killed.returncode}):\n{killed.stderr}"
    return reference, killed


def without_timings(obj):
    """A JSON value with every timing (keys 'timings', 'seconds', '*_seconds') removed."""
    if isinstance(obj, dict):
        return {k: without_timings(v) for k, v in obj.items()
                if k not in ("timings", "seconds") and not k.endswith("_seconds")}
    if isinstance(obj, list):
        return [without_timings(v) for v in obj]
    return obj


def final_files(folder: Path) -> dict[str, Path]:
    """Files under their final names (temporary files of killed writes left out)."""
    return {str(p.relative_to(folder)): p for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.startswith(".")}


# ---- plan_and_preprocess ---------------------------------------------------------------------------
def test_plan_and_preprocess_killed_mid_write_reruns_to_identical_cache(synthetic_raw, tmp_path):
    crash = CRASH["plan_and_preprocess-mid-write"]

    def argv(ws):
        return ["-i", synthetic_raw, "-d", "Crash", "--preset", "demo", "--workspace", ws, "-np", "1"]

    # the uninterrupted reference runs in-process (the planner's memory model is cached there)
    assert run(plan_and_preprocess.main, [str(a) for a in argv(tmp_path / "ref")]) == 0
    ws = tmp_path / "ws"
    killed = launch(crash.module, argv(ws), crash.pattern, crash.k, crash.when)
    assert killed.returncode == -9, killed.stderr
    cases = ws / "preprocessed" / "Crash" / "cases"
    # killed mid-write: the 1st case is complete, the 2nd exists only as a temporary file
    assert sorted(final_files(cases)) == [f"{b.CASES[0]}.json", f"{b.CASES[0]}.npz"]
    assert [p.name for p in b.temporary_files(cases)][0].startswith(f".{b.CASES[1]}.")

    rerun = launch(crash.module, argv(ws))
    assert rerun.returncode == 0, rerun.stderr
    expected = final_files(tmp_path / "ref" / "preprocessed" / "Crash")
    got = final_files(ws / "preprocessed" / "Crash")
    assert sorted(got) == sorted(expected)
    assert sum(name.endswith(".npz") for name in got) == len(b.CASES)
    for name, path in expected.items():
        if name == "plan_and_preprocess_summary.json":  # what this run did: the 1st case was kept
            summary = json.loads(got[name].read_text())
            assert (summary["skipped"], summary["written"]) == (1, len(b.CASES) - 1)
        elif name.endswith(".npz"):
            assert got[name].read_bytes() == path.read_bytes(), name
        elif name.endswith(".json"):
            ref_json = json.loads(path.read_text().replace(str(tmp_path / "ref"), "WS"))
            got_json = json.loads(got[name].read_text().replace(str(ws), "WS"))
            assert without_timings(got_json) == without_timings(ref_json), name


# ---- predict -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def predict_reference(synthetic_raw, tmp_path_factory):
    root = tmp_path_factory.mktemp("predict_crash")
    model = write_model_dir(root / "model")
    out = root / "reference"
    done = launch("predict", ["-i", synthetic_raw, "-o", out, "--model-dir", model, "--device", "cpu",
                              "--no-progress", "--workers", "1"])
    assert done.returncode == 0, done.stderr
    return model, out


@pytest.mark.parametrize("crash_id", ["predict-mid-write", "predict-after-write"])
def test_predict_killed_reruns_to_identical_label_maps(crash_id, predict_reference, synthetic_raw, tmp_path):
    crash = CRASH[crash_id]
    model, reference = predict_reference
    out = tmp_path / "out"
    argv = ["-i", synthetic_raw, "-o", out, "--model-dir", model, "--device", "cpu", "--no-progress",
            "--workers", "1"]
    killed = launch(crash.module, argv, crash.pattern, crash.k, crash.when)
    assert killed.returncode == -9, killed.stderr
    complete = crash.k if crash.when == "after" else crash.k - 1
    assert sorted(n for n in final_files(out) if n.endswith(".nii.gz")) == [
        f"{c}.nii.gz" for c in b.CASES[:complete]]
    if crash.when == "before":  # the killed write left its temporary file, nothing else
        assert [p.name for p in b.temporary_files(out)][0].startswith(f".{b.CASES[complete]}.")

    rerun = launch(crash.module, argv)
    assert rerun.returncode == 0, rerun.stderr
    assert "skipped" in rerun.stderr
    for case in b.CASES:
        name = f"{case}.nii.gz"
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name


# ---- train ---------------------------------------------------------------------------------------------
def _metrics(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in csv.DictReader(f)]


def test_train_killed_mid_checkpoint_resumes_with_continue(tmp_path):
    import torch

    crash = CRASH["train-mid-checkpoint"]

    def argv(ws, *extra):
        return ["Tiny", "all", "--workspace", ws, "--device", "cpu", "--num-workers", "0", "--no-progress",
                "--epochs", "3", "--iterations-per-epoch", "2", *extra]

    ref_ws, ws = write_workspace(tmp_path / "ref"), write_workspace(tmp_path / "ws")
    launch_pair(crash, argv(ref_ws), argv(ws))
    fold = ws / "results" / "Tiny" / "pfseg" / "fold_all"
    # the checkpoint of epoch 1 is intact and loadable; epoch 2's never reached its final name
    latest = torch.load(fold / "checkpoint_latest.pt", map_location="cpu", weights_only=True)
    assert latest["epoch"] == 1
    assert not (fold / "checkpoint_final.pt").exists()

    rerun = launch(crash.module, argv(ws, "--continue"))
    assert rerun.returncode == 0, rerun.stderr
    ref_fold = ref_ws / "results" / "Tiny" / "pfseg" / "fold_all"
    assert _metrics(fold / "metrics.csv") == _metrics(ref_fold / "metrics.csv")
    final = torch.load(fold / "checkpoint_final.pt", map_location="cpu", weights_only=True)
    ref_final = torch.load(ref_fold / "checkpoint_final.pt", map_location="cpu", weights_only=True)
    assert final["epoch"] == ref_final["epoch"] == 3
    for key, value in ref_final["model"].items():
        assert torch.equal(final["model"][key], value), key


def test_train_ignores_a_temporary_file_left_by_a_killed_preprocessing(tmp_path, capsys):
    """A killed cache write leaves `.<case>.XXXX.tmp.npz`; training (which rebuilds a missing
    splits.json from the cached files) must not take it for a case."""
    from pfseg_pipeline.cli import train

    ws = write_workspace(tmp_path / "ws")
    pre = ws / "preprocessed" / "Tiny"
    (pre / "splits.json").unlink()
    (pre / "cases" / f".{b.CASES[1]}.k2j4x9.tmp.npz").write_bytes(b"PK\x03\x04 half a zip")
    argv = ["Tiny", "all", "--workspace", str(ws), "--device", "cpu", "--num-workers", "0", "--no-progress"]
    assert run(train.main, argv) == 0, capsys.readouterr().err
    splits = json.loads((pre / "splits.json").read_text())
    assert sorted(splits["cases"]) == sorted(b.CASES)
