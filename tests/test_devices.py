"""`--device auto|cpu|cuda|cuda:N|mps`: one function, the same answers for pfseg_train and pfseg_predict."""

import pytest
import torch

from pfseg_pipeline.cli.common import run
from pfseg_pipeline.devices import resolve_device
from pfseg_pipeline.errors import UserError


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_cuda_choices_with_two_gpus(two_gpus):
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("CUDA") == torch.device("cuda", 0)
    assert resolve_device("cuda", local_rank=1) == torch.device("cuda", 1)    # torchrun's process 1
    assert resolve_device("auto", local_rank=1) == torch.device("cuda", 1)
    with pytest.raises(UserError, match=r"--device cuda:2: this machine has 2 CUDA GPU\(s\) \(cuda:0 to"):
        resolve_device("cuda:2")


def test_cpu_only_machine(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu") and resolve_device(" cpu ") == torch.device("cpu")
    with pytest.raises(UserError, match="no CUDA GPU is available"):
        resolve_device("cuda:0")
    with pytest.raises(UserError, match="MPS is not available"):
        resolve_device("mps")
    with pytest.raises(UserError, match=r"--device 'tpu': choose auto, cpu, cuda, cuda:N or mps"):
        resolve_device("tpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps") and resolve_device("mps") == torch.device("mps")


@pytest.mark.parametrize("device", ["cuda:1", "tpu"])
def test_train_and_predict_answer_a_device_alike(monkeypatch, tmp_path, capsys, device):
    from pfseg_pipeline.cli import predict, train
    from pfseg_pipeline.training import recipe

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    # past the dataset check, straight to the device: the line must be the same for both commands
    monkeypatch.setattr(recipe, "check_preprocessed", lambda *a: None)
    monkeypatch.setattr(predict, "model_dir_from_args", lambda args: tmp_path)
    assert run(train.main, ["Tiny", "0", "--device", device, "--workspace", str(tmp_path)]) == 2
    train_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert run(predict.main, ["-i", str(tmp_path), "-o", str(tmp_path / "out"), "--device", device]) == 2
    predict_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert train_line == predict_line and f"--device {device}" in train_line.replace("'", "")


def test_cpu_vendor_and_model_are_cpuinfos_fields(monkeypatch, tmp_path):
    from pathlib import Path

    from pfseg_pipeline import devices

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Processor\n"
                    "processor\t: 1\nvendor_id\t: GenuineIntel\n")
    real = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: real(info if str(self) == "/proc/cpuinfo"
                                                                      else self, *a, **k))
    assert devices.cpu_vendor() == "GenuineIntel"
    assert devices.cpu_model() == "Intel(R) Xeon(R) Processor"
    info.write_text("processor\t: 0\n")          # no such fields (e.g. some ARM kernels): platform's words
    assert devices.cpu_vendor() and devices.cpu_vendor() != "GenuineIntel"
