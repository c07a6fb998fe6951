"""What train_summary.json tells pfseg_compare about memory."""

from pfseg_pipeline.training.records import headline_memory


def test_headline_memory_prefers_the_network_s_predicted_gpu_peak():
    cpu = {"device": "cpu", "peak_rss": {"bytes": 2 ** 30},
           "memory_model": {"predicted_peak_bytes": {"pfseg": 3 * 2 ** 30, "resunet3d": 2 ** 29}}}
    assert headline_memory(cpu, "resunet3d") == {
        "peak_memory_gb": 0.5, "peak_memory_kind": "memory model: predicted GPU training peak (CPU run)"}
    assert headline_memory(cpu, "vnet")["peak_memory_gb"] == 1.0  # no prediction: peak RSS
    gpu = {"device": "cuda", "bytes": 3 * 2 ** 30, "label": "torch.cuda.max_memory_allocated"}
    assert headline_memory(gpu, "pfseg") == {"peak_memory_gb": 3.0,
                                             "peak_memory_kind": "torch.cuda.max_memory_allocated"}
