"""One path for every family: capture -> one forward -> at most one backward -> LRP where asked -> traces.

A family gives its attention :class:`Site` s (which stream's queries attend to which stream's keys, in the order
the model runs them) and, for each stream whose layers it declares in full, a
:class:`~toolkit.core.spec.ModelSpec` with the parts the LRP rules read. A task gives the forward: a function
that runs the stock model and returns (outputs, one objective per sample). Which relevance a method can give for
a pair of streams follows from its declared ``reads`` and from the sites alone (:func:`route`); nothing here, in
the tasks or in the methods tests a method's or a family's name.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
import torch.nn as nn

from .capture import AttentionExtractor, Recorder
from .explicit_attention import explicit_attention
from .lrp import working
from .propagation import lrp_through_layers
from .rerun import rerun_from
from .spec import ModelSpec
from .trace import Network, Trace


@dataclass
class Site:
    """One attention module: queries from stream ``query``, keys from ``key`` (equal for self-attention).

    ``call`` picks the call of a module that runs several times (LXMERT's co-attention runs once per direction);
    ``together`` marks a site that reads the same inputs as the one before it (both of LXMERT's directions), so
    that neither's relevance update may see the other's."""

    module: nn.Module
    extract: AttentionExtractor
    query: str
    key: str
    call: int = 0
    together: bool = False

    @property
    def is_self(self) -> bool:
        return self.query == self.key


def sites_of(spec: ModelSpec, stream: str) -> list[Site]:
    """The self-attention sites of a declared stack of layers."""
    return [Site(layer.attention, layer.extract_probs, stream, stream, layer.call) for layer in spec.layers]


@dataclass
class LRPStart:
    """Where LRP starts in a stream: the relevance at the output of the spec's last head module (B, D) and the
    read-out weights (B, N) of the token rows the head reads; ``lowest`` the lowest layer whose attention
    relevance is needed."""

    relevance: torch.Tensor
    readout: torch.Tensor | None  # None: ``relevance`` is already that of the last layer's output tokens (B, N, D)
    lowest: int = 0


@dataclass
class Pass:
    """What one forward (and backward, and LRP pass) left: per-site probabilities and gradients, the task's outputs
    and objective, and per declared stream the LRP relevance of its attention maps and of its first layer's input
    (``first_layer`` (B, N, D); ``input_relevance`` per token, which a task may map further, e.g. to pixels).
    ``input_gradients``: (value, gradient) at each start of the graph, by module (the LRP rules' methods);
    ``starts``: per stream, the modules whose inputs start its graph, outermost first (pixels, then the first
    layer); ``rerun``: per stream, the task's forward from other inputs of the stream's first layer (the path
    methods); ``targets`` the outputs they explain (B,)."""

    sites: list[Site]
    outputs: Any
    objective: torch.Tensor
    probs: list[torch.Tensor]
    grads: list[torch.Tensor] | None = None
    recorder: Recorder | None = None
    attention_relevance: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    first_layer: dict[str, torch.Tensor] = field(default_factory=dict)
    input_relevance: dict[str, torch.Tensor] = field(default_factory=dict)
    input_gradients: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    starts: dict[str, list[nn.Module]] = field(default_factory=dict)
    targets: torch.Tensor | None = None
    rerun: dict[str, Callable[[torch.Tensor], torch.Tensor]] = field(default_factory=dict)


@contextlib.contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Every parameter's ``requires_grad`` off inside the block, each restored on exit: a backward taken only to
    activations then saves no input of a linear layer for its weight's gradient (less memory, less work)."""
    previous = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in previous:
            p.requires_grad_(False)
        yield
    finally:
        for p, requires in previous:
            p.requires_grad_(requires)


def _graph_starts(sites: list[Site], streams: dict[str, ModelSpec]) -> bool:
    """Whether every stream a site reads declares its first layer, where the gradient's graph then starts."""
    return bool(streams) and all(site.query in streams and site.key in streams for site in sites)


def takes_backward(method) -> bool:
    """Whether a method needs the backward pass: attention gradients, or input x gradient under LRP rules."""
    return method.needs_gradients or method.rules is not None


def run_pass(model: nn.Module, sites: list[Site], forward: Callable[[], tuple[Any, torch.Tensor]], method, *,
             streams: dict[str, ModelSpec] | None = None, tokens: dict[str, int] | None = None,
             lrp: Callable[["Pass"], dict[str, LRPStart]] | None = None, record: list[nn.Module] = (),
             inputs: dict[str, list[nn.Module]] | None = None, rerun: Callable[[int], torch.Tensor] | None = None,
             cross: list[ModelSpec] = ()) -> Pass:
    """Hook every site, run ``forward()`` -> (outputs, objective (B,)) once, and take one backward pass from the
    objective's sum where the method needs it: to every attention map (``needs_gradients``), and under the method's
    LRP rules (``rules``, applied for the pass and undone after) to every start of the graph.

    ``streams`` / ``tokens``: the declared stacks and their token counts, whose captures are checked with messages
    that name the declaration. ``lrp(pass)`` -> the starts of the streams the CVPR 2021 LRP runs through (their specs
    record what the rules read); ``record``: further modules whose calls the task reads afterwards (``pass.recorder``);
    ``inputs``: per stream, modules before its first layer where the rules' graph starts too (the pixels' patch
    embedding); ``rerun(R)``: the task's outputs (R*B, C) for its inputs repeated R times, which the path methods
    run again with other inputs of a stream's first layer; ``cross``: the projections of cross-attention (one
    stack per stream that attends to another), where the LRP rules apply too. Hooks are released and the attention implementation restored on exit, also when something raised. Where the graph starts at declared
    layers, the parameters do not require gradients during the pass (restored after).
    """
    streams, tokens = streams or {}, tokens or {}
    lrp_streams = streams if lrp is not None else {}
    starts = {name: [*(inputs or {}).get(name, []), spec.layers[0].block] if method.rules is not None
              else [spec.layers[0].block] for name, spec in streams.items()}
    rules = (method.rules.applied(model, *streams.values(), *cross) if method.rules is not None
             else contextlib.nullcontext())
    # Frozen parameters start the graph at the declared first layers' inputs, which is all a backward pass reads.
    frozen = (frozen_parameters(model) if takes_backward(method) and _graph_starts(sites, streams)
              else contextlib.nullcontext())
    with explicit_attention(model), Recorder(keep_gradients=method.needs_gradients) as rec, rules, frozen:
        for site in sites:
            rec.record_attention(site.module, site.extract)
        for spec in lrp_streams.values():
            for layer in spec.layers:
                layer.record(rec)
            for module in spec.head:
                rec.record(module)
        for module in record:
            rec.record(module)
        if takes_backward(method):
            for modules in starts.values():
                for module in modules:
                    rec.start_graph_at(module)
        if method.reruns_model:
            for modules in starts.values():
                rec.record(modules[-1])
        with torch.set_grad_enabled(takes_backward(method)):  # also under a caller's no_grad()
            outputs, objective = forward()
            for name, spec in streams.items():
                if name in tokens:
                    spec.attention_calls(rec, tokens[name])  # a wrong declaration is named before anything reads it
            calls = [rec.attention_call(site.module, site.call) for site in sites]
            result = Pass(sites, outputs, objective, [c.probs for c in calls], recorder=rec, starts=starts)
            if takes_backward(method):
                _backward(method, rec, objective, calls, result)
    if method.reruns_model and rerun is not None:
        result.rerun = {name: rerun_from(modules[-1], rerun, objective.shape[0]) for name, modules in starts.items()}
    if lrp is not None:
        for name, start in lrp(result).items():
            indices = [i for i, site in enumerate(sites) if site.query == name and site.is_self]
            grads = [None] * len(indices) if result.grads is None else [result.grads[i] for i in indices]
            first, result.attention_relevance[name] = lrp_through_layers(
                streams[name], rec, [working(result.probs[i]) for i in indices], start.relevance, start.readout,
                start.lowest, method.propagation_rules,
                keep=lambda layer, relevance: method.kept_attention_relevance(relevance, grads[layer]))
            result.first_layer[name], result.input_relevance[name] = first, first.sum(-1)
    return result


def _backward(method, rec: Recorder, objective: torch.Tensor, calls: list, result: Pass) -> None:
    """One backward pass from the objective's sum: to the attention maps and, under LRP rules, the graph's starts
    (a map or start the objective does not reach gets a zero gradient)."""
    live = [call.live for call in calls] if method.needs_gradients else []
    starts = list(rec.graph_inputs.items()) if method.rules is not None else []
    grads = torch.autograd.grad(objective.sum(), live + [value for _, value in starts], allow_unused=True)
    if method.needs_gradients:
        result.grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, result.probs)]
    result.input_gradients = {key: (value.detach(), torch.zeros_like(value) if g is None else g)
                              for (key, value), g in zip(starts, grads[len(live):])}


# --- which relevance a method gives for a pair of streams ------------------------------------------------------
def _feeds(sites: list[Site], query: str) -> bool:
    """Whether another stream reaches ``query``'s tokens through cross-attention."""
    return any(site.query == query and not site.is_self for site in sites)


def route(reads: str, sites: list[Site], query: str, key: str, linked: bool = False) -> str | None:
    """How a method that ``reads`` "last" (the last attention map), "stream" (a stack of self-attention maps),
    "network" (every site, by the bi-modal rules) or "input" (input x gradient) gives the relevance of ``query``'s
    tokens to ``key``'s:

    - "network": the bi-modal rules over every site (other streams feed ``query``, or ``key`` is another stream);
    - "stream": within ``query``'s own self-attention stack (``key`` is ``query``);
    - "last": the last attention map from ``query`` to ``key``;
    - "linked": within ``query``'s stack, read at the positions where ``key``'s tokens were copied in (GIT);
    - "input": the gradient of the read-out at ``key``'s input, times that input;
    - None: the method has no rule for it.
    """
    if reads == "input":  # the gradient of the whole pass at the key stream's input: every route leads there
        return "input"
    crossing = key != query or _feeds(sites, query)
    if reads == "network":
        return "network" if crossing or linked else "stream"
    if reads == "last":
        if any(site.query == query and site.key == key for site in sites):
            return "last"
        return "linked" if linked else None
    if _feeds(sites, query):
        return None
    return "stream" if key == query else ("linked" if linked else None)


@dataclass
class Reading:
    """What a task asks of a pass: the relevance of ``query``'s rows (``readout`` (B, N_query) weights) to ``key``'s
    tokens (``content`` (B, N_key) marks the ones an explanation is about; ``tokens`` (B, N_query) the real tokens of
    the query stream). ``links``: site index -> (target, source, positions (B, K)) copies of ``source``'s outputs
    into ``target`` before that site (GIT); ``positions``: where ``key``'s tokens sit in ``query``'s sequence;
    ``key_tokens`` (B, N_key): the real tokens of another stream ``key`` read at its input, where it is padded
    (LXMERT's regions; None: all are real). ``first_layer``: input x gradient is read at the key stream's first
    layer even where its pixels start the rules' graph too (ViLT's question tokens share a stream with its patches).
    """

    query: str
    key: str
    readout: torch.Tensor
    tokens: torch.Tensor
    content: torch.Tensor
    sizes: dict[str, int] = field(default_factory=dict)
    links: dict[int, tuple[str, str, torch.Tensor]] = field(default_factory=dict)
    positions: torch.Tensor | None = None
    stream_content: torch.Tensor | None = None
    key_tokens: torch.Tensor | None = None
    first_layer: bool = False


def attribute(method, result: Pass, reading: Reading) -> torch.Tensor:
    """The method's relevance (B, N_key) for a reading of a pass, by the route its declared ``reads`` takes."""
    how = route(method.reads, result.sites, reading.query, reading.key, reading.positions is not None)
    if how is None:
        raise AssertionError(f"{method.name} was not refused before the pass for {reading.query} -> {reading.key}")
    query_sites = [i for i, site in enumerate(result.sites) if site.query == reading.query]
    tokens = reading.tokens
    if how == "input":
        indices, content = [], reading.content
        if reading.key != reading.query:  # read at another stream's input: its own real tokens
            tokens = (torch.ones_like(reading.content, dtype=torch.bool) if reading.key_tokens is None
                      else reading.key_tokens)
    elif how == "last":
        last = max(i for i in query_sites if result.sites[i].key == reading.key)
        indices, content = [last], reading.content
    else:
        indices = [i for i in query_sites if result.sites[i].is_self]
        content = reading.stream_content if how == "linked" else reading.content
    grads = None if result.grads is None else [result.grads[i].float() for i in indices]
    starts = result.starts.get(reading.key, [])  # input x gradient and paths are read at the key stream's input
    if reading.first_layer:
        starts = starts[-1:]
    trace = Trace(probs=[result.probs[i].float() for i in indices], grads=grads, readout=reading.readout,
                  token_mask=tokens, content_mask=content,
                  attention_relevance=result.attention_relevance.get(reading.query),
                  input_relevance=result.input_relevance.get(reading.query),
                  input_gradients=[result.input_gradients[id(module)] for module in starts
                                   if id(module) in result.input_gradients] or None)
    if method.reruns_model and starts:
        trace.targets, trace.rerun = result.targets, result.rerun[reading.key]
        trace.layer_input = result.recorder.call(starts[-1]).input
    if how == "network":
        trace.network = Network(sites=[(s.query, s.key, s.together) for s in result.sites],
                                probs=[p.float() for p in result.probs],
                                grads=None if result.grads is None else [g.float() for g in result.grads],
                                sizes=reading.sizes, links=reading.links, query=reading.query, key=reading.key)
    relevance = method.attribute(trace)
    if how == "linked":
        relevance = torch.gather(relevance, 1, reading.positions)
    return relevance
