"""The hooks and the one backward pass that gradient methods share, for the classifier engine and the language-model
adapter alike: attention gradients (``needs_gradients``), input x gradient under LRP rules (``rules``), and the first
layer's input for methods that run the model again (``reruns_model``)."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn as nn

from .capture import AttentionCall, Recorder
from .spec import ModelSpec


def takes_backward(method) -> bool:
    return method.needs_gradients or method.rules is not None


@contextlib.contextmanager
def gradient_capture(method, rec: Recorder, model: nn.Module, spec: ModelSpec,
                     input_modules: list[nn.Module]) -> Iterator[None]:
    """Inside a Recorder: the graph started where the backward pass ends (at the pixels too under LRP rules), the
    first layer's input recorded for reruns, and the method's LRP rules applied (undone on exit)."""
    if method.rules is not None:
        for module in input_modules:
            rec.start_graph_at(module)
    if takes_backward(method):
        rec.start_graph_at(spec.layers[0].block)
    if method.reruns_model:
        rec.record(spec.layers[0].block)
    with method.rules.applied(model, spec) if method.rules is not None else contextlib.nullcontext():
        yield


def backward(method, rec: Recorder, objective: torch.Tensor, calls: list[AttentionCall]
             ) -> tuple[list[torch.Tensor] | None, list[tuple[torch.Tensor, torch.Tensor]] | None]:
    """One backward pass from ``objective``: (the attention maps' gradients, or None; (value, gradient) at every
    graph start, outermost first, under LRP rules, or None)."""
    live = [call.live for call in calls] if method.needs_gradients else []
    starts = list(rec.graph_inputs.values()) if method.rules is not None else []
    grads = torch.autograd.grad(objective, live + starts)
    inputs = [(start.detach(), grad) for start, grad in zip(starts, grads[len(live):])]
    return (list(grads[:len(live)]) if method.needs_gradients else None), (inputs if method.rules is not None else None)
