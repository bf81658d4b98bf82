"""Explanation methods, one per file, registered by name."""
from . import attention_gradcam, generic, lrp, partial_lrp, raw_attention, rollout, transformer_attribution
from .base import Method, RowPropagation
from .registry import get_method, list_methods, register

__all__ = ["Method", "RowPropagation", "get_method", "list_methods", "register"]
