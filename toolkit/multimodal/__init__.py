"""Image-text models: CLIP similarity, visual question answering and captioning."""
from .base import MultimodalAdapter
from .blip import BlipCaptioningAdapter, BlipVQAAdapter
from .clip import HFCLIPAdapter
from .git import GitCaptioningAdapter
from .lxmert import LxmertVQAAdapter
from .open_clip import OpenCLIPAdapter
from .siglip import SiglipAdapter
from .vilt import ViltVQAAdapter
from .vision_encoder_decoder import VisionEncoderDecoderAdapter

# Tasks that families.yaml names (``task:``): the image-text families declared as data use them.
TASKS: dict[str, type[MultimodalAdapter]] = {adapter.family: adapter for adapter in (
    HFCLIPAdapter, SiglipAdapter, ViltVQAAdapter, BlipCaptioningAdapter, BlipVQAAdapter, GitCaptioningAdapter,
    VisionEncoderDecoderAdapter)}
# Families whose sites are Python (their layouts vary or call modules in ways a declaration does not say).
MULTIMODAL_ADAPTERS: list[type[MultimodalAdapter]] = [OpenCLIPAdapter, LxmertVQAAdapter]
IMAGE_TEXT_ADAPTERS = [*TASKS.values(), *MULTIMODAL_ADAPTERS]  # every image-text family, for loading and listing

__all__ = ["IMAGE_TEXT_ADAPTERS", "MULTIMODAL_ADAPTERS", "MultimodalAdapter", "TASKS"]
