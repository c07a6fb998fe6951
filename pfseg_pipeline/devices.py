"""Which device a command runs on: `--device auto|cpu|cuda|cuda:N|mps`, the same for every command.

torch is imported inside the function, so the foundation layer stays importable without it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from pfseg_pipeline.errors import UserError

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"


def resolve_device(choice: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    """The torch device for a `--device` value.

    Parameters
    ----------
    choice : "auto" (this process's CUDA GPU, else Apple's MPS, else the CPU), "cpu", "cuda"
        (this process's GPU: `local_rank` under torchrun, else GPU 0), "cuda:N" or "mps";
        a `torch.device` is returned as it is.
    local_rank : the process's GPU under torchrun (one process per GPU).

    Raises a one-line `UserError` for an unknown value or a device this machine does not have.
    """
    import torch

    if isinstance(choice, torch.device):
        return choice
    name = str(choice).strip().lower()
    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    if name == "auto":
        if cuda:
            return torch.device("cuda", local_rank)
        return torch.device("mps") if mps else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", name)
    if match:
        if not cuda:
            raise UserError(f"--device {choice}: no CUDA GPU is available to this torch "
                            f"({torch.__version__}); use --device cpu or auto")
        index = int(match.group(1)) if match.group(1) is not None else local_rank
        if index >= torch.cuda.device_count():
            raise UserError(f"--device {choice}: this machine has {torch.cuda.device_count()} CUDA GPU(s) "
                            f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
        return torch.device("cuda", index)
    if name == "mps":
        if not mps:
            raise UserError(f"--device {choice}: Apple's MPS is not available to this torch; use --device "
                            "cpu or auto")
        return torch.device("mps")
    raise UserError(f"--device {choice!r}: choose {DEVICE_CHOICES}")


def compute_identity(device: str | torch.device) -> dict:
    """What, besides the seed, the inputs and the thread count, decides a run's floating-point
    results: the torch version and the hardware's kernels. On a CPU torch picks its vector code
    by the processor (`torch.backends.cpu.get_cpu_capability()`: AVX2 on one AMD EPYC, AVX512 on
    a newer one), and the two sum in another order, so the same training drifts apart over many
    epochs; on a GPU the card and the CUDA/cuDNN versions. Recorded with every training run."""
    import torch

    device = torch.device(device)
    # str(): torch.__version__ is a TorchVersion, which a weights-only checkpoint load refuses
    identity = {"torch": str(torch.__version__), "device": device.type}
    if device.type == "cuda":
        identity.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                        cudnn=torch.backends.cudnn.version())
    elif device.type == "cpu":
        identity.update(cpu=cpu_model(), cpu_capability=torch.backends.cpu.get_cpu_capability())
    return identity


def _cpuinfo(field: str) -> str | None:
    """/proc/cpuinfo's first value of `field`, or None (no such file or field)."""
    from pathlib import Path

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(field):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The processor's name (/proc/cpuinfo's first model name; else what `platform` says)."""
    import platform

    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_vendor() -> str:
    """The processor's vendor (/proc/cpuinfo's vendor_id: AuthenticAMD, GenuineIntel; else the
    machine type): capped at one vector ISA, two vendors' kernels still sum in other orders."""
    import platform

    return _cpuinfo("vendor_id") or platform.machine()


def compute_words(identity: dict) -> str:
    """`compute_identity` in a few words: "AMD EPYC (AVX2), torch 2.13.0"."""
    if identity.get("device") == "cuda":
        hardware = f"{identity.get('gpu')} (CUDA {identity.get('cuda')}, cuDNN {identity.get('cudnn')})"
    elif identity.get("device") == "cpu":
        hardware = f"{identity.get('cpu')} ({identity.get('cpu_capability')})"
    else:
        hardware = str(identity.get("device"))
    return f"{hardware}, torch {identity.get('torch')}"
