from __future__ import annotations

import torch

from ..core.trace import Trace
from .base import Method
from .registry import register


@register
class GradientXInput(Method):
    """Shrikumar et al. 2016, computed by captum (InputXGradient) on the first layer's input (the token or patch
    embeddings, with their position terms), summed over features. The plain gradient: no LRP rule."""

    name = "gradient_x_input"
    summary = "Gradient x input through captum, on the token or patch embeddings, summed over features."
    reruns_model = True
    reads = "input"
    empty_reason = "the gradient at the embeddings was zero for this target"

    def attribute(self, trace: Trace) -> torch.Tensor:
        from captum.attr import InputXGradient

        with torch.enable_grad():
            attributions = InputXGradient(trace.rerun).attribute(trace.layer_input.requires_grad_(), target=trace.targets)
        return attributions.sum(dim=-1)
