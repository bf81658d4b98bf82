"""The contract for image-text models: where each attention lives, which modalities it connects,
and how a batch is prepared, run and read out."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import numpy as np
import torch
import torch.nn as nn

from ..core.bimodal import RelevanceState
from ..core.capture import Recorder
from ..core.explicit_attention import explicit_attention
from ..core.propagation import head_mean_positive
from ..core.trace import Trace
from ..errors import InputError, UnsupportedModelError
from ..images import image_items, to_rgb
from ..methods import Method


@dataclass
class AttentionSite:
    """One attention module: queries from modality ``query``, keys from ``key`` (equal for self-attention)."""

    module: nn.Module
    extract: Callable[[Any], torch.Tensor]
    query: str
    key: str
    call: int = 0

    @property
    def is_self(self) -> bool:
        return self.query == self.key


@dataclass
class Captured:
    """What one forward (+ backward) pass gave: per-site probabilities and gradients, and the outputs."""

    outputs: Any
    objective: torch.Tensor | None
    probs: list[torch.Tensor]
    grads: list[torch.Tensor] | None = None


@dataclass
class MultimodalBatch:
    model_inputs: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]  # (B, N_m) real tokens of each modality
    samples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def sizes(self) -> dict[str, int]:
        return {m: mask.shape[1] for m, mask in self.masks.items()}

    def __len__(self) -> int:
        return next(iter(self.masks.values())).shape[0]


def second_output(output: Any) -> torch.Tensor | None:
    return output[1] if isinstance(output, (tuple, list)) and len(output) > 1 else None


def one_hot_rows(indices: torch.Tensor, size: int) -> torch.Tensor:
    rows = torch.zeros(indices.shape[0], size, device=indices.device)
    rows[torch.arange(indices.shape[0]), indices] = 1.0
    return rows


class MultimodalAdapter(ABC):
    """A family of image-text models. Subclasses declare sites and run the model; the base captures."""

    family: ClassVar[str]
    task: ClassVar[str]
    examples: ClassVar[str] = ""
    model_types: ClassVar[tuple[str, ...]] = ()  # Hugging Face config.model_type values loaded by ``load``
    supported_methods: ClassVar[tuple[str, ...]] = ("generic", "raw_attention", "attention_gradcam")

    def __init__(self, model: nn.Module, processor: Any = None):
        self.model = model
        self.processor = processor
        self.name = getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__

    @classmethod
    @abstractmethod
    def matches(cls, model: nn.Module) -> bool: ...

    @classmethod
    def load(cls, name: str, **kwargs) -> tuple[nn.Module, Any]:
        """The stock model and its processor, from the Hub or a local folder."""
        raise NotImplementedError

    @abstractmethod
    def sites(self) -> list[AttentionSite]:
        """Every attention module, in the order the model runs them."""

    @abstractmethod
    def explain(self, method: Method, target: Any, **inputs) -> list:
        """Explanations for the given inputs (one per image-text pair, question, or caption)."""

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def labels(self) -> dict[int, str]:
        return {}

    def predict(self, top_k: int, **inputs: Any) -> list[tuple[str, float]]:
        """The ``top_k`` most probable answers as (answer, probability); families with a fixed answer set override it."""
        raise UnsupportedModelError(f"{self.family} models have no fixed set of answers to rank: explain() gives "
                                    "the similarity, answer or caption with its probability.")

    def check_method(self, method: Method) -> None:
        if method.name not in self.supported_methods:
            raise UnsupportedModelError(
                f"Method {method.name!r} is not available for {self.family} models; "
                f"use one of {', '.join(self.supported_methods)}.")

    def images(self, image: Any) -> list:
        """The RGB images in ``image``: one image, a list, or a 4-d array or tensor (as classifiers read them)."""
        if image is None:
            raise InputError("No image given: pass image=<PIL image, array or path>.")
        return [to_rgb(im, i) for i, im in enumerate(image_items(image))]

    def capture(self, run: Callable[[], tuple[Any, torch.Tensor]], needs_gradients: bool) -> Captured:
        """Run ``run()`` -> (outputs, per-sample objective) with every site hooked; gradients of the
        objective's sum with respect to each attention map when asked (one backward for the batch)."""
        sites = self.sites()
        with explicit_attention(self.model), Recorder(keep_gradients=needs_gradients) as rec:
            for site in sites:
                rec.record_attention(site.module, site.extract)
            with torch.set_grad_enabled(needs_gradients):  # also under a caller's no_grad()
                outputs, objective = run()
                calls = [rec.attention_call(site.module, site.call) for site in sites]
                captured = Captured(outputs, objective, [c.probs.float() for c in calls])
                if needs_gradients:
                    grads = torch.autograd.grad(objective.sum(), [c.live for c in calls], allow_unused=True)
                    captured.grads = [torch.zeros_like(p) if g is None else g.float()
                                      for g, p in zip(grads, captured.probs)]
        return captured

    # --- reading relevance ----------------------------------------------------------------------
    def stream_relevance(self, method: Method, captured: Captured, modality: str, rows: torch.Tensor,
                         token_mask: torch.Tensor, content_mask: torch.Tensor) -> torch.Tensor:
        """Relevance (B, N) over one self-attention stream, read at ``rows`` (B,), with a classifier method."""
        indices = [i for i, site in enumerate(self.sites()) if site.query == modality and site.is_self]
        trace = Trace(probs=[captured.probs[i] for i in indices],
                      grads=None if captured.grads is None else [captured.grads[i] for i in indices],
                      readout=one_hot_rows(rows, token_mask.shape[1]), token_mask=token_mask,
                      content_mask=content_mask)
        return method.attribute(trace)

    def generic_state(self, captured: Captured, sizes: dict[str, int], batch: int,
                      links: Callable[[RelevanceState, int], None] | None = None) -> RelevanceState:
        """Apply the ICCV 2021 rules to every site in order; ``links(state, site_index)`` may connect streams."""
        state = RelevanceState(sizes, batch, self.device)
        for index, (site, probs, grads) in enumerate(zip(self.sites(), captured.probs, captured.grads)):
            if links is not None:
                links(state, index)
            weighted = head_mean_positive(grads * probs)
            if site.is_self:
                state.self_attention(site.query, weighted)
            else:
                state.cross_attention(site.query, site.key, weighted)
        return state

    def last_cross_attention(self, method: Method, captured: Captured, query: str, key: str,
                             rows: torch.Tensor, content_mask: torch.Tensor) -> torch.Tensor:
        """raw_attention / attention_gradcam on the last attention from ``query`` to ``key`` tokens."""
        index = max(i for i, s in enumerate(self.sites()) if s.query == query and s.key == key)
        probs = captured.probs[index]
        readout = one_hot_rows(rows, probs.shape[2])
        probs_row = torch.einsum("bi,bhij->bhj", readout, probs)
        if method.name == "raw_attention":
            return probs_row.mean(dim=1)
        grad_row = torch.einsum("bi,bhij->bhj", readout, captured.grads[index])
        content = content_mask.unsqueeze(1).float()
        weights = (grad_row * content).sum(-1, keepdim=True) / content.sum(-1, keepdim=True).clamp(min=1)
        return (weights * probs_row).mean(dim=1).clamp(min=0)


def string_list(value: Any, keyword: str) -> list[str]:
    """``value`` (a string, or a list or tuple of strings) as a list of non-empty strings; ``keyword`` names the
    argument in errors."""
    if value is not None and not isinstance(value, (str, list, tuple)):
        raise InputError(f"{keyword} must be a string or a list of strings; got {value!r} "
                         f"({type(value).__name__}).")
    texts = [value] if isinstance(value, str) else list(value or [])
    if not texts:
        raise InputError(f"No {keyword} given: pass {keyword}='...' or a list of them.")
    for index, item in enumerate(texts):
        if not isinstance(item, str) or not item.strip():
            raise InputError(f"{keyword.capitalize()} #{index} is empty or not a string.")
    return texts


def reject_unknown(family: str, accepted: str, unknown: dict) -> None:
    if unknown:
        raise InputError(f"{family} models take {accepted}; got unexpected {sorted(unknown)}.")


def to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy()
