"""What train_summary.json tells pfseg_compare about memory and time."""

import pytest

from pfseg_pipeline.training.records import headline_memory, seconds_per_iteration


def test_headline_memory_prefers_the_network_s_predicted_gpu_peak():
    cpu = {"device": "cpu", "peak_rss": {"bytes": 2 ** 30},
           "memory_model": {"predicted_peak_bytes": {"pfseg": 3 * 2 ** 30, "resunet3d": 2 ** 29}}}
    assert headline_memory(cpu, "resunet3d") == {
        "peak_memory_gb": 0.5, "peak_memory_kind": "memory model: predicted GPU training peak (CPU run)"}
    assert headline_memory(cpu, "vnet")["peak_memory_gb"] == 1.0  # no prediction: peak RSS
    # the planner prices pfseg's whole method: a segmentation-only run is told it is an upper bound
    assert headline_memory(cpu, "pfseg", "full")["peak_memory_kind"] == \
        "memory model: predicted GPU training peak (CPU run)"
    us = headline_memory(cpu, "pfseg", "us")
    assert us["peak_memory_gb"] == 3.0 and us["peak_memory_kind"].endswith("an upper bound for this us run")
    gpu = {"device": "cuda", "bytes": 3 * 2 ** 30, "label": "torch.cuda.max_memory_allocated"}
    assert headline_memory(gpu, "pfseg") == {"peak_memory_gb": 3.0,
                                             "peak_memory_kind": "torch.cuda.max_memory_allocated"}


def test_seconds_per_iteration_is_the_median_of_the_steady_epochs():
    def history(*train_seconds):
        return [{"epoch": i, "train_seconds": t} for i, t in enumerate(train_seconds)]

    # 10 iterations per epoch; epoch 0 (warm-up, 30 s) is left out; epoch 3 was paused for 1,700 s:
    # a mean would report 43.6 s per iteration, the median the run's steady 1.0-1.2
    assert seconds_per_iteration(history(30, 10, 12, 1700, 11), 10) == pytest.approx(1.15)
    assert seconds_per_iteration(history(30, 10, 12, 11), 10) == pytest.approx(1.1)
    assert seconds_per_iteration(history(30), 10) == 3.0       # a single epoch: itself
    assert seconds_per_iteration([], 10) is None
