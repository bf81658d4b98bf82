"""The run's model as an Explainer: built-in, from the Hub or a local folder, timm, open_clip, or a new architecture
declared by its family; on the chosen device and precision, checked against the task and methods."""
from __future__ import annotations

from typing import Any

import torch

from ..devices import default_device
from ..errors import ConfigError
from ..explainer import Explainer
from .config import ZERO_SHOT, RunConfig

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(device: str) -> torch.device:
    """``auto``: the first CUDA device when there is one, else the CPU."""
    if device == "auto":
        return default_device()
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device: {device!r} asked for, but this machine has no CUDA device; use auto or cpu")
    return torch.device(device)


def device_note(device: torch.device) -> str:
    if device.type == "cuda":
        return f"device: {device} ({torch.cuda.get_device_name(device)})"
    return f"device: {device}" + ("" if torch.cuda.is_available() else " (no CUDA device found)")


def load_explainer(config: RunConfig, device: torch.device) -> Explainer:
    """The Explainer of ``config.model`` on ``device`` in ``config.precision``; a ConfigError when one of the
    methods cannot explain it (before any item runs)."""
    spec = config.model
    family: Any = spec.family
    if spec.builtin and spec.name == ZERO_SHOT:
        from ..zero_shot import ZeroShotTextClassifier, bundled_minilm_path

        model, tokenizer = ZeroShotTextClassifier.from_pretrained(bundled_minilm_path(), spec.labels)
        explainer = Explainer(model, tokenizer, name=ZERO_SHOT, family=family)
    elif spec.builtin:
        from .. import zoo

        explainer = Explainer(*zoo.load(spec.name), name=spec.name, family=family)
    else:
        kwargs = {"pretrained": spec.pretrained} if spec.pretrained is not None else {}
        explainer = Explainer.from_pretrained(spec.name, source=spec.source, family=family, **kwargs)
    explainer.model.to(device=device, dtype=DTYPES[config.precision])
    applicable = explainer.applicable_methods()
    refused = [m.name for m in config.methods if m.name not in ("auto", *applicable)]  # auto: the model's default
    if refused:
        raise ConfigError(f"methods: {', '.join(refused)} cannot explain {spec.name}; it takes {', '.join(applicable)}"
                          f" (e.g. --set methods=[{','.join(applicable[:2])}])")
    return explainer
