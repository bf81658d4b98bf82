"""What a declaration cannot say as data: layers that run several times (ALBERT), where LRP starts for a head
without linear layers (the zero-shot classifier), and how a library's image models read pictures and name their
classes (Hugging Face image processors, timm transforms)."""
from __future__ import annotations

from collections import Counter
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

from ..errors import InputError, warn
from ..images import processor_normalisation


def albert_shared(model: nn.Module, found: list[tuple[tuple[int, ...], str, nn.Module]]
                  ) -> list[tuple[str, nn.Module, int]]:
    """ALBERT runs one group of layers at several depths: depth d uses group d // (layers / groups), and each
    run of a shared module is its own call (``albert_layer_groups.<group>.albert_layers.<layer>``)."""
    config = model.config
    groups: dict[int, list[tuple[str, nn.Module]]] = {}
    for indices, name, module in found:
        groups.setdefault(indices[0], []).append((name, module))
    calls: Counter = Counter()
    order = []
    for depth in range(config.num_hidden_layers):
        for name, module in groups[int(depth / (config.num_hidden_layers / config.num_hidden_groups))]:
            order.append((name, module, calls[id(module)]))
            calls[id(module)] += 1
    return order


LAYER_ORDERS = {"albert-shared": albert_shared}


def label_similarity_start(model: nn.Module, hidden: torch.Tensor, token_mask: torch.Tensor,
                           targets: torch.Tensor) -> torch.Tensor:
    """Relevance (B, N, D) of the encoder's output tokens for logit_c = <p / |p|, l_c> / T, p the mean of the real
    tokens (toolkit.zero_shot): with |p| held constant, as the rules hold LayerNorm's deviation, the logit is linear
    in p, so R(p_d) = p_d l_cd / (|p| T); the z-rule through the mean gives token i the share h_id / (M p_d) of it.
    The relevances sum to the logit."""
    weights = token_mask[..., None].to(hidden.dtype)
    pooled = (hidden * weights).sum(1) / weights.sum(1)
    labels = model.label_embeddings[targets].to(hidden.dtype)
    scale = pooled.norm(dim=-1, keepdim=True) * weights.sum(1) * model.temperature
    return weights * hidden * (labels / scale)[:, None, :]


LRP_STARTS = {"label-similarity": label_similarity_start}


class HuggingFaceImages:
    """A Hugging Face image model: its image processor (ViT's default, with a warning, when none is given)."""

    def __init__(self, model: nn.Module):
        self.model = model

    def default_processor(self) -> Any:
        size = getattr(getattr(self.model, "config", None), "image_size", None)
        if size is None:
            raise InputError(f"No image processor given, and {type(self.model).__name__} has no config.image_size to "
                             "build one: pass the model's processor, Explainer(model, processor).")
        from transformers import ViTImageProcessor

        height, width = (size, size) if isinstance(size, int) else tuple(size)
        warn(f"No image processor given: resizing to {height}x{width} and normalising with mean=std=0.5 "
             "(ViT's default). Pass the model's processor for exact preprocessing.")
        return ViTImageProcessor(size={"height": height, "width": width})

    def checked_processor(self, processor: Any, wrong: Callable[[str], Exception]) -> Any:
        """The image processor to use (a multimodal processor's image part), or ``wrong(what is needed)`` raised
        for a processor of another kind (a tokenizer...) when the explainer is built."""
        from transformers.image_processing_utils import BaseImageProcessor

        image_processor = getattr(processor, "image_processor", processor)
        if image_processor is not None and not isinstance(image_processor, BaseImageProcessor):
            raise wrong("its image processor (AutoImageProcessor.from_pretrained(name)), or None for ViT's default,")
        return image_processor

    def normalisation(self, processor: Any) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std) of ``processor``'s normalisation (ViT's default 0.5 when it does not say)."""
        mean, std = processor_normalisation(processor) or ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
        return np.asarray(mean, dtype=np.float32), np.asarray(std, dtype=np.float32)

    def input_size(self) -> tuple[int, int] | None:
        size = getattr(getattr(self.model, "config", None), "image_size", None)
        if size is None:
            return None
        return tuple(size) if isinstance(size, (list, tuple)) else (size, size)

    def labels(self) -> dict[int, str] | None:
        """None: the model's config names its classes."""
        return None


class TimmImages(HuggingFaceImages):
    """A timm model: the transform of its data config, and class names from its pretrained config or ImageNet."""

    def _data_config(self) -> dict:
        from timm.data import resolve_data_config

        return resolve_data_config({}, model=self.model)

    def checked_processor(self, processor: Any, wrong: Callable[[str], Exception]) -> Any:
        if processor is not None and (not callable(processor) or hasattr(processor, "convert_ids_to_tokens")
                                      or hasattr(processor, "preprocess")):
            raise wrong("an image transform (timm.data.create_transform(**timm.data.resolve_data_config({}, "
                        "model=model))), or None for the model's own,")
        return processor

    def default_processor(self) -> Any:
        from timm.data import create_transform

        return create_transform(**self._data_config())

    def normalisation(self, processor: Any) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std) of ``processor``'s Normalize step, else of the model's data config."""
        found = processor_normalisation(processor) if processor is not None else None
        if found is None:
            config = self._data_config()
            found = config["mean"], config["std"]
        return np.asarray(found[0], dtype=np.float32), np.asarray(found[1], dtype=np.float32)

    def input_size(self) -> tuple[int, int] | None:
        embed = self.model.patch_embed
        fixed = embed.img_size is not None and getattr(embed, "strict_img_size", True)
        return tuple(embed.img_size) if fixed and not getattr(self.model, "dynamic_img_size", False) else None

    def labels(self) -> dict[int, str]:
        """Class names from the model's pretrained config (``label_names``), else timm's ImageNet descriptions
        when the classifier's size matches an ImageNet subset, else none."""
        names = (getattr(self.model, "pretrained_cfg", None) or {}).get("label_names")
        if names:
            return {index: str(name) for index, name in enumerate(names)}
        from timm.data import ImageNetInfo, infer_imagenet_subset

        subset = infer_imagenet_subset(self.model)
        if subset is None:
            return {}
        info = ImageNetInfo(subset)
        return {index: info.index_to_description(index) for index in range(self.model.num_classes)}


SOURCES = {"hf": HuggingFaceImages, "timm": TimmImages}
