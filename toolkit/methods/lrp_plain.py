from __future__ import annotations

from ..core.lrp import PLAIN_RULES
from .lrp import LRP
from .registry import register


@register
class PlainLRP(LRP):
    name = "lrp_plain"
    summary = ("Full LRP with plain rules (z-rule residuals), the CVPR 2021 paper's LRP baseline (the reference's "
               "ViT_orig_LRP): per token, or per pixel for images.")
    propagation_rules = PLAIN_RULES
