from __future__ import annotations

import torch

from ..core.trace import Trace
from ..core.propagation import head_mean_positive
from .base import Method
from .registry import register


@register
class PartialLRP(Method):
    name = "partial_lrp"
    summary = ("Partial LRP (Voita et al. 2019): LRP relevance of the last attention map, by the CVPR 2021 paper's own "
               "rules (normalised residuals).")
    needs_lrp = True

    def lowest_lrp_layer(self, num_layers: int) -> int:
        return num_layers - 1

    def kept_attention_relevance(self, relevance: torch.Tensor, gradient: torch.Tensor | None) -> torch.Tensor:
        return head_mean_positive(relevance)

    def attribute(self, trace: Trace) -> torch.Tensor:
        relevance = trace.attention_relevance[-1]
        return torch.einsum("bi,bij->bj", trace.readout.to(relevance.dtype), relevance)
