"""bench/export_speed.py: its table and verdict from hand-made figures, and one tiny measured run
(figures are not asserted: speed belongs to the benchmark, not to tests)."""

from __future__ import annotations

import pytest
import torch


def _backend(seconds, eager_seconds, labels=1.0):
    median = sorted(seconds)[len(seconds) // 2]
    eager_median = sorted(eager_seconds)[len(eager_seconds) // 2]
    return {"seconds": seconds, "median": median, "min": min(seconds), "max": max(seconds),
            "ratio": eager_median / median, "round_ratios": [e / s for e, s in zip(eager_seconds, seconds)],
            "labels_alike": labels, "max_abs_logit_diff": 1e-4, "prepare_seconds": 1.0,
            "first_call_seconds": 2.0}


def _figures(ort_seconds, ort_labels):
    eager = [6.0, 7.0, 8.0]
    size = {"label": "BraTS", "case_xyz": [240, 240, 155], "shape_zyx": [128, 192, 160], "in_channels": 4,
            "widths": [32, 32, 64, 128, 256], "rounds": 3,
            "backends": {"eager": _backend(eager, eager),
                         "onnxruntime": _backend(ort_seconds, eager, ort_labels),
                         "torchscript": _backend([7.0, 7.0, 7.0], eager)}}
    demo = {**size, "label": "demo"}
    return {"torch": "2.13.0", "onnxruntime": "1.32.0", "torch_threads": 2, "sizes": [demo, size]}


def test_the_verdict_needs_both_the_speed_and_the_labels():
    from bench.export_speed import _markdown

    text = _markdown(_figures([4.0, 4.5, 5.0], 0.99995))
    assert "| onnxruntime | 4.50 | 4.00 | 5.00 | **1.56x** | 1.50, 1.56, 1.60 | 99.9950 % |" in text
    assert "| torchscript | 7.00 | 7.00 | 7.00 | **1.00x** |" in text
    assert text.rstrip().endswith("99.99 % of the labels alike: onnxruntime.")
    slow = _markdown(_figures([4.9, 5.0, 5.1], 0.99995))                  # 1.40x
    assert slow.rstrip().endswith("99.99 % of the labels alike: no backend.")
    unlike = _markdown(_figures([4.0, 4.5, 5.0], 0.9998))                # fast, but labels differ
    assert unlike.rstrip().endswith("99.99 % of the labels alike: no backend.")


def test_a_tiny_measured_run_compares_every_backend_with_eager():
    from bench.export_speed import measure
    from pfseg_pipeline.data.labels import BRATS2020
    from pfseg_pipeline.networks.registry import build_network
    from pfseg_pipeline.plans import GuidancePlan, NetworkPlan, PatchPlan, Plans

    plans = Plans(dataset_name="Tiny", modalities=["t1", "t2"], label_scheme=BRATS2020.to_json(),
                  hr_shape_zyx=[16, 16, 16], target_spacing_zyx=[1.0, 1.0, 1.0], lr_scale_zyx=[2, 2, 2],
                  guidance=GuidancePlan([4, 4, 4], "center"), network=NetworkPlan([4, 8, 8], [4, 8], 4),
                  patch_based=PatchPlan([8, 8, 8]))
    torch.manual_seed(0)
    network = build_network("pfseg", plans)
    image = torch.randn(1, 2, 16, 32, 16)
    backends = ["eager", "torchscript"]
    try:
        import onnxruntime  # noqa: F401
        backends.append("onnxruntime")
    except ImportError:
        pass
    figures = measure(network, plans, image, rounds=2, backends=backends, threads=1)
    assert list(figures["backends"]) == backends and figures["shape_zyx"] == [16, 32, 16]
    eager = figures["backends"]["eager"]
    assert eager["ratio"] == 1.0 and eager["labels_alike"] == 1.0 and eager["max_abs_logit_diff"] == 0.0
    for name in backends:
        r = figures["backends"][name]
        assert len(r["seconds"]) == 2 and r["min"] <= r["median"] <= r["max"]
        assert r["labels_alike"] > 0.999 and r["max_abs_logit_diff"] < 1e-4
    with pytest.raises(ValueError, match="first backend must be 'eager'"):
        measure(network, plans, image, rounds=1, backends=["torchscript", "eager"])
