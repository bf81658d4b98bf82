"""Where models run by default: the GPU when CUDA is present, else the CPU, and how to say which."""
from __future__ import annotations

import torch


def default_device() -> torch.device:
    """CUDA (the current GPU) when present, else the CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def describe(device: torch.device) -> str:
    """``device`` in words for people: the GPU's name, or the CPU and its threads."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"GPU cuda:{index} ({torch.cuda.get_device_name(index)})"
    return f"CPU ({torch.get_num_threads()} threads)"
