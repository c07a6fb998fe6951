from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from pfseg_pipeline.checkpoints import read_checkpoint as load_checkpoint
from pfseg_pipeline.cli.common import run
from pfseg_pipeline.cli.train import main


@pytest.mark.parametrize("sig, to_group, code", [(signal.SIGTERM, False, 143), (signal.SIGINT, True, 130)])
def test_a_signal_saves_checkpoint_latest_and_exits(tmp_path, make_workspace, make_plans, sig, to_group,
                                                    code):
    """SIGTERM to the trainer (a batch scheduler), or SIGINT to its whole process group (Ctrl-C,
    which also reaches the augmentation workers): a loadable checkpoint_latest.pt, exit 128 + signal."""
    ws = make_workspace(tmp_path / "ws", make_plans(hr=(8, 16, 16)), n_cases=4)
    fold = ws.root / "results" / "Tiny" / "pfseg" / "fold_0"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "pfseg_pipeline.cli.train", "Tiny", "0", "--workspace", str(ws.root),
               "--epochs", "1000", "--iterations-per-epoch", "3", "--num-workers", "1", "--no-progress"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (fold / "checkpoint_latest.pt").exists():
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.2)
        if to_group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == code, output[-3000:]
    assert f"received {sig.name}" in output
    assert "no longer alive" not in output and "Traceback" not in output
    ckpt = load_checkpoint(fold / "checkpoint_latest.pt")
    assert ckpt["epoch"] >= 1 and "model" in ckpt and "optimizer" in ckpt
    assert not (fold / "checkpoint_final.pt").exists()
    # --continue picks it up (an interrupted epoch restarts from its beginning) and finishes
    argv = ["Tiny", "0", "--workspace", str(ws.root), "--epochs", str(ckpt["epoch"] + 1),
            "--iterations-per-epoch", "3", "--num-workers", "0", "--no-progress", "--continue"]
    assert run(main, argv) == 0
    assert load_checkpoint(fold / "checkpoint_final.pt")["epoch"] == ckpt["epoch"] + 1
