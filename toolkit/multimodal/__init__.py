"""Image-text models: CLIP similarity, visual question answering and captioning."""
from .base import AttentionSite, MultimodalAdapter
from .clip import HFCLIPAdapter

MULTIMODAL_ADAPTERS: list[type[MultimodalAdapter]] = [HFCLIPAdapter]

__all__ = ["AttentionSite", "MULTIMODAL_ADAPTERS", "MultimodalAdapter"]
