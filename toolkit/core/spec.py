"""What a family declares about a model: where each layer's parts live, and how it is read out.

These are plain references to the stock model's own modules; nothing of the model is copied. The built-in
families and users' YAML entries produce them through :mod:`toolkit.families`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn

from ..errors import FamilyError, UnsupportedModelError
from .capture import AttentionCall, Recorder

READOUTS = ("token", "mean", "mean-content", "next-token", "given")


@dataclass
class LayerSpec:
    """One transformer layer of a stock model.

    ``attn_branch`` and ``mlp_branch`` are the modules whose outputs are added to the residual
    stream (a projection, or the layer-scale after it); ``attn_scale`` / ``mlp_scale`` a layer-scale
    parameter the layer multiplies that output by without a module of its own (BEiT, EVA).
    ``norm_first`` distinguishes pre-LN layers (ViT) from post-LN layers (BERT). ``call`` selects the
    call of modules shared across layers (ALBERT runs one layer's modules once per depth). The parts
    only LRP reads (projections, MLP) may be None when ``lrp_blocker`` says why LRP cannot pass.
    """

    block: nn.Module
    attention: nn.Module
    extract_probs: Callable[[object], torch.Tensor]
    num_heads: int
    out_proj: nn.Linear | None
    fc1: nn.Linear | None
    fc2: nn.Linear | None
    norm_first: bool
    query: nn.Linear | None = None
    key: nn.Linear | None = None
    value: nn.Linear | None = None
    qkv: nn.Linear | None = None
    attn_branch: nn.Module | None = None
    mlp_branch: nn.Module | None = None
    attn_scale: torch.Tensor | float | None = None
    mlp_scale: torch.Tensor | float | None = None
    call: int = 0
    lrp_blocker: str | None = None  # why LRP cannot pass this layer, if it cannot
    gated_mlp: bool = False  # fc2 reads the product of two projections (GLU, SwiGLU)
    activation: nn.Module | None = None  # fc2 reads activation(fc1's output): the LRP record recomputes fc2's input

    def __post_init__(self) -> None:
        self.attn_branch = self.attn_branch or self.out_proj
        self.mlp_branch = self.mlp_branch or self.fc2

    def projections(self) -> list[nn.Linear]:
        return [self.qkv] if self.qkv is not None else [self.query, self.key, self.value]

    def recorded_modules(self) -> list[nn.Module]:
        """Modules whose calls the LRP pass reads."""
        return [self.block, self.out_proj, self.fc1, self.fc2, self.attn_branch, self.mlp_branch, *self.projections()]

    def record(self, rec: Recorder) -> None:
        """Record what the LRP pass reads of this layer; fc2's input as a recipe from fc1's output where the
        declared activation reproduces it (the Recorder checks each call)."""
        if self.activation is not None and self.fc1 is not None and not self.gated_mlp:
            rec.record(self.fc2, input_from=(self.fc1, self.activation))
        for module in self.recorded_modules():
            rec.record(module)

    def forget(self, rec: Recorder) -> None:
        """Drop what :meth:`record` kept of this layer, but the block's own call (whose input the input's relevance
        and the next layer down read): the LRP pass has passed the layer."""
        for module in {id(m): m for m in self.recorded_modules() if m is not self.block}.values():
            rec.forget(module, self.call)


@dataclass
class ModelSpec:
    """The layers of a model, its classification head, and the tokens its prediction is read from.

    ``readout`` is ``"token"`` (the hidden state at ``readout_index``, e.g. [CLS]), ``"mean"`` (the
    average over real tokens, as sentence encoders pool) or ``"mean-content"`` (the average over content
    tokens: the patches without the prefix tokens, as BEiT and timm's ``global_pool="avg"`` pool) or ``"next-token"``
    (a causal language model: each explained token is read at the position before it, which the generation task
    gives per step) or ``"given"`` (a stream of an image-text family whose task gives each sample's read-out, as
    CLIP's end-of-text token).
    ``pool``: an attention-pooling head after the layers (SigLIP's: a learned probe attending to every token
    through a MultiheadAttention, then an MLP on a residual), which the AttnLRP / CP-LRP rules pass as they pass a
    layer; nothing else reads it.
    ``origin`` names the declaration for messages, ``paths`` the declared path of each module, and
    ``nearby(path)`` the module paths that exist close to a path that did not work.
    """

    layers: list[LayerSpec]
    head: list[nn.Linear] = field(default_factory=list)  # Linear layers from the readout token to the logits
    readout_index: int = 0
    readout: str = "token"
    lrp_blocker: str | None = None
    attnlrp_blocker: str | None = None  # why the AttnLRP / CP-LRP rules (core.lrp_rules) cannot pass, if they cannot
    # (last layer's output (B, N, D), token mask, targets) -> its LRP relevance, for a head without Linear layers
    token_start: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    pool: LayerSpec | None = None
    origin: str = "the adapter"
    paths: dict[int, str] = field(default_factory=dict)
    nearby: Callable[[str], str] = field(default=lambda path: "", repr=False)

    def __post_init__(self) -> None:
        if self.readout not in READOUTS:
            raise ValueError(f"readout {self.readout!r} is none of {READOUTS}")
        if self.readout not in ("token", "given") and self.lrp_blocker is None and self.token_start is None:
            self.lrp_blocker = "the prediction reads a mean over tokens, and mean pooling has no LRP rule here"

    def check_lrp(self) -> None:
        """Raise a clear error, before any work, if the LRP rules cannot pass some part of the model."""
        blocker = self.lrp_blocker or next((layer.lrp_blocker for layer in self.layers if layer.lrp_blocker), None)
        if blocker:
            raise UnsupportedModelError(f"The LRP-based methods cannot explain this model: {blocker}.")

    def readout_weights(self, token_mask: torch.Tensor, content_mask: torch.Tensor | None = None,
                        rows: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N) weights of the token rows that the prediction reads; ``rows`` (B,): each sample's position under a
        next-token read-out."""
        if self.readout == "next-token":
            weights = torch.zeros(token_mask.shape, device=token_mask.device)
            weights[torch.arange(rows.shape[0], device=rows.device), rows] = 1.0
            return weights
        if self.readout in ("mean", "mean-content"):
            weights = (token_mask if self.readout == "mean" else content_mask).float()
            return weights / weights.sum(dim=1, keepdim=True)
        weights = torch.zeros(token_mask.shape, device=token_mask.device)
        weights[:, self.readout_index] = 1.0
        return weights

    def _path(self, module: nn.Module) -> str:
        return self.paths.get(id(module), type(module).__name__)

    def attention_calls(self, rec: Recorder, num_tokens: int) -> list[AttentionCall]:
        """Each layer's captured attention call, or an error naming the capture point that was never called or
        that gave something other than (batch, heads, N, N) probabilities over the N input tokens."""
        calls = []
        for index, layer in enumerate(self.layers):
            made = rec.attention.get(id(layer.attention), [])
            path = self._path(layer.attention)
            if len(made) <= layer.call:
                times = f" {layer.call + 1} times" if layer.call else ""
                raise FamilyError(f"{self.origin}: layer {index}'s attention probabilities are captured at {path!r}, "
                                  f"which the forward pass never called{times}: `probs` must name a module that runs "
                                  f"in every layer and sees the probabilities.{self.nearby(path)}")
            probs = made[layer.call].probs
            if probs.dim() != 4 or tuple(probs.shape[-2:]) != (num_tokens, num_tokens):
                raise FamilyError(f"{self.origin}: layer {index}'s capture point {path!r} gave a tensor shaped "
                                  f"{tuple(probs.shape)}; expected attention probabilities (batch, heads, {num_tokens}, "
                                  f"{num_tokens}) over the {num_tokens} input tokens (check `probs`, and for images "
                                  f"`prefix_tokens` and `patch_embedding`).{self.nearby(path)}")
            calls.append(made[layer.call])
        return calls

    def check_head(self, rec: Recorder, logits: torch.Tensor) -> None:
        """The last head module must have run and given the logits, or LRP would start from something else."""
        if not self.head:
            return
        last = self.head[-1]
        path = self._path(last)
        made = rec.calls.get(id(last), [])
        if not made:
            raise FamilyError(f"{self.origin}: the head's last module {path!r} never ran in the forward pass; `head` "
                              f"must list the Linear layers from the read-out token to the logits.{self.nearby(path)}")
        output = made[-1].output
        if output is None or output.shape != logits.shape or not torch.allclose(
                output.float(), logits.detach().float(), rtol=1e-4, atol=1e-5):
            shape = "nothing" if output is None else f"a {tuple(output.shape)} tensor"
            raise FamilyError(f"{self.origin}: the head's last module {path!r} gives {shape} that is not the model's "
                              f"logits {tuple(logits.shape)}; `head` must list the Linear layers from the read-out "
                              f"token to the logits, the last one giving the logits.{self.nearby(path)}")
