"""The cache: written atomically, skipped when current, rebuilt when changed or corrupt."""

from __future__ import annotations

import os

import numpy as np

from pfseg_pipeline.fileio import load_npz, read_json
from pfseg_pipeline.preprocessing.cache import default_workers, preprocess_dataset
from tests.preprocessing.conftest import phantom, plans_for, write_case


def _cases(root, n=3):
    cases = []
    for i in range(n):
        images, seg = phantom((12, 16, 14), radii_mm=(5.0, 3.0, 2.0), seed=i)
        cases.append(write_case(root / "raw", f"case_{i}", images, seg))
    return cases


def _statuses(cases, plans, out):
    return {r["case"]: r["status"] for r in preprocess_dataset(cases, plans, out, workers=1, progress=False)}


def _mtimes(cases_dir):
    return {p.name: p.stat().st_mtime_ns for p in sorted(cases_dir.iterdir())}


def test_rerun_skips_every_current_case(tmp_path):
    cases = _cases(tmp_path)
    plans = plans_for()
    out = tmp_path / "pre"
    first = preprocess_dataset(cases, plans, out, workers=1, progress=False)
    assert [r["status"] for r in first] == ["written"] * 3
    before = _mtimes(out / "cases")
    second = preprocess_dataset(cases, plans, out, workers=1, progress=False)
    assert [r["status"] for r in second] == ["skipped"] * 3
    assert _mtimes(out / "cases") == before
    props = read_json(out / "cases" / "case_0.json")
    assert len(props["sources"]["t1"]["sha256"]) == 64 and "label" in props["sources"]
    arrays = load_npz(out / "cases" / "case_0.npz")
    assert arrays["image"].dtype == np.float32 and arrays["seg"].dtype == np.uint8
    assert arrays["image"].shape == (4, *props["resampled_shape_zyx"])


def test_truncated_npz_is_detected_and_rebuilt(tmp_path):
    cases = _cases(tmp_path, 2)
    plans = plans_for()
    out = tmp_path / "pre"
    preprocess_dataset(cases, plans, out, workers=1, progress=False)
    npz = out / "cases" / "case_1.npz"
    good = npz.read_bytes()
    npz.write_bytes(good[: len(good) // 2])
    results = _statuses(cases, plans, out)
    assert results == {"case_0": "skipped", "case_1": "written"}
    assert npz.read_bytes() == good
    # a flipped byte inside the image data fails the zip CRC: rebuilt as well
    data = bytearray(good)
    data[len(data) // 2] ^= 0xFF
    npz.write_bytes(bytes(data))
    results = _statuses(cases, plans, out)
    assert results["case_1"] == "written"


def test_changed_source_or_plans_rebuild_touched_source_does_not(tmp_path):
    cases = _cases(tmp_path, 2)
    plans = plans_for()
    out = tmp_path / "pre"
    preprocess_dataset(cases, plans, out, workers=1, progress=False)
    # touched, same bytes: the sha256 still matches
    t1 = cases[0].images["t1"]
    os.utime(t1, ns=(t1.stat().st_atime_ns, t1.stat().st_mtime_ns + 10**9))
    statuses = [r["status"] for r in preprocess_dataset(cases, plans, out, workers=1, progress=False)]
    assert statuses == ["skipped", "skipped"]
    # new content
    images, seg = phantom((12, 16, 14), radii_mm=(5.0, 3.0, 2.0), seed=99)
    write_case(tmp_path / "raw", "case_0", images, seg)
    statuses = _statuses(cases, plans, out)
    assert statuses == {"case_0": "written", "case_1": "skipped"}
    # other plans (normalisation): everything is rebuilt
    other = plans_for(normalization="minmax")
    statuses = [r["status"] for r in preprocess_dataset(cases, other, out, workers=1, progress=False)]
    assert statuses == ["written", "written"]


def test_parallel_workers_match_serial_and_stale_cases_go(tmp_path):
    cases = _cases(tmp_path, 3)
    plans = plans_for()
    preprocess_dataset(cases, plans, tmp_path / "serial", workers=1, progress=False)
    preprocess_dataset(cases, plans, tmp_path / "parallel", workers=2, progress=False)
    for c in cases:
        a = load_npz(tmp_path / "serial" / "cases" / f"{c.case_id}.npz")
        b = load_npz(tmp_path / "parallel" / "cases" / f"{c.case_id}.npz")
        assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["seg"], b["seg"])
    preprocess_dataset(cases[:2], plans, tmp_path / "serial", workers=1, progress=False)
    assert not (tmp_path / "serial" / "cases" / "case_2.npz").exists()


def test_default_workers_respect_memory_and_cpus():
    voxels = 240 * 240 * 155
    assert default_workers(voxels, 4, 100, available_bytes=64 * 2**30, cpus=8) == 8
    # per worker: 250 MiB + 76 B per voxel (~0.93 GB for BraTS); 80 % of 4 GiB holds 3
    assert default_workers(voxels, 4, 100, available_bytes=4 * 2**30, cpus=8) == 3
    assert default_workers(voxels, 4, 100, available_bytes=10, cpus=8) == 1
    assert default_workers(voxels, 4, 3, available_bytes=64 * 2**30, cpus=8) == 3
