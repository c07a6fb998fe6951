"""Memory and disk limits: worker counts follow the free memory, no stage holds more than its
few cases at a time, and a full disk leaves the previous file intact (the LIMITS table)."""

from __future__ import annotations

import errno
import json
import shutil
import threading
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from pfseg_pipeline import fileio
from pfseg_pipeline.cli import plan_and_preprocess
from pfseg_pipeline.cli.common import run
from pfseg_pipeline.data.layouts import discover
from pfseg_pipeline.errors import UserError

from . import builders as b
from .kinds import tiny_plans, write_model_dir

N_CASES = 9
GIB = 2**30


def many_cases(src: Path, dest: Path, n: int = N_CASES) -> list[str]:
    """`n` cases (copies of the three synthetic ones under new ids) in the BraTS layout."""
    ids = []
    for i in range(n):
        case, new = b.CASES[i % len(b.CASES)], f"Case_{i:02d}"
        (dest / new).mkdir(parents=True)
        for path in (src / case).iterdir():
            shutil.copyfile(path, dest / new / path.name.replace(case, new))
        ids.append(new)
    return ids


# ---- worker counts from the free memory ---------------------------------------------------------
def test_preprocessing_workers_follow_free_memory(monkeypatch):
    from pfseg_pipeline import parallel
    from pfseg_pipeline.preprocessing import cache

    brats = 240 * 240 * 155
    per_worker = parallel.WORKER_BASE_BYTES + brats * (4 * cache.BYTES_PER_VOXEL_PER_CHANNEL
                                                       + cache.BYTES_PER_VOXEL_LABEL)
    assert 0.5 * GIB < per_worker < 2 * GIB  # a BraTS case with 4 modalities: about a GiB per worker
    # plenty of memory: the CPUs (or the cases) decide
    assert cache.default_workers(brats, 4, 100, available_bytes=256 * GIB, cpus=16) == 16
    assert cache.default_workers(brats, 4, 3, available_bytes=256 * GIB, cpus=16) == 3
    # little memory: the memory decides (80 % of it), never below one worker
    assert cache.default_workers(brats, 4, 100, available_bytes=4 * GIB, cpus=16) == int(
        0.8 * 4 * GIB // per_worker)
    assert cache.default_workers(brats, 4, 100, available_bytes=100 * 2**20, cpus=16) == 1
    # the free-memory figure is read when not given
    monkeypatch.setattr(parallel, "available_memory_bytes", lambda: 2 * per_worker)
    assert cache.default_workers(brats, 4, 100, cpus=16) == 1
    monkeypatch.setattr(parallel, "available_memory_bytes", lambda: 10 * per_worker)
    assert cache.default_workers(brats, 4, 100, cpus=16) == 8


def test_verify_workers_follow_free_memory(nine_cases, monkeypatch):
    from pfseg_pipeline import parallel
    from pfseg_pipeline.data import verify

    cases = discover(nine_cases, require_label=True).cases
    voxels = 24 * 20 * 16
    per_worker = parallel.WORKER_BASE_BYTES + voxels * verify.VERIFY_BYTES_PER_VOXEL
    assert verify.memory_bounded_workers(cases, 4, available_bytes=100 * per_worker) == 4
    assert verify.memory_bounded_workers(cases, 4, available_bytes=int(2.6 * per_worker)) == 2
    assert verify.memory_bounded_workers(cases, 4, available_bytes=per_worker // 2) == 1
    monkeypatch.setattr(parallel, "available_memory_bytes", lambda: per_worker)
    assert verify.memory_bounded_workers(cases, 8) == 1


class _ThreadPool(ThreadPoolExecutor):
    """A stand-in for ProcessPoolExecutor (threads: fast, and this process's patches apply)
    that records the pool sizes each stage asks for."""

    sizes: list[tuple[str, int]] = []

    def __init__(self, max_workers=None, mp_context=None, **kwargs):
        import inspect

        caller = inspect.stack()[1].frame.f_globals.get("__name__", "?")
        _ThreadPool.sizes.append((caller, max_workers))
        super().__init__(max_workers=max_workers)


def test_plan_and_preprocess_bounds_its_workers_by_free_memory(synthetic_raw, tmp_path, monkeypatch):
    """With memory for one worker only, -np 3 still verifies, fingerprints and preprocesses in
    this one process (no pool of workers is started)."""
    from pfseg_pipeline import parallel  # the pool fingerprint and preprocessing share
    from pfseg_pipeline.data import verify

    _ThreadPool.sizes = []
    for module in (verify, parallel):
        monkeypatch.setattr(module, "ProcessPoolExecutor", _ThreadPool)
    monkeypatch.setattr(parallel, "available_memory_bytes", lambda: parallel.WORKER_BASE_BYTES)
    ws = tmp_path / "ws"
    assert run(plan_and_preprocess.main, ["-i", str(synthetic_raw), "-d", "Mem", "--preset", "demo",
                                          "--workspace", str(ws), "-np", "3"]) == 0
    summary = json.loads((ws / "preprocessed" / "Mem" / "plan_and_preprocess_summary.json").read_text())
    assert summary["workers"] == 1
    pools = dict(_ThreadPool.sizes)
    assert not {parallel.__name__, verify.__name__} & set(pools), pools


# ---- one case at a time ----------------------------------------------------------------------------
class CaseTracker:
    """Wraps a per-case function: counts calls in flight and the traced memory at each start."""

    def __init__(self):
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.calls = 0
        self.memory_at_start: list[int] = []

    def wrap(self, function):
        def tracked(*args, **kwargs):
            with self.lock:
                self.in_flight += 1
                self.calls += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
                self.memory_at_start.append(tracemalloc.get_traced_memory()[0])
            try:
                return function(*args, **kwargs)
            finally:
                with self.lock:
                    self.in_flight -= 1
        return tracked

    def growth(self) -> int:
        """Traced memory at the start of the last case minus at the start of the 2nd (the 1st
        pays for imports and caches): what earlier cases left behind."""
        return self.memory_at_start[-1] - self.memory_at_start[1]


def _case_bytes(raw: Path) -> int:
    """Bytes of one case's images as float32 (C, Z, Y, X): what a stage holding it would keep."""
    import nibabel as nib

    shape = nib.load(str(b.image_file(raw, b.CASES[0], "t1"))).shape
    return 4 * 4 * int(np.prod(shape))


@pytest.fixture
def nine_cases(synthetic_raw, tmp_path) -> Path:
    raw = tmp_path / "nine"
    many_cases(synthetic_raw, raw)
    return raw


def run_stages(raw: Path, out: Path, monkeypatch) -> dict[str, CaseTracker]:
    """verify, fingerprint and preprocess `raw` in-process (1 worker), tracking each stage's
    per-case function under tracemalloc."""
    from pfseg_pipeline.data import verify
    from pfseg_pipeline.data.labels import BRATS2020
    from pfseg_pipeline.planners import fingerprint
    from pfseg_pipeline.preprocessing import cache

    trackers = {"verify": CaseTracker(), "fingerprint": CaseTracker(), "preprocess": CaseTracker()}
    monkeypatch.setattr(verify, "verify_case", trackers["verify"].wrap(verify.verify_case))
    monkeypatch.setattr(fingerprint, "_fingerprint_task",
                        trackers["fingerprint"].wrap(fingerprint._fingerprint_task))
    monkeypatch.setattr(cache, "process_case", trackers["preprocess"].wrap(cache.process_case))
    cases = discover(raw, b.MODALITIES, require_label=True).cases
    stages = [lambda: verify.verify_dataset(raw, b.MODALITIES, workers=1),
              lambda: fingerprint.compute_fingerprint(cases, b.MODALITIES, BRATS2020, workers=1,
                                                      progress=False),
              lambda: cache.preprocess_dataset(cases, tiny_plans(), out, workers=1, progress=False)]
    for stage in stages:
        tracemalloc.start()
        try:
            stage()
        finally:
            tracemalloc.stop()
    return trackers


def test_verify_fingerprint_and_preprocess_hold_one_case_at_a_time(nine_cases, synthetic_raw, tmp_path,
                                                                  monkeypatch):
    """Each stage's per-case function runs for one case at a time, once per case, and nothing of a
    finished case stays in memory: the traced memory at the start of each case does not grow
    with the cases done (keeping each case's images would add `_case_bytes` per case)."""
    trackers = run_stages(nine_cases, tmp_path / "pre", monkeypatch)
    one_case = _case_bytes(synthetic_raw)
    for stage, tracker in trackers.items():
        assert tracker.calls == N_CASES, stage
        assert tracker.max_in_flight == 1, stage
        assert tracker.growth() < one_case, (stage, tracker.memory_at_start, one_case)
    assert len(list((tmp_path / "pre" / "cases").glob("*.npz"))) == N_CASES


def test_the_memory_check_catches_a_stage_that_keeps_cases(nine_cases, synthetic_raw, tmp_path, monkeypatch):
    """The check above is not vacuous: a reader that keeps a copy of every case it reads fails it."""
    from pfseg_pipeline.data import case_reader
    from pfseg_pipeline.preprocessing import case

    kept, real_read_case = [], case_reader.read_case

    def keeping(*args, **kwargs):
        result = real_read_case(*args, **kwargs)
        kept.append(result[0].copy())
        return result

    monkeypatch.setattr(case_reader, "read_case", keeping)  # fingerprinting reads through it
    monkeypatch.setattr(case, "read_case", keeping)         # preprocessing imported the name
    trackers = run_stages(nine_cases, tmp_path / "pre", monkeypatch)
    one_case = _case_bytes(synthetic_raw)
    assert trackers["fingerprint"].growth() > (N_CASES - 3) * one_case
    assert trackers["preprocess"].growth() > (N_CASES - 3) * one_case


def test_predict_holds_a_bounded_number_of_cases(nine_cases, tmp_path, monkeypatch, capsys):
    """Reading ahead is bounded: at most workers (reading) + 1 (network) + 2 (waiting for the
    writer) cases are between read and written, however many cases the folder holds."""
    from pfseg_pipeline.cli import predict
    from pfseg_pipeline.inference import pipeline

    model = write_model_dir(tmp_path / "model")
    workers = 1
    in_flight = {"now": 0, "max": 0, "read": 0}
    lock = threading.Lock()
    real_read, real_export = pipeline._read_and_preprocess, pipeline._export

    def read(*args, **kwargs):
        with lock:
            in_flight["now"] += 1
            in_flight["read"] += 1
            in_flight["max"] = max(in_flight["max"], in_flight["now"])
        return real_read(*args, **kwargs)

    def export(*args, **kwargs):
        try:
            return real_export(*args, **kwargs)
        finally:
            with lock:
                in_flight["now"] -= 1

    monkeypatch.setattr(pipeline, "_read_and_preprocess", read)
    monkeypatch.setattr(pipeline, "_export", export)
    out = tmp_path / "out"
    argv = ["-i", str(nine_cases), "-o", str(out), "--model-dir", str(model), "--device", "cpu",
            "--no-progress", "--workers", str(workers)]
    assert run(predict.main, argv) == 0, capsys.readouterr().err
    assert in_flight["read"] == N_CASES and len(list(out.glob("Case_*.nii.gz"))) == N_CASES
    assert in_flight["max"] <= workers + 3 < N_CASES


# ---- a full disk leaves the previous file intact ---------------------------------------------------
WRITERS = {
    "write_json": lambda path: fileio.write_json(path, {"new": list(range(1000))}),
    "write_text": lambda path: fileio.write_text(path, "new text " * 1000),
    "write_bytes": lambda path: fileio.write_bytes(path, b"\1" * 100_000),
    "save_npz": lambda path: fileio.save_npz(path, image=np.ones((8, 8, 8), np.float32)),
}


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_disk_full_keeps_previous_file(writer, tmp_path, monkeypatch):
    path = tmp_path / ("out.npz" if writer == "save_npz" else "out.json")
    path.write_bytes(b"previous content")
    b.disk_full_fsync(monkeypatch)
    with pytest.raises(UserError, match="disk is full") as info:
        WRITERS[writer](path)
    assert str(path) in str(info.value)
    assert path.read_bytes() == b"previous content"
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary file left


def test_disk_full_mid_nifti_write_keeps_previous_label_map(tmp_path, monkeypatch, synthetic_raw):
    from pfseg_pipeline.data.nifti import write_label_map

    reference = b.image_file(synthetic_raw, b.CASES[0], "t1")
    path = tmp_path / "case.nii.gz"
    shutil.copyfile(b.label_file(synthetic_raw, b.CASES[0]), path)
    before = path.read_bytes()
    b.disk_full_nifti(monkeypatch, match="case")
    with pytest.raises(UserError, match="disk is full"):
        write_label_map(np.zeros((16, 20, 24), np.uint8), reference, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_atomic_path_error_without_destination_leaves_nothing(tmp_path, monkeypatch):
    """A failure before anything existed leaves no file at all (not even an empty one)."""
    def fail(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fileio.os, "fsync", fail)
    with pytest.raises(UserError, match="disk is full"):
        fileio.write_json(tmp_path / "new.json", {"a": 1})
    assert list(tmp_path.iterdir()) == []


def test_discovery_does_not_read_voxels(nine_cases, monkeypatch):
    """Finding cases looks at names only: no NIfTI is opened (so a huge dataset costs nothing)."""
    import nibabel as nib

    def refuse(*args, **kwargs):
        raise AssertionError("discover() opened a NIfTI file")

    monkeypatch.setattr(nib, "load", refuse)
    found = discover(nine_cases, require_label=True)
    assert len(found.cases) == N_CASES and not found.problems
    assert tiny_plans().in_channels == 4
