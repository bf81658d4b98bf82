"""What one forward (and backward) pass left behind for the methods to read."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch


@dataclass
class Network:
    """Every attention site of a model whose streams attend to each other, for the bi-modal rules: per site
    (query stream, key stream, whether it reads the same inputs as the site before it), its probabilities and
    gradients; the streams' token counts; links (site index -> (target, source, positions)) where one stream's
    outputs are copied into another; and the pair of streams a reading asks for."""

    sites: list[tuple[str, str, bool]]
    probs: list[torch.Tensor]
    grads: list[torch.Tensor] | None
    sizes: dict[str, int]
    query: str
    key: str
    links: dict[int, tuple[str, str, torch.Tensor]] = field(default_factory=dict)


@dataclass
class Trace:
    """Per-layer attention probabilities (B, H, N, N), and what gradient or LRP passes added.

    ``readout`` (B, N) weights the token rows the prediction is read from (one-hot on [CLS]).
    ``content_mask`` (B, N) marks the tokens an explanation is about. ``network``: every site of a multi-stream
    model, when the relevance asked for crosses streams (methods that read it say so with ``reads = "network"``).
    """

    probs: list[torch.Tensor]
    readout: torch.Tensor
    token_mask: torch.Tensor
    content_mask: torch.Tensor
    grads: list[torch.Tensor] | None = None
    attention_relevance: list[torch.Tensor] | None = None  # per layer, what Method.kept_attention_relevance kept
    input_relevance: torch.Tensor | None = None
    network: Network | None = None
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
