"""Run a stock model once and collect what the attention views draw.

Text attention comes from the model's own ``output_attentions``. Image attention is captured where the
model's family declaration (toolkit/families) says, as the explainer captures it; undeclared models give it
through ``output_attentions``, or, for timm, a hook on the attention dropout, which receives the softmax
output. Query/key vectors for the neuron view come from forward hooks on the stock query/key projections,
located by the model's family declaration (or, for decoders and encoder-decoders, a small table).
Nothing here copies model code.
"""
from __future__ import annotations

import contextlib
import inspect
import re
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.nn as nn

from .. import families
from ..core.capture import Recorder
from ..core.explicit_attention import explicit_attention
from ..errors import InputError, UnsupportedModelError
from ..text import no_length_notice, require_text


@dataclass(frozen=True)
class NeuronData:
    """Query/key vectors of one attention stack and what turns them into scores (the neuron view)."""

    queries: np.ndarray  # [layer, head, query, head_dim]
    keys: np.ndarray  # [layer, head, key, head_dim]
    scales: np.ndarray  # [layer]: each attention module's own scaling of q·k
    causal: np.ndarray  # [layer] bool: whether the module hides later keys
    position_bias: np.ndarray | None  # [head, query, key], added at every layer (T5), or None

    @property
    def scores(self) -> np.ndarray:
        """[layer, head, query, key]: q·k × scale + position bias, -inf where the causal mask hides the key."""
        scores = self.queries @ self.keys.swapaxes(-1, -2) * self.scales[:, None, None, None]
        if self.position_bias is not None:
            scores = scores + self.position_bias
        future = np.triu(np.ones(scores.shape[-2:], dtype=bool), 1)
        return np.where(self.causal[:, None, None, None] & future, -np.inf, scores).astype(np.float32)


@dataclass(frozen=True)
class AttentionStack:
    """The attention weights of one stack (BERT's layers, T5's cross-attention...) and the tokens on each side."""

    name: str
    label: str
    query_tokens: list[str]
    key_tokens: list[str]
    weights: np.ndarray  # [layer, head, query, key]; each row sums to 1
    query_b_start: int | None = None  # first token of sentence B, for sentence-pair inputs
    key_b_start: int | None = None
    neurons: NeuronData | None = None


@dataclass(frozen=True)
class ImageAttention:
    """Attention of a Vision Transformer: prefix tokens ([CLS]...) first, then patches row by row."""

    weights: np.ndarray  # [layer, head, token, token]
    grid: tuple[int, int]  # patch rows, patch columns
    prefix_tokens: int
    pixels: np.ndarray  # uint8 [height, width, 3]: the model's input with its normalisation undone


# (model output field, stack name, label, side of the queries, side of the keys)
_OUTPUT_STACKS = (
    ("attentions", "self", "Self-attention", "input", "input"),
    ("encoder_attentions", "encoder", "Encoder self-attention", "input", "input"),
    ("decoder_attentions", "decoder", "Decoder self-attention", "target", "target"),
    ("cross_attentions", "cross", "Cross-attention (decoder → encoder)", "target", "input"),
)


@dataclass(frozen=True)
class QueryKeyLayout:
    """Where a decoder or encoder-decoder family keeps its attention modules and their query/key projections
    (classifier families declare theirs in toolkit/families/families.yaml)."""

    stacks: dict[str, str]  # stack name -> pattern of attention-module names; group 1 is the layer
    query: str  # attribute of the attention module holding the query projection
    key: str  # key projection; the same attribute when q, k, v come out of one fused projection


QUERY_KEY_LAYOUTS: dict[str, QueryKeyLayout] = {  # encoder-decoder text models, which no family declares
    "t5": QueryKeyLayout(
        {
            "encoder": r"encoder\.block\.(\d+)\.layer\.0\.SelfAttention",
            "decoder": r"decoder\.block\.(\d+)\.layer\.0\.SelfAttention",
            "cross": r"decoder\.block\.(\d+)\.layer\.1\.EncDecAttention",
        },
        "q",
        "k",
    ),
    "bart": QueryKeyLayout(
        {
            "encoder": r"encoder\.layers\.(\d+)\.self_attn",
            "decoder": r"decoder\.layers\.(\d+)\.self_attn",
            "cross": r"decoder\.layers\.(\d+)\.encoder_attn",
        },
        "q_proj",
        "k_proj",
    ),
}


@contextlib.contextmanager
def _inference(model: nn.Module) -> Iterator[None]:
    """Eval mode (attention dropout would corrupt the weights), eager attention, no autograd; all restored."""
    was_training = model.training
    model.eval()
    try:
        with explicit_attention(model), torch.no_grad():
            yield
    finally:
        model.train(was_training)


class _QueryKeyCapture:
    """Forward hooks on the stock query/key projections of every attention module; removed on exit, always."""

    def __init__(self, model: nn.Module):
        self.parts = _query_key_parts(model)  # stack -> per layer (attention module, {role: projection})
        self.attention_modules = {stack: [module for module, _ in layers] for stack, layers in self.parts.items()}
        self.projections: dict[tuple[str, int, str], torch.Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> "_QueryKeyCapture":
        try:
            for stack, layers in self.parts.items():
                for layer, (_, projections) in enumerate(layers):
                    for role, projection in projections.items():
                        self._handles.append(projection.register_forward_hook(self._recorder(stack, layer, role)))
        except BaseException:
            self._remove_hooks()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self._remove_hooks()

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _recorder(self, stack: str, layer: int, role: str):
        def record(module, inputs, output):
            self.projections[(stack, layer, role)] = output[0].detach()

        return record

    def _vectors(self, stack: str, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Query and key projections [tokens, heads × head_dim] of one layer."""
        if (stack, layer, "fused") in self.projections:  # one projection gives [q | k | v]
            query, key, _ = self.projections[(stack, layer, "fused")].chunk(3, dim=-1)
            return query, key
        return self.projections[(stack, layer, "query")], self.projections[(stack, layer, "key")]

    @torch.no_grad()
    def neuron_data(self, stack: str, weights: np.ndarray) -> NeuronData:
        """Split the captured projections into heads and score them exactly as the stock module does."""
        modules = self.attention_modules.get(stack, [])
        n_layers, n_heads, n_queries, n_keys = weights.shape
        if len(modules) != n_layers:
            raise UnsupportedModelError(
                f"Found {len(modules)} attention modules for the {stack!r} stack but the model returned "
                f"{n_layers} layers of attention: the query/key layout does not fit this model."
            )
        queries, keys = [], []
        for layer in range(n_layers):
            query, key = self._vectors(stack, layer)
            queries.append(query.float().reshape(n_queries, n_heads, -1).transpose(0, 1))
            keys.append(key.float().reshape(n_keys, n_heads, -1).transpose(0, 1))
        data = NeuronData(
            queries=torch.stack(queries).cpu().numpy(),
            keys=torch.stack(keys).cpu().numpy(),
            scales=np.array([getattr(m, "scaling", None) or (queries[0].shape[-1] ** -0.5) for m in modules],
                            dtype=np.float32),
            causal=np.array([getattr(m, "is_causal", False) for m in modules]),
            position_bias=_position_bias(modules, n_queries, n_keys),
        )
        reproduced = torch.softmax(torch.from_numpy(data.scores), dim=-1).numpy()
        if not np.allclose(reproduced, weights, atol=1e-4):
            raise UnsupportedModelError(
                f"Queries and keys captured from the {stack!r} stack do not reproduce the model's attention "
                "(rotary embeddings or another change after the projections?): the neuron view would mislead."
            )
        return data


def _query_key_parts(model: nn.Module) -> dict[str, list[tuple[nn.Module, dict[str, nn.Module]]]]:
    """Per stack, each layer's attention module and its query/key projections: from the model's family
    declaration, else from QUERY_KEY_LAYOUTS by model type."""
    layout = families.layout_for(model)
    declared = layout.query_key() if layout is not None and layout.family.inputs in ("text", "text-generation") else None
    if declared is not None:
        return {"self": declared}
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    table = QUERY_KEY_LAYOUTS.get(model_type)
    if table is None:
        declared = ", ".join(family.name for family in families.all_families()
                             if family.inputs in ("text", "text-generation"))
        raise UnsupportedModelError(
            f"The neuron view knows where queries and keys live for the text families ({declared}) and the model "
            f"types {', '.join(sorted(QUERY_KEY_LAYOUTS))}, not for model type {model_type!r}. Head and model views "
            "work for it."
        )
    roles = {"fused": table.query} if table.query == table.key else {"query": table.query, "key": table.key}
    return {stack: [(module, {role: getattr(module, attribute) for role, attribute in roles.items()})
                    for module in _modules_by_layer(model, pattern)] for stack, pattern in table.stacks.items()}


def _modules_by_layer(model: nn.Module, pattern: str) -> list[nn.Module]:
    """Attention modules whose name ends with ``pattern``, ordered by the layer index it captures."""
    matcher = re.compile(r"(?:^|\.)" + pattern + "$")
    found = {}
    for name, module in model.named_modules():
        match = matcher.search(name)
        if match:
            found[int(match.group(1))] = module
    return [found[layer] for layer in sorted(found)]


def _position_bias(modules: list[nn.Module], n_queries: int, n_keys: int) -> np.ndarray | None:
    """T5-style relative position bias [head, query, key], computed by the stock module; None where there is none."""
    for module in modules:
        if getattr(module, "has_relative_attention_bias", False):
            return module.compute_bias(n_queries, n_keys)[0].float().cpu().numpy()
    return None


def _device_of(model: nn.Module) -> torch.device:
    """Where the model's weights are (the demo runs models on the GPU when there is one); the CPU without weights."""
    weight = next(model.parameters(), None)
    return torch.device("cpu") if weight is None else weight.device


def _check_length(model: nn.Module, n_tokens: int) -> None:
    config = getattr(model, "config", None)
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if isinstance(limit, int) and n_tokens > limit:
        raise InputError(f"The text is {n_tokens} tokens long; this model takes at most {limit}.")


def _sentence_b_start(encoding) -> int:
    """Index of the first token of sentence B in a sentence-pair encoding."""
    try:
        sequence_ids = encoding.sequence_ids(0)
    except ValueError as error:  # slow (Python) tokenizers do not track which sentence a token came from
        raise InputError("Sentence pairs need a fast tokenizer, which marks where sentence B starts.") from error
    return sequence_ids.index(1)


def _takes_output_attentions(module: nn.Module) -> bool:
    parameters = inspect.signature(module.forward).parameters.values()
    return any(p.name == "output_attentions" or p.kind is p.VAR_KEYWORD for p in parameters)


def _attention_model(model: nn.Module) -> nn.Module:
    """``model`` when its forward can return attention weights; else the one Hugging Face model it wraps (the
    encoder of toolkit.zero_shot.ZeroShotTextClassifier), whose attention is the attention ``model`` computes with."""
    if _takes_output_attentions(model):
        return model
    wrapped = [child for child in model.children() if hasattr(child, "config") and _takes_output_attentions(child)]
    if len(wrapped) != 1:
        raise UnsupportedModelError(
            f"{type(model).__name__}'s forward takes no output_attentions, so it cannot return attention weights, "
            "and it wraps no single Hugging Face model that can: pass the transformer inside it instead.")
    return wrapped[0]


def _text_model(model: nn.Module) -> nn.Module:
    """The model whose attention a text view shows (see :func:`_attention_model`); image and image-text models are
    refused, pointing to their text tower or to the image view."""
    image_model = bool(_timm_attention_modules(model)) or getattr(model, "main_input_name", None) == "pixel_values"
    if image_model or "pixel_values" in inspect.signature(model.forward).parameters:
        if image_model:
            hint = "image_attention_view shows the attention of image models"
        elif isinstance(getattr(model, "text_model", None), nn.Module):
            hint = "pass its text tower: head_view(model.text_model, tokenizer, text)"
        else:
            hint = "pass a text model"
        raise UnsupportedModelError(f"{type(model).__name__} reads images, and the head, model and neuron views show "
                                    f"the attention over a text alone: {hint}.")
    return _attention_model(model)


def _text_tokenizer(tokenizer):
    """The tokenizer itself, also when a processor that holds one is given."""
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
    if not callable(tokenizer) or not hasattr(tokenizer, "convert_ids_to_tokens"):
        raise InputError(f"The views need the model's tokenizer (AutoTokenizer.from_pretrained(name)); got "
                         f"{'None' if tokenizer is None else 'a ' + type(tokenizer).__name__}.")
    return tokenizer


def text_attention(model: nn.Module, tokenizer, text_a: str, text_b: str | None = None, *, with_neurons: bool = False) -> list[AttentionStack]:
    """Every attention stack of ``model`` on the text.

    Encoders and decoders read ``text_a`` (and the optional sentence pair ``text_b``); encoder-decoders
    read ``text_a`` in the encoder and ``text_b`` in the decoder, which is then required. A wrapper whose forward
    returns no attention (the zero-shot classifier) is shown through the Hugging Face model it wraps.
    """
    model = _text_model(model)
    tokenizer = _text_tokenizer(tokenizer)
    require_text(text_a, "text_a")
    if text_b is not None:
        require_text(text_b, "text_b")
    config = getattr(model, "config", None)
    if getattr(config, "is_encoder_decoder", False):
        if text_b is None:
            raise InputError("Encoder-decoder models need the decoder's text too: pass it as text_b.")
        with no_length_notice():
            source = tokenizer(text_a, return_tensors="pt")
            target = tokenizer(text_b, return_tensors="pt")
        inputs = {"input_ids": source["input_ids"], "attention_mask": source["attention_mask"], "decoder_input_ids": target["input_ids"]}
        sides = {"input": source["input_ids"][0], "target": target["input_ids"][0]}
        b_start = None
    else:
        with no_length_notice():
            encoding = tokenizer(text_a, text_b, return_tensors="pt")
        accepted = inspect.signature(model.forward).parameters
        inputs = {key: value for key, value in encoding.items() if key in accepted}
        sides = {"input": encoding["input_ids"][0]}
        b_start = None if text_b is None else _sentence_b_start(encoding)
    for ids in sides.values():
        _check_length(model, len(ids))
    tokens = {side: tokenizer.convert_ids_to_tokens(ids.tolist()) for side, ids in sides.items()}

    device = _device_of(model)
    inputs = {key: value.to(device) for key, value in inputs.items()}
    capture = _QueryKeyCapture(model) if with_neurons else contextlib.nullcontext()
    with _inference(model), capture:
        outputs = model(**inputs, output_attentions=True)

    stacks = []
    for field, name, label, query_side, key_side in _OUTPUT_STACKS:
        attentions = getattr(outputs, field, None)
        if not attentions:
            continue
        weights = torch.stack([layer[0] for layer in attentions]).float().cpu().numpy()
        stacks.append(
            AttentionStack(
                name=name,
                label=label,
                query_tokens=tokens[query_side],
                key_tokens=tokens[key_side],
                weights=weights,
                query_b_start=b_start,
                key_b_start=b_start,
                neurons=capture.neuron_data(name, weights) if with_neurons else None,
            )
        )
    if not stacks:
        raise UnsupportedModelError(f"{type(model).__name__} returned no attention weights with output_attentions=True.")
    return stacks


def _timm_attention_modules(model: nn.Module) -> list[nn.Module]:
    """timm attention blocks: their ``attn_drop`` receives the softmax output on the non-fused path."""
    return [m for m in model.modules() if isinstance(getattr(m, "fused_attn", None), bool) and isinstance(getattr(m, "attn_drop", None), nn.Module)]


def _patch_size(model: nn.Module) -> tuple[int, int]:
    size = getattr(getattr(model, "config", None), "patch_size", None)
    if size is None:
        size = getattr(getattr(model, "patch_embed", None), "patch_size", None)
    if size is None:
        raise UnsupportedModelError(f"{type(model).__name__} has no patch size (config.patch_size or patch_embed.patch_size): is it a Vision Transformer?")
    return (size, size) if isinstance(size, int) else tuple(size)


def _display_pixels(pixel_values: torch.Tensor, normalisation: tuple | None) -> np.ndarray:
    """The model's input as an 8-bit image: (x * std + mean) * 255 with the processor's ``normalisation`` (mean,
    std). Without it (a preprocessed tensor, no processor), one affine map for all channels together brings the
    values to 0..255: per-channel stretching would shift the image's colours and brightness."""
    image = pixel_values[0].detach().float().permute(1, 2, 0).cpu().numpy()
    if normalisation is not None:
        mean, std = (np.asarray(values, dtype=np.float32).reshape(-1)[:3] for values in normalisation)
        scaled = image * std + mean
    else:
        low, high = float(image.min()), float(image.max())
        scaled = (image - low) / max(high - low, 1e-6)
    return np.clip(scaled * 255 + 0.5, 0, 255).astype(np.uint8)


def check_image_model(model: nn.Module) -> None:
    """Refuse a model that is not a Vision Transformer (a timm ViT, or a Hugging Face model that reads
    pixel_values alone), pointing to the vision tower of an image-text model."""
    layout = families.layout_for(model)
    if (layout is not None and layout.family.inputs == "image") or _timm_attention_modules(model) \
            or getattr(model, "main_input_name", None) == "pixel_values":
        return
    towers = [name for name, child in model.named_children()
              if getattr(child, "main_input_name", None) == "pixel_values"]
    hint = (f" Pass its vision tower: image_attention_view(model.{towers[0]}, image, processor)." if towers
            else "")
    raise UnsupportedModelError(f"image_attention_view shows the attention of a Vision Transformer (Hugging Face "
                                f"ViT or DeiT, timm ViT); {type(model).__name__} is not one.{hint}")


def _declared_image_attention(layout: families.Layout, pixel_values: torch.Tensor) -> list[torch.Tensor]:
    """Each layer's attention, captured where the model's family declares it (as the explainer does)."""
    captures = layout.attention_modules()
    with Recorder() as recorder:
        for module, extract, _, _ in captures:
            recorder.record_attention(module, extract)
        with _inference(layout.model):
            layout.forward_pixels(pixel_values)
    return [recorder.attention_call(module, call).probs for module, _, call, _ in captures]


def _undeclared_image_attention(model: nn.Module, pixel_values: torch.Tensor) -> list[torch.Tensor]:
    """Each layer's attention of a model no family declares: timm's attention dropouts, else output_attentions."""
    timm_modules = _timm_attention_modules(model)
    captured: list[torch.Tensor] = []
    handles = [m.attn_drop.register_forward_hook(lambda _m, _i, output: captured.append(output)) for m in timm_modules]
    try:
        with _inference(model):
            if timm_modules:
                model(pixel_values)
            else:
                captured = list(getattr(model(pixel_values=pixel_values, output_attentions=True), "attentions", None) or [])
    finally:
        for handle in handles:
            handle.remove()
    return captured


def image_attention(model: nn.Module, pixel_values: torch.Tensor, normalisation: tuple | None = None) -> ImageAttention:
    """Attention of a Vision Transformer (any declared image family, Hugging Face or timm) on ``pixel_values``
    [1, 3, H, W]; ``normalisation`` is the (mean, std) the processor normalised them with, to show the image."""
    if not isinstance(pixel_values, torch.Tensor) or pixel_values.ndim != 4 or pixel_values.shape[:2] != (1, 3):
        shape = tuple(pixel_values.shape) if isinstance(pixel_values, torch.Tensor) else type(pixel_values).__name__
        raise InputError(f"pixel_values must be a tensor of shape [1, 3, height, width], got {shape}.")
    layout = families.layout_for(model)
    pixel_values = pixel_values.to(_device_of(model))
    if layout is not None and layout.family.inputs == "image":
        captured = _declared_image_attention(layout, pixel_values)
        patch_h, patch_w = layout.patch_embedding().stride
    else:
        captured = _undeclared_image_attention(model, pixel_values)
        patch_h, patch_w = _patch_size(model)
    if not captured:
        raise UnsupportedModelError(f"{type(model).__name__} returned no attention weights.")
    weights = torch.stack([layer[0] for layer in captured]).float().cpu().numpy()
    grid = (pixel_values.shape[2] // patch_h, pixel_values.shape[3] // patch_w)
    prefix = weights.shape[-1] - grid[0] * grid[1]
    if prefix < 0:
        raise UnsupportedModelError(f"{weights.shape[-1]} tokens cannot cover a {grid[0]}×{grid[1]} patch grid: not a plain ViT.")
    return ImageAttention(weights=weights, grid=grid, prefix_tokens=prefix,
                          pixels=_display_pixels(pixel_values, normalisation))
