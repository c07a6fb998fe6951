"""bench/inference_speed.py: medians of the rounds, their spread and the ratio of the medians, from
hand-made figures (speed itself belongs to the benchmark, not to tests)."""

from __future__ import annotations


def _method(network, e2e, passes=1):
    from bench.inference_speed import spread

    return {"inference": "whole volume" if passes == 1 else "sliding window, step 0.5",
            "forward_passes_per_case": passes, "parameters_inference": 9_360_000, "load_seconds": 0.0,
            "network_seconds_per_case": spread(network), "end_to_end_seconds_per_case": spread(e2e)}


def test_the_table_quotes_the_median_with_the_lowest_and_highest_and_the_ratio_of_medians():
    from bench.inference_speed import _markdown, spread

    assert spread([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "values": [3.0, 1.0, 2.0]}
    pfseg = _method([6.0, 7.0, 9.0], [6.5, 7.5, 9.5])
    resunet = _method([77.0, 50.0, 56.0], [78.0, 51.0, 57.0], passes=27)
    ort = {**_method([4.0, 4.2, 5.0], [4.5, 4.7, 5.5]), "load_seconds": 12.0}
    ov = {**_method([3.0, 3.5, 4.0], [3.8, 4.0, 4.5]), "load_seconds": 9.0}
    figures = {"cases": 1, "shape_xyz": [240, 240, 155], "device": "cpu", "torch_threads": 2, "rounds": 3,
               "hr_shape_zyx": [128, 192, 160], "patch_shape_zyx": [64, 96, 80], "load_before": 0.5,
               "load_after": 0.7, "methods": {"pfseg": pfseg, "resunet3d": resunet, "pfseg_onnxruntime": ort,
                                         "pfseg_openvino": ov},
               "network_ratio": 56.0 / 7.0, "end_to_end_ratio": 57.0 / 7.5,
               "end_to_end_round_ratios": [78.0 / 6.5, 51.0 / 7.5, 57.0 / 9.5],
               "onnxruntime_network_ratio": 7.0 / 4.2, "onnxruntime_end_to_end_ratio": 7.5 / 4.7,
               "onnxruntime_labels_alike": 0.99999,
               "openvino_network_ratio": 7.0 / 3.5, "openvino_end_to_end_ratio": 7.5 / 4.0,
               "openvino_labels_alike": 0.999995}
    text = _markdown(figures)
    assert "| PFSeg | whole volume | 1 | 9.36 M | 7.00 (6.00 - 9.00) | 7.50 (6.50 - 9.50) | 0.0 |" in text
    assert "| ResUNet3D | sliding window, step 0.5 | 27 | 9.36 M | 56.00 (50.00 - 77.00) |" in text
    assert ("| PFSeg, ONNX Runtime | whole volume | 1 | 9.36 M | 4.20 (4.00 - 5.00) | 4.70 (4.50 - 5.50) "
            "| 12.0 |") in text
    # the ratio of the medians, not the best round (12.0x here)
    assert "**8.0x** faster in the network and **7.6x** faster end to end" in text
    assert "end to end per round: 12.0x, 6.8x, 6.0x" in text
    assert "**1.67x** the eager path's speed in the network and **1.60x** end to end" in text
    assert ("| PFSeg, OpenVINO | whole volume | 1 | 9.36 M | 3.50 (3.00 - 4.00) | 4.00 (3.80 - 4.50) "
            "| 9.0 |") in text
    assert ("PFSeg on OpenVINO (`pfseg_predict --backend openvino`; load s: the export to ONNX and the "
            "compiled graph, once per run) is **2.00x** the eager path's speed in the network and **1.88x** "
            "end to end") in text and "99.9995 % of the written labels alike" in text
    assert "99.9990 % of the written labels alike" in text and "Load average 0.5 before, 0.7 after" in text
