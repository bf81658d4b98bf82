from __future__ import annotations

from ..core.lrp import PLAIN_RULES
from .partial_lrp import PartialLRP
from .registry import register


@register
class PlainPartialLRP(PartialLRP):
    name = "partial_lrp_plain"
    summary = ("Partial LRP with plain rules (z-rule residuals), the CVPR 2021 paper's partial-LRP baseline (the "
               "reference's ViT_orig_LRP, last layer).")
    propagation_rules = PLAIN_RULES
