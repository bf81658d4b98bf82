"""Explanation methods, one per file, registered by name."""
from . import (attention_gradcam, attnlrp, attnlrp_routed, cp_lrp, generic, generic_attnlrp, gradient_x_input,
               integrated_gradients, lrp, lrp_plain, partial_lrp, partial_lrp_plain, raw_attention, rollout,
               transformer_attribution)
from .base import Method, RowPropagation
from .registry import get_method, list_methods, register

__all__ = ["Method", "RowPropagation", "get_method", "list_methods", "register"]
