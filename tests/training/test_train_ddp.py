from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

HERE = Path(__file__).parent


def test_two_process_gloo_ddp_keeps_replicas_identical(tmp_path, make_workspace, make_plans):
    ws = make_workspace(tmp_path / "ws", make_plans(hr=(8, 16, 16)), n_cases=4)
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(HERE / "ddp_replicas.py"), str(ws.root), str(out)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    weights = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for key in weights[0]:
        torch.testing.assert_close(weights[0][key], weights[1][key], rtol=0, atol=0, msg=key)
    records = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    assert len(records[0]["batches"]) == 2
    assert records[0]["batches"] != records[1]["batches"], "each rank draws its own batches"
    assert records[0]["losses"]["loss"] == records[1]["losses"]["loss"]  # epoch means are all-reduced
    assert (out / "fold" / "checkpoint_final.pt").is_file()  # written by rank 0


def test_torchrun_command_line(tmp_path, make_workspace, make_plans):
    """The command under torchrun: ranks from the environment, validation on rank 0 broadcast to
    both (ReduceLROnPlateau steps on every rank), files written once."""
    ws = make_workspace(tmp_path / "ws", make_plans(hr=(8, 16, 16)), n_cases=4)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "pfseg_pipeline.cli.train", "Tiny", "0", "--workspace", str(ws.root), "--epochs", "2",
               "--iterations-per-epoch", "2", "--num-workers", "0", "--no-progress"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    fold = ws.root / "results" / "Tiny" / "pfseg" / "fold_0"
    rows = (fold / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3 and "val_dice_WT" in rows[0]
    summary = json.loads((fold / "train_summary.json").read_text())
    assert summary["world_size"] == 2
    assert "DDP over 2 processes: 1 iterations per epoch" in (fold / "training_log.txt").read_text()
    assert (fold / "validation" / "summary.json").is_file()
