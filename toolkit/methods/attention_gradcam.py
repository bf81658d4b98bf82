from __future__ import annotations

import torch

from ..core.trace import Trace
from .base import Method
from .registry import register


@register
class AttentionGradCAM(Method):
    """Grad-CAM with the last layer's attention heads as channels.

    A head's weight is its gradient averaged over the read-out row's content tokens (the patches of
    an image, the non-special tokens of a text); the map is max(mean_h(weight_h * A_h), 0), as in
    the baseline of Chefer et al. (CVPR 2021).
    """

    name = "attention_gradcam"
    summary = "Grad-CAM on the last layer's attention: heads weighted by their mean gradient."
    needs_gradients = True
    reads = "last"
    empty_reason = ("it keeps only positive gradient-weighted attention (clamped at zero), and every last-layer "
                    "head's mean gradient was negative or zero for this target")

    def attribute(self, trace: Trace) -> torch.Tensor:
        probs_row = torch.einsum("bi,bhij->bhj", trace.readout, trace.probs[-1].float())
        grad_row = torch.einsum("bi,bhij->bhj", trace.readout, trace.grads[-1].float())
        content = trace.content_mask.unsqueeze(1).float()
        weights = (grad_row * content).sum(-1, keepdim=True) / content.sum(-1, keepdim=True).clamp(min=1)
        return (weights * probs_row).mean(dim=1).clamp(min=0)
