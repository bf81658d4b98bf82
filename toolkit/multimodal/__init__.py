"""Image-text models: CLIP similarity, visual question answering and captioning."""
from .base import Site, MultimodalAdapter
from .blip import BlipCaptioningAdapter, BlipVQAAdapter
from .clip import HFCLIPAdapter
from .git import GitCaptioningAdapter
from .lxmert import LxmertVQAAdapter
from .open_clip import OpenCLIPAdapter
from .vilt import ViltVQAAdapter
from .vision_encoder_decoder import VisionEncoderDecoderAdapter

MULTIMODAL_ADAPTERS: list[type[MultimodalAdapter]] = [HFCLIPAdapter, OpenCLIPAdapter,
                                                       BlipCaptioningAdapter, BlipVQAAdapter,
                                                       VisionEncoderDecoderAdapter, GitCaptioningAdapter,
                                                       ViltVQAAdapter, LxmertVQAAdapter]

__all__ = ["Site", "MULTIMODAL_ADAPTERS", "MultimodalAdapter"]
