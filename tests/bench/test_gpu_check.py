"""The GPU check runs end to end on the CPU (its dry run) with only torch and numpy importable.
CI has no GPU: this tests everything up to the CUDA calls. (Its training step is the trainer's:
tests/networks/test_step.py.)"""

from __future__ import annotations

import json

from tests.gpu_machine import run_without_gpu_machine_absentees


def test_dry_run_needs_only_torch_and_numpy_and_writes_the_json(tmp_path):
    out = tmp_path / "out"
    proc = run_without_gpu_machine_absentees(f"""
        from bench.gpu_check import main
        sys.exit(main(["--dry-run", "--out", {str(out)!r}]))
    """)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "gpu_check.json").read_text())
    assert results["environment"]["dry_run"] is True
    assert results["errors"] == []
    rows = results["memory"]["rows"]
    assert {r["network"] for r in rows} == {"pfseg", "resunet3d", "hdc"}
    # PFSeg's rows name the branches they priced and measured: the plan's own, or the row asked for
    assert [(r["batch"], r["ablation"]) for r in rows if r["network"] == "pfseg"] == [(1, "full"), (2, "us")]
    for r in rows:  # the tensor-level prediction matches the CPU allocator's record of the step
        assert r["predicted_bytes"] > r["predicted_tensor_bytes"] > 0
        assert 0.9 < r["ratio_allocated"] < 1.1, r
    assert results["memory"]["calibration"]["suggested_factor"] >= 1.0
    speed = {(r["plan"], r["network"], r["channels_last"]): r for r in results["speed"]["rows"]}
    assert set(speed) == ({(p, n, False) for p in ("default", "paper") for n in ("pfseg", "resunet3d")}
                          | {("default", n, True) for n in ("pfseg", "resunet3d")})
    # the same steps in either layout (same seed, same batch values): the same loss to rounding
    for n in ("pfseg", "resunet3d"):
        assert abs(speed["default", n, True]["final_loss"] - speed["default", n, False]["final_loss"]) < 1e-4
    inference = results["inference"]["rows"]
    assert len(inference) == 4 and all(r["end_to_end_seconds"] > 0 for r in inference)
    assert {r["forward_passes"] for r in inference if r["network"] == "pfseg"} == {1}
    assert set(results["inference"]["ratios"]) == {"brats", "paper_grid"}
    assert "Memory model vs a real training step" in proc.stdout


def test_report_renders_a_run_and_the_no_gpu_section(tmp_path):
    from bench.gpu_report import markdown, no_gpu_markdown, section

    results = {"environment": {"dry_run": False, "gpu": "NVIDIA H100", "gpu_memory_bytes": 80 * 2**30,
                               "torch": "2.11", "cuda": "13.0", "cudnn": 91000, "python": "3.12",
                               "date_utc": "2026-11-26 12:00 UTC"},
               "allowance": {"factor": 1.15, "context_bytes": 2**29}, "seconds": {"total": 250},
               "memory": {"rows": [{"network": "pfseg", "shape_zyx": [160, 192, 160], "batch": 2,
                                    "predicted_tensor_bytes": 10 * 2**30, "predicted_bytes": 12 * 2**30,
                                    "allocated_bytes": 10 * 2**30, "reserved_bytes": 11 * 2**30,
                                    "device_used_bytes": 11.5 * 2**30, "ratio_allocated": 1.0,
                                    "ratio_reserved": 1.1},
                                   {"network": "pfseg", "ablation": "us", "shape_zyx": [160, 192, 160],
                                    "batch": 1, "predicted_tensor_bytes": 6 * 2**30,
                                    "predicted_bytes": 7 * 2**30, "allocated_bytes": 6 * 2**30,
                                    "reserved_bytes": 6.5 * 2**30, "device_used_bytes": 7 * 2**30,
                                    "ratio_allocated": 1.0, "ratio_reserved": 1.08}],
                          "calibration": {"measured_factor_max": 1.1, "measured_factor_allocated_max": 1.0,
                                          "measured_factor_allocated_median": 1.0,
                                          "measured_context_bytes_max": 2**29, "suggested_factor": 1.1,
                                          "suggested_context_bytes": 2**29, "current_factor": 1.15,
                                          "current_context_bytes": 2**29, "current_allowance_covers": "1/1"}},
               "speed": {"rows": [{"plan": "default", "network": "pfseg", "channels_last": cl,
                                   "shape_zyx": [128, 160, 128], "batch": 2, "seconds_per_step": s,
                                   "steps_per_second": 1 / s, "peak_allocated_bytes": 9 * 2**30}
                                  for cl, s in ((False, 0.5), (True, 0.4))]},
               "errors": [{"what": "speed paper pfseg", "error": "OutOfMemoryError: boom"}]}
    text = markdown(results)
    assert "NVIDIA H100" in text and "| pfseg | 160x192x160 | 2 | 10.00 | 12.00 |" in text
    assert "| pfseg (us) | 160x192x160 | 1 | 6.00 | 7.00 |" in text   # the segmentation network alone
    assert "| default | pfseg | contiguous | 128x160x128 | 2 | 0.500 | 2.00 | 9.00 |" in text
    assert "| default | pfseg | channels-last | 128x160x128 | 2 | 0.400 | 2.50 | 9.00 |" in text
    assert "speed paper pfseg" in text
    assert "no GPU machine was available on 2026-11-26" in no_gpu_markdown("2026-11-26")
    assert "bash bench/gpu_check.sh" in section(None)
