"""Switch fused / SDPA attention to the explicit (eager) path, and restore it afterwards.

Attention probabilities only exist as tensors on the explicit path: fused kernels
(PyTorch SDPA, flash attention) never materialise them, so no hook can see them.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch.nn as nn

from ..errors import UnsupportedModelError


def _hf_configs(model: nn.Module) -> list:
    """Every distinct Hugging Face config object reachable from the model's modules."""
    seen: dict[int, object] = {}
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "_attn_implementation"):
            seen.setdefault(id(config), config)
    return list(seen.values())


@contextlib.contextmanager
def explicit_attention(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` with eager attention inside the block; put the previous setting back on exit."""
    hf_configs = _hf_configs(model)
    previous_hf = [(c, c._attn_implementation) for c in hf_configs]
    timm_modules = [m for m in model.modules() if isinstance(getattr(m, "fused_attn", None), bool)]
    previous_timm = [(m, m.fused_attn) for m in timm_modules]
    try:
        if any(impl != "eager" for _, impl in previous_hf):
            setter = getattr(model, "set_attn_implementation", None)
            if setter is not None:
                setter("eager")
            for config in hf_configs:
                if config._attn_implementation != "eager":
                    config._attn_implementation = "eager"
            still_fused = [type(c).__name__ for c in hf_configs if c._attn_implementation != "eager"]
            if still_fused:
                raise UnsupportedModelError(
                    f"Could not switch {type(model).__name__} to eager attention (configs {still_fused}). "
                    "Load it with `attn_implementation=\"eager\"` so that attention probabilities are computed explicitly."
                )
        for module in timm_modules:
            module.fused_attn = False
        yield model
    finally:
        for module, fused in previous_timm:
            module.fused_attn = fused
        for config, impl in previous_hf:
            if config._attn_implementation != impl:
                config._attn_implementation = impl
