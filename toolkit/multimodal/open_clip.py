"""open_clip CLIP models with ViT towers: image-side and text-side relevance for the similarity of each
(image, text) pair.

open_clip calls ``torch.nn.MultiheadAttention`` with ``need_weights=False``, so the attention
probabilities never leave the module. During the explained pass only, a forward pre-hook asks each
module for its per-head weights; the tensor it returns is a view of the softmax output that
multiplies the values, and that output (its ``_base``) is what the gradients are taken against.
The AttnLRP / CP-LRP rules act at the same module (:mod:`toolkit.core.lrp_rules`): it projects query,
key and value inside one call, with no module at their outputs to hook.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import InputError, UnsupportedModelError
from ..methods import Method
from ..text import read_texts, warn_cut
from ..core.engine import Pass, sites_of
from ..core.spec import LayerSpec, ModelSpec
from .base import MultimodalAdapter, Site, reject_unknown
from .clip import (class_token_relevance, held_norm_cosine, one_pair, shown_images, similarity_explanations,
                   similarity_inputs, text_side_method)

_PROCESSOR_HINT = ("pass open_clip's (preprocess, tokenizer) pair: model, _, preprocess = "
                   "open_clip.create_model_and_transforms(name, pretrained=...); "
                   "Explainer(model, (preprocess, open_clip.get_tokenizer(name))).")


def softmax_output(output: tuple) -> torch.Tensor:
    """The (B·H, Nq, Nk) softmax output MultiheadAttention used; its returned (B, H, Nq, Nk) weights are a
    view of it. The fused fast path (taken without gradients) returns the weights themselves."""
    weights = output[1]
    return weights if weights._base is None else weights._base


def per_head(maps: list[torch.Tensor], batch: int) -> list[torch.Tensor]:
    return [m.reshape(batch, -1, *m.shape[-2:]) for m in maps]


@contextlib.contextmanager
def attention_weights_returned(modules: list[nn.Module]) -> Iterator[None]:
    """Make every MultiheadAttention in ``modules`` compute and return per-head weights inside the block.

    With gradients on and a frozen model (nothing requires grad), the query becomes a leaf that does,
    so that the attention maps are in a graph with the similarity."""

    def ask_for_weights(module, args, kwargs):
        kwargs = {**kwargs, "need_weights": True, "average_attn_weights": False}
        query = args[0]
        if torch.is_grad_enabled() and not query.requires_grad:
            leaf = query.detach().requires_grad_()
            args = tuple(leaf if value is query else value for value in args)  # keeps q is k is v
        return args, kwargs

    handles = [module.register_forward_pre_hook(ask_for_weights, with_kwargs=True) for module in modules]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def tower_spec(transformer: nn.Module) -> ModelSpec:
    """A tower's blocks with the parts the AttnLRP rules read: the MLP's two Linear layers and the MultiheadAttention,
    which projects query, key and value inside (the rules apply at the module itself)."""
    layers = [LayerSpec(block=block, attention=block.attn, extract_probs=softmax_output,
                        num_heads=block.attn.num_heads, out_proj=block.attn.out_proj, fc1=block.mlp.c_fc,
                        fc2=block.mlp.c_proj, norm_first=True) for block in transformer.resblocks]
    sequence_first = None if transformer.batch_first else (
        "its towers run sequence-first (open_clip before 2.23), and the rules' relevance is read token by token from "
        "the first block's input in a batch-first layout")
    return ModelSpec(layers, readout="given", attnlrp_blocker=sequence_first, origin="the open_clip adapter",
                     lrp_blocker="torch's MultiheadAttention computes its projections and attention products inside "
                     "one call, whose values the CVPR 2021 LRP pass reads; use attnlrp, cp_lrp, generic, rollout, "
                     "raw_attention or attention_gradcam")


def texts_read(tokenizer: Any, texts: list[str], context: int) -> list[str]:
    """Each text as the text tower reads it: open_clip's tokenizers cut a text longer than ``context`` tokens
    silently, keeping start and end of text; here a warning names the words left out. HFTokenizer wraps a
    Hugging Face tokenizer (its words outside the vocabulary are named too); SimpleTokenizer encodes and
    decodes; texts a tokenizer reduces by its own strategy, or that other tokenizers read, are taken as given."""
    wrapped = getattr(tokenizer, "tokenizer", None)
    if wrapped is not None:
        clean = getattr(tokenizer, "clean_fn", None) or (lambda text: text)
        return read_texts(wrapped, [clean(text) for text in texts], limit=context)
    if getattr(tokenizer, "reduction_fn", None) is not None or not hasattr(tokenizer, "encode"):
        return texts
    read, budget = [], context - 2
    for index, text in enumerate(texts):
        ids = tokenizer.encode(text)
        if len(ids) > budget:
            warn_cut(f"Text #{index}", len(ids) + 2, context, repr(tokenizer.decode(ids[budget:]).strip()))
            text = tokenizer.decode(ids[:budget]).strip()
        read.append(text)
    return read


def unsupported_part(model: nn.Module) -> str | None:
    """Why this open_clip model cannot be explained, or None when it can."""
    from open_clip import CLIP
    from open_clip.transformer import VisionTransformer

    if not isinstance(model, CLIP):
        return f"it is a {type(model).__name__}, not an open_clip CLIP with its own text transformer"
    visual = model.visual
    if not isinstance(visual, VisionTransformer):
        return f"its image tower is a {type(visual).__name__}, not a ViT"
    if visual.attn_pool is not None or visual.pool_type != "tok":
        return "its image tower pools its tokens instead of reading the class token"
    if model.text_pool_type not in ("argmax", "eos") or model.attn_mask is None:
        return (f"its text tower reads with pool type {model.text_pool_type!r}"
                f"{'' if model.attn_mask is not None else ' and no causal mask'}, not at the end-of-text token")
    blocks = [*visual.transformer.resblocks, *model.transformer.resblocks]
    custom = sorted({type(b.attn).__name__ for b in blocks if not isinstance(b.attn, nn.MultiheadAttention)})
    if custom:
        return (f"its blocks use open_clip's {', '.join(custom)} (qk-norm / scaled-cosine blocks), "
                "whose fused attention exposes no probabilities")
    return None


class OpenCLIPAdapter(MultimodalAdapter):
    family = "open_clip"
    task = "image-text similarity"
    examples = "open_clip CLIP with ViT towers (ViT-B-32, ViT-B-16, ViT-L-14, ...; OpenAI, LAION, DataComp weights)"
    readings = (("image", "image", False), ("text", "text", False))
    text_keyword = "text"

    def __init__(self, model: nn.Module, processor: Any = None):
        reason = unsupported_part(model)
        if reason is not None:
            raise UnsupportedModelError(
                f"This open_clip model cannot be explained: {reason}. Supported: open_clip CLIP models whose "
                "image and text towers are transformers of torch.nn.MultiheadAttention blocks, the image read "
                "at its class token (ViT-B-32, ViT-B-16, ViT-L-14, ...).")
        if not (isinstance(processor, (tuple, list)) and len(processor) == 2 and all(map(callable, processor))):
            raise InputError("open_clip models need their image transform and tokenizer: " + _PROCESSOR_HINT)
        super().__init__(model, processor)

    @property
    def reruns(self) -> bool:
        """The path methods run each tower again from its first block's input, batch first (open_clip 2.23 on)."""
        return self.model.transformer.batch_first and self.model.visual.transformer.batch_first

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return type(model).__module__.split(".")[0] == "open_clip" and hasattr(model, "encode_image")

    def streams(self) -> dict[str, ModelSpec]:
        if self._specs is None:
            towers = {"image": self.model.visual.transformer, "text": self.model.transformer}
            self._specs = {name: tower_spec(transformer) for name, transformer in towers.items()}
        return self._specs

    def pixel_inputs(self) -> dict[str, list[nn.Module]]:
        return {"image": [self.model.visual.conv1]}

    def sites(self) -> list[Site]:
        streams = self.streams()
        return sites_of(streams["image"], "image") + sites_of(streams["text"], "text")

    def _eot_positions(self, ids: torch.Tensor) -> torch.Tensor:
        """Where the text tower reads its pooled output (as open_clip's text_global_pool does)."""
        if self.model.text_pool_type == "argmax":
            return ids.argmax(dim=-1)
        return (ids == self.model.text_eos_id).int().argmax(dim=-1)

    def _capture(self, method: Method, run, rerun, batch: int) -> Pass:
        with attention_weights_returned([site.module for site in self.sites()]):
            captured = self.run(method, run, rerun=rerun)
        captured.probs = per_head(captured.probs, batch)
        if captured.grads is not None:
            captured.grads = per_head(captured.grads, batch)
        return captured

    def explain(self, method: Method, target: Any, image: Any = None, text: Any = None,
                start_layer_text: int = 0, **unknown) -> list:
        """``start_layer`` (in ``method``) applies to the image tower, ``start_layer_text`` to the text tower.
        Texts are tokenized to the model's context length; a longer text is cut, keeping its end-of-text token
        (the tower reads there), with a warning naming the words left out; the explanation's ``text`` is the
        part read."""
        reject_unknown(self.family, "image=, text= and start_layer_text=", unknown)
        images, texts, pairs = similarity_inputs(self, method, target, image, text)
        text_method, options = text_side_method(method, start_layer_text)
        preprocess, tokenizer = self.processor
        pixels = torch.stack([preprocess(im) for im in images])[[i for i, _ in pairs]]
        pixels = pixels.to(self.device, self.model.visual.conv1.weight.dtype)
        context = self.model.context_length
        ids = tokenizer(texts, context_length=context) if hasattr(tokenizer, "context_length") else tokenizer(texts)
        if ids.shape[-1] != context:
            raise InputError(f"The tokenizer gives {ids.shape[-1]} tokens per text but this model reads {context}: "
                             + _PROCESSOR_HINT)
        ids = ids[[t for _, t in pairs]].to(self.device)
        texts = texts_read(tokenizer, texts, context)

        def run():
            image, text = self.model.encode_image(pixels), self.model.encode_text(ids)
            if method.rules is None:
                cosine = (F.normalize(image, dim=-1) * F.normalize(text, dim=-1)).sum(-1)
            else:  # the norms held constant, as the LRP rules hold LayerNorm's standard deviation
                cosine = held_norm_cosine(image, text)
            return cosine, cosine * self.model.logit_scale.exp()

        def rerun(times: int) -> torch.Tensor:
            image = self.model.encode_image(pixels.repeat(times, 1, 1, 1), normalize=True)
            text = self.model.encode_text(ids.repeat(times, 1), normalize=True)
            return ((image * text).sum(-1) * self.model.logit_scale.exp())[:, None]

        batch = len(pairs)
        captured = self._capture(method, run, rerun, batch)
        image_rel = class_token_relevance(self, method, captured, batch)
        eot = self._eot_positions(ids)
        positions = torch.arange(ids.shape[1], device=self.device).expand(batch, -1)
        text_mask = positions <= eot[:, None]  # later tokens are padding the causal mask hides from the read-out
        special = (positions == 0) | (positions == eot[:, None])  # start and end of text, the read-out
        text_rel = self.relevance(text_method, captured, "text", "text", eot, text_mask, text_mask & ~special)
        tokens = [[tokenizer.decode([i]).strip() for i in row[:end + 1]] for row, end in
                  zip(ids.tolist(), eot.tolist())]
        normalise = next((t for t in getattr(preprocess, "transforms", []) if type(t).__name__ == "Normalize"), None)
        mean, std = (normalise.mean, normalise.std) if normalise is not None else (0.0, 1.0)
        explanations = similarity_explanations(self, method, images, texts, pairs, image_rel, text_rel, tokens,
                                               text_mask, special, captured.objective, captured.outputs,
                                               self.model.visual.grid_size, 1, shown_images(pixels, pairs, mean, std),
                                               preprocess, options)
        return explanations[0] if one_pair(image, text) else explanations
