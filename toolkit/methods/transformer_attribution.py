from __future__ import annotations

import torch

from ..core.trace import Trace
from ..core.propagation import head_mean_positive
from .base import RowPropagation
from .registry import register


@register
class TransformerAttribution(RowPropagation):
    name = "transformer_attribution"
    summary = "Chefer et al. CVPR 2021: LRP relevance of each attention map times its gradient, propagated."
    needs_gradients = True
    needs_lrp = True
    empty_reason = "the gradient-weighted LRP relevance of the attention maps was nowhere positive for this target"

    def lowest_lrp_layer(self, num_layers: int) -> int:
        return self.resolved_start(num_layers)

    def kept_attention_relevance(self, relevance: torch.Tensor, gradient: torch.Tensor | None) -> torch.Tensor:
        return head_mean_positive(gradient.float() * relevance)  # (B, N, N): a head's share of the memory

    def layer_matrix(self, trace: Trace, layer: int) -> torch.Tensor:
        return trace.attention_relevance[layer]
