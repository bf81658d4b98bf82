"""Adapters, and the lookup that picks one for a model: a registered Python adapter, a declared family
(toolkit/families/families.yaml, registered YAML entries, or the one a user names), or an image-text adapter."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch.nn as nn

from .. import families
from ..errors import UnsupportedModelError
from .base import Batch, DeclaredAdapter, ModelAdapter
from .causal_lm import CausalLMAdapter
from .hf_text import TextClassifierAdapter
from .vision import ImageClassifierAdapter

ADAPTERS: list[type[ModelAdapter]] = []  # Python adapters added with register_adapter
DECLARED = {"text": TextClassifierAdapter, "image": ImageClassifierAdapter, "text-generation": CausalLMAdapter}
FamilySource = str | Path | Mapping | families.Family


def register_adapter(adapter: type[ModelAdapter]) -> type[ModelAdapter]:
    """Add a Python adapter for a new model family (checked before the declared ones). A YAML entry
    (:func:`toolkit.families.register_family`) is the simpler way for a classifier."""
    ADAPTERS.insert(0, adapter)
    return adapter


def declared_adapter(declaration: families.Family, model: nn.Module, processor: Any = None):
    """The adapter of a declared family: a classifier's or language model's by its inputs, an image-text family's
    by its task."""
    if declaration.inputs == "image-text":
        from ..multimodal import TASKS

        return TASKS[declaration.get("task")](model, processor, declaration)
    return DECLARED[declaration.inputs](model, processor, declaration)


def _multimodal() -> list[type]:
    from ..multimodal import MULTIMODAL_ADAPTERS

    return MULTIMODAL_ADAPTERS


def supported_families() -> list[str]:
    return ([f"{a.family}: {a.examples}" for a in ADAPTERS]
            + [f"{f.name}: {f.description}" for f in families.all_families()]
            + [f"{a.family}: {a.examples}" for a in _multimodal()])


def adapter_for(model: nn.Module, processor: Any = None, family: FamilySource | None = None):
    """The adapter (classifier or image-text) that knows ``model``'s architecture; with ``family`` (a YAML file, a
    dict, or a Family), the classifier adapter of that declaration, whatever its match says."""
    if family is not None:
        return declared_adapter(families.select(family, model), model, processor)
    for adapter in ADAPTERS:
        if adapter.matches(model):
            return adapter(model, processor)
    declaration = families.find(model)
    if declaration is not None:
        return declared_adapter(declaration, model, processor)
    for adapter in _multimodal():
        if adapter.matches(model):
            return adapter(model, processor)
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    described = type(model).__name__ + (f" (model_type={model_type!r})" if model_type else "")
    raise UnsupportedModelError(
        f"No adapter for {described}. Supported families:\n  - " + "\n  - ".join(supported_families())
        + "\nDescribe its layout in a YAML entry and pass it as Explainer(model, processor, family='my.yaml') "
          "(see the README: 'A model the toolkit does not know')."
    )


__all__ = ["ADAPTERS", "Batch", "CausalLMAdapter", "DeclaredAdapter", "ModelAdapter", "adapter_for", "declared_adapter",
           "register_adapter", "supported_families"]
