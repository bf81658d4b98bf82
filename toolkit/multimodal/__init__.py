"""Image-text models: CLIP similarity, visual question answering and captioning."""
from .base import AttentionSite, MultimodalAdapter
from .clip import HFCLIPAdapter
from .open_clip import OpenCLIPAdapter

MULTIMODAL_ADAPTERS: list[type[MultimodalAdapter]] = [HFCLIPAdapter, OpenCLIPAdapter]

__all__ = ["AttentionSite", "MULTIMODAL_ADAPTERS", "MultimodalAdapter"]
