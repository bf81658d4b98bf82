"""What one forward (and backward) pass left behind for the methods to read."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


@dataclass
class Trace:
    """Per-layer attention probabilities (B, H, N, N), and what gradient or LRP passes added.

    ``readout`` (B, N) weights the token rows the prediction is read from (one-hot on [CLS]).
    ``content_mask`` (B, N) marks the tokens an explanation is about.
    """

    probs: list[torch.Tensor]
    readout: torch.Tensor
    token_mask: torch.Tensor
    content_mask: torch.Tensor
    grads: list[torch.Tensor] | None = None
    attention_relevance: list[torch.Tensor] | None = None
    input_relevance: torch.Tensor | None = None
    # (value, gradient) where the graph starts, outermost first: the pixels (images), then the first layer's input
    input_gradients: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    # for methods that run the model again (Method.reruns_model): the classes explained (B,), the first layer's input
    # (B, N, D), and the model's outputs (R*B, C) for other first-layer inputs (R*B, N, D), the batch repeated R times
    targets: torch.Tensor | None = None
    layer_input: torch.Tensor | None = None
    rerun: Callable[[torch.Tensor], torch.Tensor] | None = None

    @property
    def num_layers(self) -> int:
        return len(self.probs)

    @property
    def pooled_readout(self) -> bool:
        """Whether the prediction reads several token rows at once (mean pooling), not one token."""
        return bool(((self.readout != 0).sum(dim=-1) > 1).any())
