"""What an adapter declares about a model: where each layer's parts live, and how it is read out.

These are plain references to the stock model's own modules; nothing of the model is copied.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn

from ..errors import UnsupportedModelError


@dataclass
class LayerSpec:
    """One transformer layer of a stock model.

    ``attn_branch`` and ``mlp_branch`` are the modules whose outputs are added to the residual
    stream (a projection, or the layer-scale after it). ``norm_first`` distinguishes pre-LN
    layers (ViT) from post-LN layers (BERT). ``call`` selects the call of modules shared
    across layers (ALBERT runs one layer's modules once per depth).
    """

    block: nn.Module
    attention: nn.Module
    extract_probs: Callable[[object], torch.Tensor]
    num_heads: int
    out_proj: nn.Linear
    fc1: nn.Linear
    fc2: nn.Linear
    norm_first: bool
    query: nn.Linear | None = None
    key: nn.Linear | None = None
    value: nn.Linear | None = None
    qkv: nn.Linear | None = None
    attn_branch: nn.Module | None = None
    mlp_branch: nn.Module | None = None
    call: int = 0
    lrp_blocker: str | None = None  # why LRP cannot pass this layer, if it cannot

    def __post_init__(self) -> None:
        self.attn_branch = self.attn_branch or self.out_proj
        self.mlp_branch = self.mlp_branch or self.fc2

    def projections(self) -> list[nn.Linear]:
        return [self.qkv] if self.qkv is not None else [self.query, self.key, self.value]

    def recorded_modules(self) -> list[nn.Module]:
        """Modules whose calls the LRP pass reads."""
        return [self.block, self.out_proj, self.fc1, self.fc2, self.attn_branch, self.mlp_branch, *self.projections()]


@dataclass
class ModelSpec:
    """The layers of a model, its classification head, and the tokens its prediction is read from.

    ``readout`` is ``"token"`` (the hidden state at ``readout_index``, e.g. [CLS]) or ``"mean"``
    (the average over real tokens, as sentence encoders pool).
    """

    layers: list[LayerSpec]
    head: list[nn.Linear] = field(default_factory=list)  # Linear layers from the readout token to the logits
    readout_index: int = 0
    readout: str = "token"
    lrp_blocker: str | None = None

    def check_lrp(self) -> None:
        """Raise a clear error, before any work, if the LRP rules cannot pass some part of the model."""
        blocker = self.lrp_blocker or next((layer.lrp_blocker for layer in self.layers if layer.lrp_blocker), None)
        if blocker:
            raise UnsupportedModelError(f"The LRP-based methods cannot explain this model: {blocker}.")

    def readout_weights(self, token_mask: torch.Tensor) -> torch.Tensor:
        """(B, N) weights of the token rows that the prediction reads."""
        if self.readout == "mean":
            weights = token_mask.float()
            return weights / weights.sum(dim=1, keepdim=True)
        weights = torch.zeros(token_mask.shape, device=token_mask.device)
        weights[:, self.readout_index] = 1.0
        return weights
