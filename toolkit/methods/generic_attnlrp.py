from __future__ import annotations

from ..core.lrp_rules import ATTNLRP
from .generic import Generic
from .registry import register


@register
class GenericAttnLRP(Generic):
    """Our own (issue 13): the ICCV 2021 propagation R += mean_h (∇A ⊙ A)⁺ R, with ∇A the gradient of the AttnLRP
    backward pass (norms with their deviation held constant, activations by the identity rule, the uniform rule at
    the attention products) instead of the plain gradient: the attention maps weighted by their AttnLRP relevance,
    A ⊙ ∇̃A, as Transformer Attribution weights them by CVPR 2021 LRP, at the cost of one forward and one backward."""

    name = "generic_attnlrp"
    summary = "Ours: generic's propagation with the attention maps weighted by their AttnLRP relevance (one backward)."
    rules = ATTNLRP
    empty_reason = "the AttnLRP-weighted attention (clamped at zero) was nowhere positive for this target"
