from __future__ import annotations

from ..core.lrp_rules import ATTNLRP
from .base import InputTimesGradient
from .registry import register


@register
class AttnLRP(InputTimesGradient):
    """Achtibat et al., ICML 2024: the rules of :mod:`toolkit.core.lrp_rules` in one forward and one backward pass."""

    name = "attnlrp"
    summary = ("AttnLRP (Achtibat et al. ICML 2024): LRP rules for attention, norms and gated MLPs as one modified "
               "backward pass; input x gradient per token, per pixel for images.")
    rules = ATTNLRP
    empty_reason = "no relevance reached the input through the AttnLRP rules for this target"
