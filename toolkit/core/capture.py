"""Capture what explanation methods need from a stock model's forward and backward pass.

A :class:`Recorder` places forward hooks on the modules an adapter names, keeps every call's
input and output (shared modules, as in ALBERT, are called once per layer), and keeps the
attention probabilities as they sit in the autograd graph, so that their gradient can be taken. Leaving the ``with`` block
removes every hook, also when the forward or backward pass raised.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn

AttentionExtractor = Callable[[object], torch.Tensor]


def with_first_input(args: tuple, kwargs: dict, replace: Callable[[torch.Tensor], torch.Tensor | None]):
    """(args, kwargs) with the first floating-point tensor (positional, else keyword) replaced by ``replace(it)``, or
    None when there is none or ``replace`` gives None (the call is left as it is)."""
    for index, value in enumerate(args):
        if torch.is_tensor(value) and value.is_floating_point():
            new = replace(value)
            return None if new is None else ((*args[:index], new, *args[index + 1:]), kwargs)
    for key, value in kwargs.items():
        if torch.is_tensor(value) and value.is_floating_point():
            new = replace(value)
            return None if new is None else (args, {**kwargs, key: new})
    return None


def first_tensor(args: tuple, kwargs: dict) -> torch.Tensor | None:
    """The tensor a module was called on: the first positional tensor, or ``hidden_states``."""
    for value in args:
        if torch.is_tensor(value):
            return value
    for key in ("hidden_states", "x", "input", "hidden_state"):
        if torch.is_tensor(kwargs.get(key)):
            return kwargs[key]
    return None


@dataclass
class ModuleCall:
    """One call of a module: its main input and output tensors (detached); ``output_version`` the output's version
    counter at the call (a later in-place change of the output moves it; None for inference-mode tensors, which
    keep no counter). An input that ``recipe()`` recomputes exactly is not kept: ``input`` recomputes it."""

    kept_input: torch.Tensor | None
    output: torch.Tensor | None
    output_version: int | None = None
    recipe: Callable[[], torch.Tensor] | None = None

    @property
    def input(self) -> torch.Tensor | None:
        return self.kept_input if self.recipe is None else self.recipe()


@dataclass
class AttentionCall:
    """One call of an attention module: probabilities (B, H, Nq, Nk), detached and as they sit in the graph."""

    probs: torch.Tensor
    live: torch.Tensor | None = None


@dataclass
class Recorder:
    """Forward hooks on chosen modules; released on exit of the ``with`` block."""

    keep_gradients: bool = False  # keep attention probabilities attached to the graph
    calls: dict[int, list[ModuleCall]] = field(default_factory=lambda: defaultdict(list))
    attention: dict[int, list[AttentionCall]] = field(default_factory=lambda: defaultdict(list))
    graph_inputs: dict[int, torch.Tensor] = field(default_factory=dict)  # module id -> its first input in the graph
    _handles: list = field(default_factory=list)
    _watched: set = field(default_factory=set)
    _lifted: list = field(default_factory=list)  # tensors made to require grad by start_graph_at

    def _first_time(self, module: nn.Module, role: str) -> bool:
        """Shared modules (ALBERT) appear in several layers but must be hooked once."""
        key = (id(module), role)
        if key in self._watched:
            return False
        self._watched.add(key)
        return True

    def record(self, module: nn.Module, input_from: tuple[nn.Module, nn.Module] | None = None) -> None:
        """Keep the input and output of every call of ``module``. ``input_from`` = (source, function): where the
        input is exactly function(the output of source's latest call), as an MLP's second layer reads its
        activation of the first one's output, the call keeps that recipe instead of the tensor (a fifth of what a
        ViT layer records), checked call by call."""
        if not self._first_time(module, "io"):
            return

        def recipe_for(inp: torch.Tensor) -> Callable[[], torch.Tensor] | None:
            source, function = input_from
            sources = self.calls.get(id(source))
            if not sources or sources[-1].output is None:
                return None
            source_output = sources[-1].output

            def recompute() -> torch.Tensor:
                with torch.no_grad():
                    return function(source_output)

            again = recompute()
            exact = again.shape == inp.shape and again.dtype == inp.dtype and torch.equal(again, inp)
            return recompute if exact else None

        def hook(mod, args, kwargs, output):
            out = output[0] if isinstance(output, (tuple, list)) else output
            inp = first_tensor(args, kwargs)
            kept = out.detach() if torch.is_tensor(out) else None
            recipe = None if inp is None or input_from is None else recipe_for(inp)
            self.calls[id(mod)].append(
                ModuleCall(None if inp is None or recipe is not None else inp.detach(), kept,
                           None if kept is None or kept.is_inference() else kept._version, recipe)
            )

        self._handles.append(module.register_forward_hook(hook, with_kwargs=True))

    def record_attention(self, module: nn.Module, extract: AttentionExtractor) -> None:
        """Keep the attention probabilities ``extract(output)`` of every call (and the graph tensor if asked)."""
        if not self._first_time(module, "attention"):
            return

        def hook(mod, args, output):
            probs = extract(output)
            if probs is None:
                raise RuntimeError(
                    f"{type(mod).__name__} returned no attention probabilities: the model still runs a fused "
                    "attention path. Load it with attn_implementation='eager'."
                )
            self.attention[id(mod)].append(AttentionCall(probs.detach(), probs if self.keep_gradients else None))

        self._handles.append(module.register_forward_hook(hook))

    def start_graph_at(self, module: nn.Module) -> None:
        """Make ``module``'s input a leaf that requires grad, so attention gradients exist even for
        frozen models, and the backward pass stops there instead of reaching the embeddings. The input of its
        first call (that leaf, or the tensor already in the graph) is kept in ``graph_inputs``.

        The tensor itself is made to require grad (undone on release), so that its other readers, residual paths
        that bypass ``module`` (XLM's layers), are in the graph too; an inference tensor or a parameter is replaced
        by a leaf."""

        def start(mod, value: torch.Tensor) -> torch.Tensor | None:
            if value.requires_grad:
                started = value
            elif value.is_inference() or isinstance(value, nn.Parameter):
                started = value.detach().requires_grad_()
            else:
                started = value.requires_grad_()
                self._lifted.append(value)
            self.graph_inputs.setdefault(id(mod), started)
            return None if started is value else started

        def pre_hook(mod, args, kwargs):
            return with_first_input(args, kwargs, lambda value: start(mod, value))

        self._handles.append(module.register_forward_pre_hook(pre_hook, with_kwargs=True))

    def forget(self, module: nn.Module, index: int = 0) -> None:
        """Let go of the tensors of one recorded call, once nothing will read them (their memory returns)."""
        self.calls[id(module)][index] = ModuleCall(None, None)

    def call(self, module: nn.Module, index: int = 0) -> ModuleCall:
        return self.calls[id(module)][index]

    def attention_call(self, module: nn.Module, index: int = 0) -> AttentionCall:
        return self.attention[id(module)][index]

    def release(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for value in self._lifted:
            value.requires_grad_(False)
        self._lifted.clear()

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, *exc) -> None:
        self.release()
