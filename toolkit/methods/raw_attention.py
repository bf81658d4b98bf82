from __future__ import annotations

import torch

from ..core.trace import Trace
from .base import Method
from .registry import register


@register
class RawAttention(Method):
    name = "raw_attention"
    summary = "Last layer's attention, heads averaged, read from the [CLS] row."
    reads = "last"

    def attribute(self, trace: Trace) -> torch.Tensor:
        return torch.einsum("bi,bij->bj", trace.readout, trace.probs[-1].float().mean(dim=1))
