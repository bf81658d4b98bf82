from __future__ import annotations

import torch

from ..core.trace import Trace
from ..core.propagation import head_mean_positive
from .base import RowPropagation
from .registry import register


@register
class Generic(RowPropagation):
    name = "generic"
    summary = "Chefer et al. ICCV 2021 self-attention rule: R += mean_h (grad A * A)+ . R."
    needs_gradients = True
    empty_reason = "the gradient-weighted attention (grad A * A, clamped at zero) was nowhere positive for this target"

    def layer_matrix(self, trace: Trace, layer: int) -> torch.Tensor:
        return head_mean_positive(trace.grads[layer].float() * trace.probs[layer].float())
