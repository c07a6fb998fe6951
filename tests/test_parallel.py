"""Workers end with their parent, even when it is killed (parallel.end_with_parent)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

from pfseg_pipeline.parallel import end_with_parent

FORK = multiprocessing.get_context("fork")


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _worker(parent: int) -> None:
    end_with_parent(parent, signal.SIGKILL)
    time.sleep(600)   # a worker waiting for work that will never come


def _parent(pids) -> None:
    worker = FORK.Process(target=_worker, args=(os.getpid(),))
    worker.start()
    pids.put(worker.pid)
    time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGKILL)   # the parent is killed: no cleanup runs


def test_a_worker_ends_when_its_parent_is_killed():
    pids = FORK.Queue()
    parent = FORK.Process(target=_parent, args=(pids,))
    parent.start()
    worker = pids.get(timeout=120)
    parent.join(timeout=120)
    assert parent.exitcode == -signal.SIGKILL
    deadline = time.monotonic() + 60
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(worker), "the worker outlived its killed parent"


def test_a_worker_whose_parent_is_already_gone_ends_at_once():
    worker = FORK.Process(target=_worker, args=(os.getpid() + 10**6,))   # not its parent
    worker.start()
    worker.join(timeout=60)
    assert worker.exitcode == -signal.SIGKILL
