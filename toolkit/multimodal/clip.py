"""Hugging Face CLIPModel: image-side and text-side relevance for the similarity of each (image, text) pair."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import InputError
from ..explanation import Explanation
from ..images import original_geometry
from ..methods import Method
from ..text import encoded_words, read_texts, special_token_mask, unknown_token_mask, word_scores
from ..core import engine
from ..core.engine import Pass
from ..core.propagation import one_hot
from .base import MultimodalAdapter, count_items, image_heatmap, reject_unknown, string_list, to_numpy


def pair_grid(images: list, texts: list[str]) -> list[tuple[int, int]]:
    """Every (image, text) pair, image-major: explain(image=[a, b], text=[x, y]) gives ax, ay, bx, by."""
    return [(i, t) for i in range(len(images)) for t in range(len(texts))]


def one_pair(image: Any, text: Any) -> bool:
    """Whether a call names one image and one text, and so gives one Explanation (not a list)."""
    return isinstance(text, str) and count_items(image, 4) == 1 and not isinstance(image, (list, tuple))


def similarity_inputs(adapter: MultimodalAdapter, method: Method, target: Any, image: Any,
                      text: Any) -> tuple[list, list[str], list[tuple[int, int]]]:
    """The checks every CLIP family makes; returns (images, texts, pairs)."""
    adapter.check_method(method)
    if target is not None:
        raise InputError("CLIP explains the similarity of each (image, text) pair; `target` is not used.")
    images, texts = adapter.images(image), string_list(text, "text")
    return images, texts, pair_grid(images, texts)


def similarity_explanations(adapter: MultimodalAdapter, method: Method, images: list, texts: list[str],
                            pairs: list[tuple[int, int]], image_rel: torch.Tensor, text_rel: torch.Tensor,
                            text_tokens: list[list[str]], text_valid: torch.Tensor, text_special: torch.Tensor,
                            logits: torch.Tensor, similarity: torch.Tensor, grid: tuple[int, int], prefix: int,
                            shown: list, image_processor: Any, options: dict,
                            text_words: list[dict] | None = None, probability: Any = None) -> list:
    """One Explanation per pair; the probability is the softmax over the texts given for that image, or
    ``probability(logits)`` of each pair on its own (SigLIP's sigmoid).

    ``image_rel``: (B, N) per image token, or (B, H, W) per pixel (the LRP rules' input x gradient at the pixels).
    ``text_special`` marks the start and end-of-text tokens (the latter is where the text is read out), which
    displays leave out; ``text_words`` (from a fast tokenizer) groups the tokens into the caption's words."""
    logits_np, sims = to_numpy(logits), to_numpy(similarity)
    geometry = [original_geometry(image, image_processor) for image in images]
    explanations = []
    for b, (i, t) in enumerate(pairs):
        if probability is not None:
            chance = float(probability(logits[b]))
        else:
            same_image = [k for k, (ii, _) in enumerate(pairs) if ii == i]
            probabilities = np.exp(logits_np[same_image] - logits_np[same_image].max())
            chance = float(probabilities[same_image.index(b)] / probabilities.sum())
        valid = to_numpy(text_valid[b]).astype(bool)
        scores = to_numpy(text_rel[b])[valid]
        words = (text_words or [{}] * len(pairs))[b]
        explanations.append(Explanation(
            method=method.name, model=adapter.name, target=t, label=texts[t], probability=chance,
            scores=scores, tokens=text_tokens[b], special_tokens=to_numpy(text_special[b])[valid].astype(bool),
            words=words.get("words"), word_scores=word_scores(scores, words["word_pieces"]) if words else None,
            unknown_words=words.get("unknown_words"), heatmap=image_heatmap(to_numpy(image_rel[b]), prefix, grid),
            image=shown[i], text=texts[t],
            outputs={"similarity": float(sims[b])}, options=options, **geometry[i]))
    return explanations


def text_side_method(method: Method, start_layer_text: int) -> tuple[Method, dict]:
    """The method for the text tower, which starts at its own ``start_layer_text`` (``start_layer`` is the
    image tower's, as in the reference code), and the options to report."""
    method.start_option, method.stack = "start_layer", "the image tower"
    text_method = method.with_start_layer(start_layer_text, "start_layer_text", "the text tower")
    if not method.takes_start_layer:
        return text_method, method.options()
    return text_method, {**method.options(), "start_layer_text": start_layer_text}


def class_token_relevance(adapter: MultimodalAdapter, method: Method, result: Pass, batch: int) -> torch.Tensor:
    """Image-side relevance (B, N) read at the class token (index 0), the patches being the content; (B, H, W) per
    pixel for the LRP rules' methods, whose graph starts at the pixels."""
    index = next(i for i, site in enumerate(result.sites) if site.query == "image")
    image_mask = torch.ones(batch, result.probs[index].shape[-1], dtype=torch.bool, device=adapter.device)
    patches = image_mask.clone()
    patches[:, 0] = False
    return adapter.relevance(method, result, "image", "image", torch.zeros(batch, dtype=torch.long,
                                                                           device=adapter.device), image_mask, patches)


def tower_lrp(adapter: MultimodalAdapter, method: Method, text_method: Method, text_rows: torch.Tensor):
    """Where LRP starts in each tower for the similarity ``scale * <e_i / |e_i|, e_t / |e_t|>``: at each projection's
    output, dimension d holds scale * ê_i[d] * ê_t[d] (the norms held constant, as LayerNorm's are), which sums to
    the logit; the image tower reads its class token, the text tower each text's read-out position."""
    def starts(result: Pass) -> dict[str, engine.LRPStart]:
        out, specs = result.outputs, adapter.streams()
        shared = (out.image_embeds * out.text_embeds).detach() * adapter.model.logit_scale.exp().detach()
        tokens = {name: result.probs[next(i for i, site in enumerate(result.sites) if site.query == name)].shape[-1]
                  for name in specs}
        batch = shared.shape[0]
        image_rows = one_hot(torch.zeros(batch, dtype=torch.long, device=shared.device), tokens["image"])
        return {"image": engine.LRPStart(shared, image_rows, method.lowest_lrp_layer(len(specs["image"].layers))),
                "text": engine.LRPStart(shared, one_hot(text_rows, tokens["text"]),
                                        text_method.lowest_lrp_layer(len(specs["text"].layers)))}

    return starts


def held_norm_cosine(image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """<e_i / |e_i|, e_t / |e_t|> with the norms held constant, for LRP rules (as LayerNorm's standard deviation is):
    the cosine is scale-invariant, so its plain gradient is orthogonal to each embedding and input x gradient would
    sum to zero. Each factor is F.normalize's value to the bit (plus an exact zero) with the gradient of e / |e|."""
    def held(e: torch.Tensor) -> torch.Tensor:
        return F.normalize(e.detach(), dim=-1) + (e - e.detach()) / e.norm(dim=-1, keepdim=True).detach()

    return (held(image) * held(text)).sum(-1)


def held_norm_similarity(model: nn.Module, out: Any) -> torch.Tensor:
    """The pair's logit scale * held_norm_cosine; the towers' outputs (``pooler_output``, projected by transformers
    5's CLIPModel) are the unnormalised embeddings."""
    cosine = held_norm_cosine(out.vision_model_output.pooler_output, out.text_model_output.pooler_output)
    return cosine * model.logit_scale.exp()


def special_tokens(tokenizer: Any, input_ids: torch.Tensor) -> torch.Tensor:
    """(B, N) the tokenizer's special tokens ([CLS], [SEP], start / end of text, padding; not [UNK])."""
    return torch.tensor([special_token_mask(tokenizer, ids) for ids in input_ids.tolist()], dtype=torch.bool,
                        device=input_ids.device)


def special_or_readout(special: torch.Tensor, readout: torch.Tensor) -> torch.Tensor:
    """``special`` with the read-out position of each row (B,) marked too, whatever the tokenizer says of it."""
    marked = special.clone()
    marked[torch.arange(special.shape[0], device=special.device), readout] = True
    return marked


def shown_images(pixels: torch.Tensor, pairs: list[tuple[int, int]], mean: Any, std: Any) -> dict[int, np.ndarray]:
    """Each image as the model saw it (uint8 HxWx3): the per-pair pixels with the normalisation undone."""
    shown = (to_numpy(pixels).transpose(0, 2, 3, 1) * np.asarray(std, dtype=np.float32)
             + np.asarray(mean, dtype=np.float32))
    return {i: np.clip(shown[b] * 255 + 0.5, 0, 255).astype(np.uint8) for b, (i, _) in enumerate(pairs)}


class HFCLIPAdapter(MultimodalAdapter):
    family = "hf-clip"
    task = "image-text similarity"
    examples = "Hugging Face CLIPModel (openai/clip-vit-*)"
    model_types = ("clip",)
    readings = (("image", "image", False), ("text", "text", False))
    text_keyword, reruns = "text", True

    @classmethod
    def load(cls, name: str, **kwargs):
        from transformers import AutoProcessor, CLIPModel

        return CLIPModel.from_pretrained(name, attn_implementation="eager", **kwargs), AutoProcessor.from_pretrained(name)

    def _eot_positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Where CLIP's text tower reads its pooled output (as CLIPTextTransformer does)."""
        eos = self.model.text_model.eos_token_id
        if eos == 2:
            return input_ids.to(torch.int).argmax(dim=-1)
        return (input_ids.to(torch.int) == eos).int().argmax(dim=-1)

    def explain(self, method: Method, target: Any, image: Any = None, text: Any = None,
                start_layer_text: int = 0, **unknown) -> list:
        """``start_layer`` (in ``method``) applies to the image tower, ``start_layer_text`` to the text tower, as
        in the reference code (the towers differ in depth). A text longer than the text tower's positions is cut to them,
        its end-of-text token kept (the tower reads there), with a warning naming the words left out; the
        explanation's ``text`` is the part read."""
        reject_unknown(self.family, "image=, text= and start_layer_text=", unknown)
        images, texts, pairs = similarity_inputs(self, method, target, image, text)
        text_method, options = text_side_method(method, start_layer_text)
        processor = self.processor
        pixels = processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
        pixels = pixels[[i for i, _ in pairs]].to(self.device)
        limit = self.model.config.text_config.max_position_embeddings
        read = read_texts(processor.tokenizer, texts, limit=limit)
        fast = getattr(processor.tokenizer, "is_fast", False)
        enc = processor.tokenizer([texts[t] for _, t in pairs], padding=True, truncation=True, max_length=limit,
                                  return_tensors="pt", return_offsets_mapping=fast)
        offsets = enc.get("offset_mapping")
        enc = enc.to(self.device)

        def run():
            out = self.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], pixel_values=pixels)
            if method.rules is None:
                return out, (out.image_embeds * out.text_embeds).sum(-1) * self.model.logit_scale.exp()
            return out, held_norm_similarity(self.model, out)

        def rerun(times: int) -> torch.Tensor:
            out = self.model(input_ids=enc["input_ids"].repeat(times, 1), pixel_values=pixels.repeat(times, 1, 1, 1),
                             attention_mask=enc["attention_mask"].repeat(times, 1))
            return ((out.image_embeds * out.text_embeds).sum(-1) * self.model.logit_scale.exp())[:, None]

        eot = self._eot_positions(enc["input_ids"])
        captured = self.run(method, run, lrp=tower_lrp(self, method, text_method, eot), rerun=rerun)
        captured.targets = torch.zeros(len(pairs), dtype=torch.long, device=self.device)
        image_rel = class_token_relevance(self, method, captured, len(pairs))
        text_mask = enc["attention_mask"].bool()
        special = special_or_readout(special_tokens(processor.tokenizer, enc["input_ids"]), eot)
        text_rel = self.relevance(text_method, captured, "text", "text", eot, text_mask, text_mask & ~special)
        tokens = [processor.tokenizer.convert_ids_to_tokens(ids[mask]) for ids, mask in
                  zip(enc["input_ids"].cpu(), text_mask.cpu())]
        enc["offset_mapping"] = offsets
        words = [encoded_words(enc, b, len(tokens[b]), special[b, :len(tokens[b])].tolist(), (texts[t], None),
                               unknown_token_mask(processor.tokenizer, enc["input_ids"][b, :len(tokens[b])].tolist()))
                 for b, (_, t) in enumerate(pairs)]
        side = int(round((captured.probs[0].shape[-1] - 1) ** 0.5))  # the image tower's tokens: [CLS], patches
        shown = shown_images(pixels, pairs, processor.image_processor.image_mean, processor.image_processor.image_std)
        logit = (captured.outputs.image_embeds * captured.outputs.text_embeds).sum(-1)
        explanations = similarity_explanations(self, method, images, read, pairs, image_rel, text_rel, tokens,
                                               text_mask, special, captured.objective, logit, (side, side), 1, shown,
                                               processor.image_processor, options, words)
        return explanations[0] if one_pair(image, text) else explanations
