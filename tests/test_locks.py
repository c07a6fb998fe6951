"""Folder locks: one line naming a live holder, stale locks taken over, readers and writers apart."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import socket
import subprocess
import time
from dataclasses import asdict, replace

import pytest

from pfseg_pipeline import locks
from pfseg_pipeline.errors import UserError
from pfseg_pipeline.locks import LOCK_FILE, READER_PREFIX, Holder


@pytest.fixture
def other_process():
    """A live process that is not this one (its pid and start time are real)."""
    proc = subprocess.Popen(["sleep", "600"])
    yield proc
    proc.kill()
    proc.wait()


def holder_of(pid: int, **changes) -> Holder:
    base = Holder(pid, socket.gethostname(), locks._boot_id(), locks._start_ticks(pid),
                  "2026-11-27T10:00:00+00:00", "pfseg_train Tiny 0")
    return replace(base, **changes)


def write_lock(path, holder: Holder) -> bytes:
    content = json.dumps(asdict(holder)).encode()
    path.write_bytes(content)
    return content


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_lock_records_its_holder_and_goes_away(tmp_path):
    locks.set_command("pfseg_train Tiny 0")
    with locks.exclusive(tmp_path / "fold", "fold folder"):
        data = json.loads((tmp_path / "fold" / LOCK_FILE).read_text())
        assert data["pid"] == os.getpid() and data["host"] == socket.gethostname()
        assert data["command"] == "pfseg_train Tiny 0" and data["started"]
        assert data["start_ticks"] == locks._start_ticks(os.getpid()) is not None
        with locks.exclusive(tmp_path / "fold", "fold folder"):  # re-entrant in one process
            pass
        assert (tmp_path / "fold" / LOCK_FILE).is_file()
    assert sorted(p.name for p in (tmp_path / "fold").iterdir()) == []


def test_a_live_holder_is_named_and_its_lock_left_alone(tmp_path, other_process):
    content = write_lock(tmp_path / LOCK_FILE, holder_of(other_process.pid))
    with pytest.raises(UserError) as info:
        with locks.exclusive(tmp_path, "fold folder"):
            pytest.fail("took a lock held by a live process")
    line = str(info.value)
    assert isinstance(info.value, locks.Busy)          # callers that wait or skip catch this kind
    assert line.startswith(f"{tmp_path}: another pfseg run is using this fold folder "
                           f"(pid {other_process.pid} on host {socket.gethostname()}")
    assert "pfseg_train Tiny 0" in line and "\n" not in line
    assert (tmp_path / LOCK_FILE).read_bytes() == content
    with pytest.raises(UserError, match=f"pid {other_process.pid}"):
        locks.check_free(tmp_path, "fold folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_FILE]   # no temporary left


@pytest.mark.parametrize("how", ["pid gone", "pid reused", "rebooted", "unreadable and old"])
def test_a_stale_lock_is_taken_over_with_a_log_line(tmp_path, other_process, caplog, how):
    path = tmp_path / LOCK_FILE
    if how == "pid gone":
        write_lock(path, holder_of(dead_pid()))
    elif how == "pid reused":  # a live process, but not the one that took the lock
        write_lock(path, holder_of(other_process.pid, start_ticks=locks._start_ticks(other_process.pid) - 1))
    elif how == "rebooted":
        write_lock(path, holder_of(other_process.pid, boot_id="another-boot"))
    else:
        path.write_bytes(b"")
        old = time.time() - locks.UNREADABLE_GRACE_SECONDS - 5
        os.utime(path, (old, old))
    with caplog.at_level(logging.WARNING, logger="pfseg_pipeline.locks"):
        with locks.exclusive(tmp_path, "fold folder"):
            assert json.loads(path.read_text())["pid"] == os.getpid()
    assert "took over the lock of a run that no longer runs" in caplog.text
    assert not path.exists()


def test_a_lock_from_another_host_is_not_guessed_at(tmp_path):
    path = tmp_path / LOCK_FILE
    write_lock(path, holder_of(dead_pid(), host="node17"))  # its pid means nothing here
    with pytest.raises(UserError, match=f"pid .* on host node17.*if that run is gone, delete {path}"):
        with locks.exclusive(tmp_path, "preprocessed dataset"):
            pass


def test_a_lock_being_written_is_waited_for_not_taken(tmp_path):
    (tmp_path / LOCK_FILE).write_bytes(b"")   # just created by O_EXCL, content not yet written
    with pytest.raises(UserError, match="being locked by another pfseg run right now"):
        with locks.exclusive(tmp_path, "fold folder"):
            pass
    assert (tmp_path / LOCK_FILE).read_bytes() == b""


def test_readers_and_a_writer_exclude_each_other(tmp_path, other_process, caplog):
    with locks.shared(tmp_path, "preprocessed dataset"):
        marker = tmp_path / f"{READER_PREFIX}{socket.gethostname()}.{os.getpid()}.json"
        assert json.loads(marker.read_text())["pid"] == os.getpid()
        with locks.exclusive(tmp_path, "preprocessed dataset"):  # this process may write what it reads
            pass
    assert not marker.exists()

    reader = tmp_path / f"{READER_PREFIX}{socket.gethostname()}.{other_process.pid}.json"
    write_lock(reader, holder_of(other_process.pid))
    with pytest.raises(UserError, match=f"another pfseg run is reading this preprocessed dataset "
                                        f"\\(pid {other_process.pid} on host"):
        with locks.exclusive(tmp_path, "preprocessed dataset"):
            pass
    assert not (tmp_path / LOCK_FILE).exists()   # the refused writer let go of its lock

    reader.unlink()
    stale = tmp_path / f"{READER_PREFIX}{socket.gethostname()}.1.json"
    write_lock(stale, holder_of(dead_pid()))
    with caplog.at_level(logging.WARNING, logger="pfseg_pipeline.locks"):
        with locks.exclusive(tmp_path, "preprocessed dataset"):
            assert not stale.exists()
    assert "removing the marker of a reader that no longer runs" in caplog.text

    writer = holder_of(other_process.pid, command="pfseg_plan_and_preprocess -d Tiny")
    write_lock(tmp_path / LOCK_FILE, writer)
    with pytest.raises(UserError, match="another pfseg run is using this preprocessed dataset .*"
                                        "pfseg_plan_and_preprocess -d Tiny"):
        with locks.shared(tmp_path, "preprocessed dataset"):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_FILE]   # no marker left


def test_a_folder_that_cannot_be_written_is_one_line(tmp_path, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(locks, "_create", denied)
    with pytest.raises(UserError, match=f"^{tmp_path}: cannot write, permission denied"):
        with locks.exclusive(tmp_path, "fold folder"):
            pass


def _take(folder: str, ready, release, results) -> None:
    ready.wait()
    try:
        with locks.exclusive(folder, "fold folder"):
            results.put("took it")
            release.wait(120)   # hold it until every other run has tried
    except UserError as exc:
        results.put(str(exc))


def test_of_several_runs_taking_over_one_stale_lock_exactly_one_wins(tmp_path):
    write_lock(tmp_path / LOCK_FILE, holder_of(dead_pid()))
    context = multiprocessing.get_context("fork")
    ready, release, results = context.Event(), context.Event(), context.Queue()
    runs = [context.Process(target=_take, args=(str(tmp_path), ready, release, results)) for _ in range(4)]
    for run in runs:
        run.start()
    ready.set()
    try:
        outcomes = [results.get(timeout=120) for _ in runs]
    finally:
        release.set()
        for run in runs:
            run.join(timeout=60)
    assert outcomes.count("took it") == 1, outcomes
    assert all("another pfseg run is using this fold folder" in o for o in outcomes if o != "took it")
    assert not (tmp_path / LOCK_FILE).exists()
