"""Per-family adapters, and the lookup that picks one for a model."""
from __future__ import annotations

from typing import Any

import torch.nn as nn

from ..errors import UnsupportedModelError
from .base import Batch, ModelAdapter
from .hf_text import AlbertAdapter, BertFamilyAdapter, DistilBertAdapter
from .vision import HFViTAdapter, TimmViTAdapter

ADAPTERS: list[type[ModelAdapter]] = [BertFamilyAdapter, DistilBertAdapter, AlbertAdapter, HFViTAdapter, TimmViTAdapter]


def register_adapter(adapter: type[ModelAdapter]) -> type[ModelAdapter]:
    """Add an adapter for a new model family (checked before the built-in ones)."""
    ADAPTERS.insert(0, adapter)
    return adapter


def _all_adapters() -> list[type]:
    from ..multimodal import MULTIMODAL_ADAPTERS

    return [*ADAPTERS, *MULTIMODAL_ADAPTERS]


def supported_families() -> list[str]:
    return [f"{a.family}: {a.examples}" for a in _all_adapters()]


def adapter_for(model: nn.Module, processor: Any = None):
    """The adapter (classifier or image-text) that knows ``model``'s architecture."""
    for adapter in _all_adapters():
        if adapter.matches(model):
            return adapter(model, processor)
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    described = type(model).__name__ + (f" (model_type={model_type!r})" if model_type else "")
    raise UnsupportedModelError(
        f"No adapter for {described}. Supported families:\n  - " + "\n  - ".join(supported_families())
        + "\nWrite a ModelAdapter subclass and pass it to toolkit.adapters.register_adapter to add one."
    )


__all__ = ["ADAPTERS", "Batch", "ModelAdapter", "adapter_for", "register_adapter", "supported_families"]
