"""The public attention views: head, model, neuron and image views of stock Hugging Face / timm models."""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from ..errors import InputError
from ..images import processor_normalisation, to_rgb
from . import html
from .data import AttentionStack, ImageAttention, check_image_model, image_attention, text_attention
from .payload import DIVERGING_LUT, image_payload, links_stack, neuron_stack
from .static import ROW, ExportError, head_svg, image_svg, model_svg, neuron_svg, save_png

SENTENCE_FILTERS = ("all", "A->A", "B->B", "A->B", "B->A")
MAX_FRAME_HEIGHT = 900  # px; taller views scroll inside their frame


class View:
    """An attention view: a standalone HTML page for browsers and notebooks, SVG or PNG for papers.

    ``html`` is one self-contained document (inlined script, style and data; no CDN, no require.js).
    Jupyter shows the view itself (``_repr_html_``). Gradio's ``gr.HTML`` drops <script> tags, so give it
    ``view.iframe_html()``; Streamlit: ``components.html(view.html, height=view.height)``.
    The view opens at ``state`` (layer, heads, token...), and the static export draws that state:
    ``view.at(layer=3).save("fig.png")``.
    """

    def __init__(self, title: str, payload: dict, state: dict, height: int, check_state: Callable[[dict], dict], draw_svg: Callable[[dict], str]):
        self.title = title
        self.state = check_state(state)
        self.height = min(height, MAX_FRAME_HEIGHT)
        self._payload = payload
        self._check_state = check_state
        self._draw_svg = draw_svg

    def at(self, **changes) -> "View":
        """The same view opened at another state, e.g. ``view.at(layer=2, heads=[0, 3])``."""
        unknown = set(changes) - set(self.state)
        if unknown:
            raise InputError(f"{self.title} has no setting {sorted(unknown)}; it has {sorted(self.state)}.")
        return View(self.title, self._payload, {**self.state, **changes}, self.height, self._check_state, self._draw_svg)

    @property
    def html(self) -> str:
        return html.document(self.title, {**self._payload, "state": self.state})

    @property
    def svg(self) -> str:
        return self._draw_svg(self.state)

    def iframe_html(self, height: int | None = None) -> str:
        """The page in an iframe ``srcdoc``: for Jupyter, Gradio's ``gr.HTML``, or any HTML host."""
        return html.iframe(self.html, height or self.height)

    def _repr_html_(self) -> str:
        return self.iframe_html()

    def save(self, path: str | Path, *, scale: float = 2.0) -> Path:
        """Write ``.html`` (interactive), ``.svg`` or ``.png`` (static; PNG needs Chromium, see ``toolkit.views.static``)."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix in (".html", ".htm"):
            path.write_text(self.html, encoding="utf-8")
        elif suffix == ".svg":
            path.write_text(self.svg, encoding="utf-8")
        elif suffix == ".png":
            save_png(self.svg, path, scale)
        else:
            raise ExportError(f"Cannot save a view as {suffix or 'a file without suffix'!r}: use .html, .svg or .png.")
        return path


def _index(value, size: int, what: str) -> int:
    """``value`` as an index into ``size`` items (negative counts from the end), or a clear error."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not -size <= value < size:
        raise InputError(f"Unknown {what} {value!r}: there are {size} ({what} 0 to {size - 1}, or negative from the end).")
    return int(value) % size


def _stack(stacks: list[AttentionStack], name: str | None) -> AttentionStack:
    if name is None:
        return stacks[0]
    for stack in stacks:
        if stack.name == name:
            return stack
    raise InputError(f"Unknown attention stack {name!r}; this model has {[s.name for s in stacks]}.")


def _check_min_weight(min_weight: float) -> None:
    if not 0.0 <= min_weight < 1.0:
        raise InputError(f"min_weight must be in [0, 1), got {min_weight!r}.")


def _rows_height(rows: int, chrome: int) -> int:
    return chrome + rows * ROW


def _check_head_state(stacks: list[AttentionStack], state: dict) -> dict:
    stack = _stack(stacks, state["stack"])
    layers, heads, n_queries, _ = stack.weights.shape
    selected = range(heads) if state["heads"] is None else state["heads"]
    selected = sorted({_index(head, heads, "head") for head in selected})
    if not selected:
        raise InputError("Select at least one head (heads=None selects all).")
    if state["sentence_filter"] not in SENTENCE_FILTERS:
        raise InputError(f"Unknown sentence_filter {state['sentence_filter']!r}; use one of {SENTENCE_FILTERS}.")
    if state["sentence_filter"] != "all" and stack.query_b_start is None:
        raise InputError(f"sentence_filter={state['sentence_filter']!r} needs a sentence pair: pass text_b.")
    token = None if state["token"] is None else _index(state["token"], n_queries, "token")
    return {
        "stack": stack.name,
        "layer": _index(state["layer"], layers, "layer"),
        "heads": selected,
        "sentence_filter": state["sentence_filter"],
        "token": token,
    }


def _draw_head(stacks: list[AttentionStack], min_weight: float, state: dict) -> str:
    stack = _stack(stacks, state["stack"])
    return head_svg(stack, state["layer"], state["heads"], state["sentence_filter"], state["token"], min_weight)


def head_view(
    model: nn.Module,
    tokenizer,
    text_a: str,
    text_b: str | None = None,
    *,
    stack: str | None = None,
    layer: int = 0,
    heads: list[int] | None = None,
    sentence_filter: str = "all",
    token: int | None = None,
    min_weight: float = 0.01,
) -> View:
    """One layer at a time: lines from each token to the tokens it attends to, one colour per head.

    ``text_b`` is sentence B of a pair (encoders, decoders) or the decoder's text (encoder-decoders,
    which then show ``stack`` "encoder", "decoder" or "cross"). ``sentence_filter`` is "all", "A->A",
    "B->B", "A->B" or "B->A"; ``token`` isolates one query token's lines. Links weaker than
    ``min_weight`` are not drawn (1% opacity is invisible) so 512-token inputs stay light. A model whose
    forward returns no attention but wraps a Hugging Face model (the zero-shot classifier) is shown through it.
    """
    _check_min_weight(min_weight)
    stacks = text_attention(model, tokenizer, text_a, text_b)
    payload = {"view": "head", "stacks": [links_stack(s, min_weight) for s in stacks]}
    state = {"stack": stack, "layer": layer, "heads": heads, "sentence_filter": sentence_filter, "token": token}
    rows = max(len(s.query_tokens) for s in stacks)
    return View("Head view", payload, state, _rows_height(rows, 130), partial(_check_head_state, stacks), partial(_draw_head, stacks, min_weight))


def _check_model_state(stacks: list[AttentionStack], state: dict) -> dict:
    return {"stack": _stack(stacks, state["stack"]).name}


def model_view(model: nn.Module, tokenizer, text_a: str, text_b: str | None = None, *, stack: str | None = None, min_weight: float = 0.01) -> View:
    """A thumbnail per layer × head; clicking one enlarges it with its tokens. Arguments as in ``head_view``."""
    _check_min_weight(min_weight)
    stacks = text_attention(model, tokenizer, text_a, text_b)
    payload = {"view": "model", "stacks": [links_stack(s, min_weight) for s in stacks]}
    layers = max(s.weights.shape[0] for s in stacks)
    return View(
        "Model view",
        payload,
        {"stack": stack},
        110 + layers * 92,
        partial(_check_model_state, stacks),
        lambda state: model_svg(_stack(stacks, state["stack"]), min_weight),
    )


def _check_neuron_state(stacks: list[AttentionStack], state: dict) -> dict:
    stack = _stack(stacks, state["stack"])
    layers, heads, n_queries, _ = stack.weights.shape
    return {
        "stack": stack.name,
        "layer": _index(state["layer"], layers, "layer"),
        "head": _index(state["head"], heads, "head"),
        "token": _index(state["token"], n_queries, "token"),
    }


def neuron_view(
    model: nn.Module,
    tokenizer,
    text_a: str,
    text_b: str | None = None,
    *,
    stack: str | None = None,
    layer: int = 0,
    head: int = 0,
    token: int = 0,
) -> View:
    """For a layer, head and query token: the query and key vectors, their element-wise product and the scores.

    The vectors are captured with hooks on the stock query/key projections (those of the model's family
    declaration, toolkit/families/families.yaml; GPT-2, T5, BART: ``toolkit.views.data.QUERY_KEY_LAYOUTS``) and
    checked to reproduce the model's own attention.
    """
    stacks = text_attention(model, tokenizer, text_a, text_b, with_neurons=True)
    payload = {"view": "neuron", "stacks": [neuron_stack(s) for s in stacks], "diverging": DIVERGING_LUT.tolist()}
    state = {"stack": stack, "layer": layer, "head": head, "token": token}
    rows = max(len(s.key_tokens) for s in stacks)
    return View(
        "Neuron view",
        payload,
        state,
        _rows_height(rows, 170),
        partial(_check_neuron_state, stacks),
        lambda st: neuron_svg(_stack(stacks, st["stack"]), st["layer"], st["head"], st["token"]),
    )


def _pixel_values(image, processor) -> torch.Tensor:
    """[1, 3, H, W] model input from an image and its processor (HF image processor or any callable); the image
    (a PIL image of any mode, an array, a tensor or a path) is read as the explainer reads it, in RGB."""
    processor = getattr(processor, "image_processor", processor)  # a processor of an image-text model
    if processor is None:
        pixel_values = image
    elif not callable(processor) or hasattr(processor, "convert_ids_to_tokens"):
        raise InputError(f"processor must be the model's image processor or transform; got a "
                         f"{type(processor).__name__}.")
    elif hasattr(processor, "preprocess"):  # Hugging Face image processors
        pixel_values = processor(images=to_rgb(image), return_tensors="pt")["pixel_values"]
    else:  # timm / torchvision transforms
        pixel_values = processor(to_rgb(image))
    if isinstance(pixel_values, torch.Tensor) and pixel_values.ndim == 3:
        pixel_values = pixel_values.unsqueeze(0)
    if not isinstance(pixel_values, torch.Tensor):
        raise InputError(f"Pass a processor for a {type(image).__name__} image, or a preprocessed tensor [3, H, W] with processor=None.")
    return pixel_values


def _check_image_state(attention: ImageAttention, state: dict) -> dict:
    layers, heads, n_tokens, _ = attention.weights.shape
    query = state["query"]
    if isinstance(query, tuple):
        rows, columns = attention.grid
        row, column = (_index(query[0], rows, "patch row"), _index(query[1], columns, "patch column"))
        query = attention.prefix_tokens + row * columns + column
    head = "mean" if state["head"] == "mean" else _index(state["head"], heads, "head")
    return {"layer": _index(state["layer"], layers, "layer"), "head": head, "query": _index(query, n_tokens, "query token")}


def image_attention_view(model: nn.Module, image, processor=None, *, layer: int = -1, head: int | str = "mean", query: int | tuple[int, int] = 0) -> View:
    """Attention from one token ([CLS] or a patch) over the image, as a heatmap on the image.

    ``image`` goes through ``processor`` (a Hugging Face image processor or a timm/torchvision
    transform); with ``processor=None`` it must already be the model's input tensor. The image shown is
    that input (its normalisation undone with the processor's mean and std, in grey), so the patches line up
    even when the processor crops. Attention is coloured from zero to the row's strongest patch. ``head`` is an
    index or "mean"; ``query`` is a token index (0 is [CLS]) or a patch as (row, column). Clicking a patch in
    the page makes it the query; the thumbnails below show every layer and head for that query.
    """
    check_image_model(model)
    attention = image_attention(model, _pixel_values(image, processor), processor_normalisation(processor, model))
    payload = {"view": "image", **image_payload(attention)}
    state = {"layer": layer, "head": head, "query": query}
    height = 430 + attention.weights.shape[0] * 70
    return View(
        "Image attention view",
        payload,
        state,
        height,
        partial(_check_image_state, attention),
        lambda st: image_svg(attention, st["layer"], st["head"], st["query"]),
    )
