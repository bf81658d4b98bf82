from __future__ import annotations

from ..core.lrp_rules import CP_LRP
from .base import InputTimesGradient
from .registry import register


@register
class CPLRP(InputTimesGradient):
    """Ali et al., ICML 2022: the attention weights held constant, so relevance flows through the values only."""

    name = "cp_lrp"
    summary = ("CP-LRP (Ali et al. ICML 2022): LRP with the attention weights held constant, as one modified backward "
               "pass; input x gradient per token, per pixel for images.")
    rules = CP_LRP
    empty_reason = "no relevance reached the input through the values (CP-LRP) for this target"
