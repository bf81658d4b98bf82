from __future__ import annotations

import torch

from ..core.trace import Trace
from .attnlrp import AttnLRP
from .generic_attnlrp import GenericAttnLRP
from .registry import register


@register
class AttnLRPRouted(AttnLRP):
    """Our own (issue 13): AttnLRP's signed token relevance, scaled per token by how much of the read-out row the
    attention routes there (generic_attnlrp's row over its maximum, from the same backward pass): relevance that
    AttnLRP finds on tokens the attention never brings to the read-out is damped. Tokens only: a per-pixel map keeps
    AttnLRP's."""

    name = "attnlrp_routed"
    summary = "Ours: AttnLRP's token relevance damped where the AttnLRP-weighted attention routes nothing (one backward)."
    needs_gradients = True
    reads = "network"

    def attribute(self, trace: Trace) -> torch.Tensor:
        relevance = super().attribute(trace)
        if relevance.dim() != 2:  # per pixel
            return relevance
        route = GenericAttnLRP().attribute(trace).clamp(min=0)
        return relevance * route / route.amax(dim=-1, keepdim=True).clamp(min=1e-12)
