"""What one forward (and backward) pass left behind for the methods to read."""
from __future__ import annotations

from dataclasses import dataclass

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

    @property
    def num_layers(self) -> int:
        return len(self.probs)

    @property
    def pooled_readout(self) -> bool:
        """Whether the prediction reads several token rows at once (mean pooling), not one token."""
        return bool(((self.readout != 0).sum(dim=-1) > 1).any())
