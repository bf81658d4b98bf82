from __future__ import annotations

import torch

from ..core.bimodal import propagate
from ..core.propagation import head_mean_positive
from ..core.trace import Trace
from .base import RowPropagation
from .registry import register


@register
class Generic(RowPropagation):
    """Within one stream, the self-attention rule as a row propagation; across streams (co-attention,
    encoder-decoder cross-attention), the ICCV 2021 rules over every attention site of the model."""

    name = "generic"
    summary = "Chefer et al. ICCV 2021 self-attention rule: R += mean_h (grad A * A)+ . R."
    needs_gradients = True
    reads = "network"
    empty_reason = "the gradient-weighted attention (grad A * A, clamped at zero) was nowhere positive for this target"

    def layer_matrix(self, trace: Trace, layer: int) -> torch.Tensor:
        return head_mean_positive(trace.grads[layer].float() * trace.probs[layer].float())

    def attribute(self, trace: Trace) -> torch.Tensor:
        network = trace.network
        if network is None:
            return super().attribute(trace)
        weighted = [head_mean_positive(g * p) for g, p in zip(network.grads, network.probs)]
        state = propagate(network.sites, weighted, network.sizes, network.links)
        return torch.einsum("bl,bln->bn", trace.readout.to(weighted[0].dtype), state[network.query, network.key])
