from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

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


# ---- a second signal, a signal during a save, kill -9, two runs on one fold -------------------------
RUNNER = Path(__file__).with_name("slow_step_runner.py")
NAME = "Tiny"
STEP_SECONDS = 600   # each step after the first epoch: the "minutes" of a full-size CPU iteration


def _argv(ws, *extra) -> list[str]:
    return [NAME, "all", "--workspace", str(ws.root), "--iterations-per-epoch", "2", "--no-progress", *extra]


def _start_slow(ws, log_path: Path, *extra) -> subprocess.Popen:
    """pfseg_train as a subprocess whose first epoch is quick and whose later steps take 600 s."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PFSEG_HOME", None)
    with open(log_path, "w") as out:
        return subprocess.Popen([sys.executable, str(RUNNER), "2", str(STEP_SECONDS), "--",
                                 *_argv(ws, "--epochs", "1000", "--num-workers", "1", *extra)],
                                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _wait_for(condition, what: str, proc: subprocess.Popen, log_path: Path, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        tail = log_path.read_text()[-3000:]
        assert proc.poll() is None, f"exited ({proc.returncode}) before {what}:\n{tail}"
        assert time.monotonic() < deadline, f"no {what} within {timeout} s:\n{tail}"
        time.sleep(0.2)


def _children(pid: int) -> list[int]:
    """Processes whose parent is `pid` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _slow_run_with_a_checkpoint(tmp_path, make_workspace, make_plans):
    ws = make_workspace(tmp_path / "ws", make_plans(hr=(8, 16, 16)), n_cases=3)
    fold = ws.root / "results" / NAME / "pfseg" / "fold_all"
    log_path = tmp_path / "first.log"
    proc = _start_slow(ws, log_path)
    _wait_for(lambda: (fold / "checkpoint_latest.pt").exists(), "checkpoint", proc, log_path)
    _wait_for(lambda: _children(proc.pid), "loader worker", proc, log_path)
    return ws, fold, proc, log_path


def _temporaries(*folders: Path) -> list[Path]:
    return [p for folder in folders for p in folder.rglob("*") if ".tmp" in p.name]


def test_a_second_signal_stops_at_once(tmp_path, make_workspace, make_plans):
    """SIGTERM, then SIGTERM again during a step that would take 10 minutes: the run ends within
    seconds (exit 143) with its own log line, no temporary file, the checkpoint of epoch 0 intact,
    its loader worker gone and its locks released."""
    ws, fold, proc, log_path = _slow_run_with_a_checkpoint(tmp_path, make_workspace, make_plans)
    try:
        workers = _children(proc.pid)
        before = (fold / "checkpoint_latest.pt").read_bytes()
        proc.send_signal(signal.SIGTERM)
        _wait_for(lambda: "received SIGTERM:" in log_path.read_text(), "first signal's line", proc, log_path)
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=300)
        seconds = time.monotonic() - start
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    output = log_path.read_text()
    assert proc.returncode == 143, output[-3000:]
    assert seconds < STEP_SECONDS / 5, seconds
    assert "received SIGTERM again: stopping at once, without saving" in output
    assert ("stopped at once by a second SIGTERM; checkpoint_latest.pt (1 epoch(s) done) is the last "
            "complete checkpoint") in output
    assert "Traceback" not in output
    assert (fold / "checkpoint_latest.pt").read_bytes() == before
    assert load_checkpoint(fold / "checkpoint_latest.pt")["epoch"] == 1
    assert not (fold / "checkpoint_final.pt").exists()
    assert not _temporaries(ws.root)
    assert not (fold / ".pfseg.lock").exists() and not list(ws.preprocessed(NAME).glob(".pfseg.*"))
    deadline = time.monotonic() + 60
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert workers and not [w for w in workers if _alive(w)], "loader workers outlived the trainer"


def test_kill_9_two_runs_and_a_stale_lock(tmp_path, make_workspace, make_plans, capsys):
    """While a training runs, a second pfseg_train on its fold is refused with one line naming it
    and changes nothing; after kill -9 of the first, its workers end with it, and the next run
    takes the stale lock over (a log line) and resumes."""
    ws, fold, proc, log_path = _slow_run_with_a_checkpoint(tmp_path, make_workspace, make_plans)
    try:
        workers = _children(proc.pid)
        before = {p: p.read_bytes() for p in fold.parent.rglob("*") if p.is_file()}
        capsys.readouterr()
        assert run(main, _argv(ws, "--epochs", "2", "--num-workers", "0", "--continue")) == 2
        err = capsys.readouterr().err
        assert (f"error: {fold}: another pfseg run is using this fold folder (pid {proc.pid} on host "
                f"{socket.gethostname()}, started ") in err, err
        assert "pfseg_train Tiny all" in err and "Traceback" not in err
        assert {p: p.read_bytes() for p in fold.parent.rglob("*") if p.is_file()} == before
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert workers and not [w for w in workers if _alive(w)], "loader workers outlived a killed trainer"
    assert (fold / ".pfseg.lock").exists()   # kill -9 ran no cleanup

    assert run(main, _argv(ws, "--epochs", "2", "--num-workers", "0", "--continue")) == 0
    err = capsys.readouterr().err
    assert f"{fold}: took over the lock of a run that no longer runs (pid {proc.pid} on host" in err, err
    assert load_checkpoint(fold / "checkpoint_final.pt")["epoch"] == 2
    assert not (fold / ".pfseg.lock").exists()


def test_a_second_signal_during_a_checkpoint_save(tmp_path, make_workspace, make_plans, monkeypatch, capsys):
    """Both signals arrive while checkpoint_latest.pt of epoch 2 is being written (its temporary
    file complete, not yet renamed): the temporary file is removed, the checkpoint of epoch 1 is
    left whole, exit 143; --continue then finishes from it."""
    import torch

    ws = make_workspace(tmp_path / "ws", make_plans(hr=(8, 16, 16)), n_cases=3)
    fold = ws.root / "results" / NAME / "pfseg" / "fold_all"
    real_save, saves = torch.save, []

    def save(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        if "checkpoint_latest" in Path(f).name:
            saves.append(Path(f))
            if len(saves) == 2:
                os.kill(os.getpid(), signal.SIGTERM)   # asks for a save at the next boundary
                os.kill(os.getpid(), signal.SIGTERM)   # insists: raised here, inside the save

    monkeypatch.setattr(torch, "save", save)
    capsys.readouterr()
    assert run(main, _argv(ws, "--epochs", "3", "--num-workers", "0")) == 143
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert "received SIGTERM again: stopping at once" in err and "Traceback" not in err
    assert "checkpoint_latest.pt (1 epoch(s) done) is the last complete checkpoint" in err
    assert saves[1].name.startswith(".checkpoint_latest.") and not saves[1].exists()
    assert not _temporaries(ws.root)
    assert load_checkpoint(fold / "checkpoint_latest.pt")["epoch"] == 1
    assert sorted(p.name for p in fold.glob("checkpoint_*")) == ["checkpoint_latest.pt"]
    assert not (fold / ".pfseg.lock").exists()
    assert run(main, _argv(ws, "--epochs", "3", "--num-workers", "0", "--continue")) == 0
    assert load_checkpoint(fold / "checkpoint_final.pt")["epoch"] == 3
