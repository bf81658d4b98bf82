"""The method contract: a method reads a :class:`~toolkit.core.trace.Trace` and returns relevance.

Methods that propagate the read-out row through the layers share :class:`RowPropagation`;
each of them only says which (B, N, N) matrix stands for a layer.
"""
from __future__ import annotations

import difflib
from typing import Any, ClassVar

import torch
import torch.nn as nn

from ..core.lrp import CVPR2021_RULES, PropagationRules
from ..core.lrp_rules import RuleSet
from ..core.propagation import identity_share, propagate_row
from ..core.spec import ModelSpec
from ..core.trace import Trace
from ..errors import InputError


class Method:
    """An explanation method. ``needs_gradients`` / ``needs_lrp`` say which passes it requires."""

    name: ClassVar[str]
    summary: ClassVar[str]
    needs_gradients: ClassVar[bool] = False
    needs_lrp: ClassVar[bool] = False
    needs_input_relevance: ClassVar[bool] = False
    # The rules of the LRP pass (needs_lrp): the CVPR 2021 paper's own, or the plain ones of its baselines
    propagation_rules: ClassVar[PropagationRules] = CVPR2021_RULES
    # LRP rules applied as a modified backward pass (AttnLRP, CP-LRP): the trace then holds input x gradient
    rules: ClassVar[RuleSet | None] = None
    reruns_model: ClassVar[bool] = False  # runs the model itself through trace.rerun (integrated gradients)
    takes_start_layer: ClassVar[bool] = False
    extra_options: ClassVar[dict[str, Any]] = {}  # option name -> default, beyond start_layer
    empty_reason: ClassVar[str] = "the attention layers gave this target no relevance"
    # What the method reads of a model whose streams attend to each other (toolkit.core.engine.route):
    # "last" the last attention map between two streams, "stream" a stack of self-attention maps within one
    # stream, "network" every attention site by the bi-modal rules, "input" the gradient at a stream's input.
    reads: ClassVar[str] = "stream"

    def __init__(self, start_layer: int = 0, **options: Any):
        if start_layer and not self.takes_start_layer:
            raise InputError(f"Method {self.name!r} has no start_layer option.")
        unknown = sorted(set(options) - set(self.extra_options))
        if unknown:
            valid = (["start_layer"] if self.takes_start_layer else []) + list(self.extra_options)
            close = difflib.get_close_matches(unknown[0], valid, n=1)
            raise InputError(f"Method {self.name!r} has no option {unknown[0]!r}"
                             + (f"; did you mean {close[0]!r}?" if close else ".")
                             + f" Its options: {', '.join(valid) or 'none'}.")
        for name, default in self.extra_options.items():
            value = options.get(name, default)
            if type(value) is not type(default):
                raise InputError(f"Option {name!r} of {self.name!r} takes a {type(default).__name__}; got {value!r}.")
            setattr(self, name, value)
        self.start_layer = start_layer

    @classmethod
    def uses_gradients(cls) -> bool:
        """Whether the method takes gradients (of attention maps, under LRP rules, or along a path)."""
        return cls.needs_gradients or cls.rules is not None or cls.reruns_model

    @classmethod
    def refusal(cls, spec: ModelSpec, model: nn.Module) -> str | None:
        """Why this method cannot explain ``model`` (checked before any work), beyond the CVPR 2021 LRP check."""
        return None if cls.rules is None else cls.rules.refusal(spec, model)

    @classmethod
    def option_names(cls) -> list[str]:
        return (["start_layer"] if cls.takes_start_layer else []) + list(cls.extra_options)

    def options(self) -> dict:
        chosen = {name: getattr(self, name) for name in self.extra_options}
        return {"start_layer": self.start_layer, **chosen} if self.takes_start_layer else chosen

    def with_start_layer(self, start_layer: int, option: str, stack: str) -> "Method":
        """The same method and options from another layer, for another stack of the model (CLIP's text tower
        has its own start): ``option`` and ``stack`` name them in messages."""
        method = type(self)(start_layer, **{name: getattr(self, name) for name in self.extra_options})
        method.start_option, method.stack = option, stack
        return method

    start_option, stack = "start_layer", "the model"

    def resolved_start(self, num_layers: int) -> int:
        start = self.start_layer + num_layers if self.start_layer < 0 else self.start_layer
        if not 0 <= start < num_layers:
            raise InputError(f"{self.start_option}={self.start_layer} is out of range for {self.stack}, which has "
                             f"{num_layers} layers (0..{num_layers - 1}, or negative from the last).")
        return start

    def lowest_lrp_layer(self, num_layers: int) -> int:
        """The lowest layer whose attention relevance this method reads (LRP stops there)."""
        return 0

    def kept_attention_relevance(self, relevance: torch.Tensor, gradient: torch.Tensor | None) -> torch.Tensor | None:
        """What an LRP pass keeps of one layer's attention-map relevance (B, H, N, N), given that map's gradient
        (with ``needs_gradients``), for ``trace.attention_relevance``: all of it by default; a method that reads
        less keeps less (None: nothing), which lowers the pass's peak memory."""
        return relevance

    def attribute(self, trace: Trace) -> torch.Tensor:
        """Relevance per token (B, N), or per input pixel (B, H, W) for input-level methods."""
        raise NotImplementedError


class RowPropagation(Method):
    """R = I; for each layer from ``start_layer``: R <- M_l(R); read the read-out row of R.

    R's product keeps a pure-identity term: the read-out row itself, scaled. Under a pooled read-out
    (mean over tokens, as sentence encoders) that term is the same for every token and drowns what the
    attention layers add (0.130-0.139 for every word instead of 0.006-0.014), so it is removed there;
    ``keep_identity=True`` returns the raw row. With a single read-out token it lands on that (special)
    token only, and the row is returned as is.
    """

    takes_start_layer = True
    normalise_rows: ClassVar[bool] = False
    extra_options = {"keep_identity": False}

    def layer_matrix(self, trace: Trace, layer: int) -> torch.Tensor:
        raise NotImplementedError

    def attribute(self, trace: Trace) -> torch.Tensor:
        start = self.resolved_start(trace.num_layers)
        matrices = [self.layer_matrix(trace, layer) for layer in range(start, trace.num_layers)]
        row = propagate_row(trace.readout, matrices, normalise_rows=self.normalise_rows)
        if self.keep_identity or not trace.pooled_readout:
            return row
        return row - identity_share(trace.readout, matrices, normalise_rows=self.normalise_rows)



class InputTimesGradient(Method):
    """Relevance = input x gradient where the backward pass starts, summed over features: per pixel (over the colour
    channels) for images, per token (over the hidden dimension) for text. With ``rules``, the gradient is that of
    the rules' modified backward pass, which makes the product their LRP relevance."""

    reads = "input"

    def attribute(self, trace: Trace) -> torch.Tensor:
        value, gradient = trace.input_gradients[0]
        dtype = torch.promote_types(value.dtype, torch.float32)
        product = value.to(dtype) * gradient.to(dtype)
        return product.sum(dim=1) if product.dim() == 4 else product.sum(dim=-1)
