"""Where a fit trains: ``--device auto`` is CUDA when torch sees a GPU, else the CPU.

Only the neural baselines (Diffusion Policy, ACT) train on a GPU; K-UBM, KODex and the
regression are small closed-form or full-batch fits that stay on the CPU. Random draws
come from CPU generators and are moved to the device, so a GPU fit follows the same
random stream as a CPU fit and agrees with it up to float tolerance. Evaluation stays on
the CPU: batch-1 inference is latency-bound, and the reported latencies must compare.
"""

from __future__ import annotations

import torch

from kubm.errors import PolicyError

DEVICES = ("auto", "cpu", "cuda")


class DeviceError(PolicyError):
    """The requested device is not available."""


def resolve_device(name: str = "auto") -> torch.device:
    if name not in DEVICES:
        raise DeviceError(f"--device {name!r} is not one of {list(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceError("--device cuda, but torch sees no CUDA device (a CPU build of torch, or no GPU); "
                          "use --device auto or cpu, or install a CUDA build of torch on a GPU machine")
    return torch.device(name)


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device
