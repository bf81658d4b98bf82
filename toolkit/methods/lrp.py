from __future__ import annotations

import torch

from ..core.trace import Trace
from .base import Method
from .registry import register


@register
class LRP(Method):
    name = "lrp"
    summary = ("Full LRP with the CVPR 2021 paper's own rules (normalised residuals, as in Transformer Attribution), "
               "down to the input: per token, or per pixel for images.")
    needs_lrp = True
    needs_input_relevance = True

    def kept_attention_relevance(self, relevance: torch.Tensor, gradient: torch.Tensor | None) -> None:
        return None  # reads the input's relevance only
    def attribute(self, trace: Trace) -> torch.Tensor:
        return trace.input_relevance
