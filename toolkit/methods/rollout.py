from __future__ import annotations

import torch

from ..core.trace import Trace
from .base import RowPropagation
from .registry import register


@register
class Rollout(RowPropagation):
    name = "rollout"
    summary = "Attention rollout (Abnar & Zuidema 2020): heads averaged, identity added, rows normalised, multiplied."
    normalise_rows = True

    def layer_matrix(self, trace: Trace, layer: int) -> torch.Tensor:
        return trace.probs[layer].float().mean(dim=1)
