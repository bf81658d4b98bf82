"""The method contract: a method reads a :class:`~toolkit.core.trace.Trace` and returns relevance.

Methods that propagate the read-out row through the layers share :class:`RowPropagation`;
each of them only says which (B, N, N) matrix stands for a layer.
"""
from __future__ import annotations

from typing import ClassVar

import torch

from ..core.propagation import propagate_row
from ..core.trace import Trace
from ..errors import InputError


class Method:
    """An explanation method. ``needs_gradients`` / ``needs_lrp`` say which passes it requires."""

    name: ClassVar[str]
    summary: ClassVar[str]
    needs_gradients: ClassVar[bool] = False
    needs_lrp: ClassVar[bool] = False
    needs_input_relevance: ClassVar[bool] = False
    takes_start_layer: ClassVar[bool] = False

    def __init__(self, start_layer: int = 0):
        if start_layer and not self.takes_start_layer:
            raise InputError(f"Method {self.name!r} has no start_layer option.")
        self.start_layer = start_layer

    def options(self) -> dict:
        return {"start_layer": self.start_layer} if self.takes_start_layer else {}

    def resolved_start(self, num_layers: int) -> int:
        start = self.start_layer + num_layers if self.start_layer < 0 else self.start_layer
        if not 0 <= start < num_layers:
            raise InputError(f"start_layer={self.start_layer} is out of range for a model with {num_layers} layers.")
        return start

    def lowest_lrp_layer(self, num_layers: int) -> int:
        """The lowest layer whose attention relevance this method reads (LRP stops there)."""
        return 0

    def attribute(self, trace: Trace) -> torch.Tensor:
        """Relevance per token (B, N), or per input pixel (B, H, W) for input-level methods."""
        raise NotImplementedError


class RowPropagation(Method):
    """R = I; for each layer from ``start_layer``: R <- M_l(R); read the read-out row of R."""

    takes_start_layer = True
    normalise_rows: ClassVar[bool] = False

    def layer_matrix(self, trace: Trace, layer: int) -> torch.Tensor:
        raise NotImplementedError

    def attribute(self, trace: Trace) -> torch.Tensor:
        start = self.resolved_start(trace.num_layers)
        matrices = [self.layer_matrix(trace, layer) for layer in range(start, trace.num_layers)]
        return propagate_row(trace.readout, matrices, normalise_rows=self.normalise_rows)

