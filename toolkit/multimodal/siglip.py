"""Hugging Face SiglipModel: image-side and text-side relevance for the sigmoid similarity of each (image, text) pair.

SigLIP differs from CLIP in three true quirks, kept here: the image is read by an attention-pooling head (a learned
probe attending to every patch, no class token), so the image tower's read-out row is that head's attention
(averaged over heads) rather than one token; the text is read at the last position of a text padded to the full
length; and the pair's probability is the sigmoid of its logit (scale x cosine + bias), as SigLIP is trained.

The pooling head's torch MultiheadAttention is asked for its per-head weights during the explained pass (SigLIP
asks for their average): the read-out row averages them, and the AttnLRP / CP-LRP rules act on the softmax output
they are a view of. families.yaml declares the head (``pool``) for the rules, which then pass it as a layer; the
probe's share of the query-key product stays with the probe, as a bias's share does.
"""
from __future__ import annotations

from typing import Any

import torch

from ..methods import Method
from ..text import encoded_words, read_texts, unknown_token_mask
from .clip import (HFCLIPAdapter, held_norm_similarity, one_pair, shown_images, similarity_explanations,
                   similarity_inputs, special_or_readout, special_tokens, text_side_method)
from .base import reject_unknown
from .open_clip import attention_weights_returned


class SiglipAdapter(HFCLIPAdapter):
    family = "siglip"
    examples = "Hugging Face SiglipModel (google/siglip-base-patch16-224, ...)"
    model_types = ("siglip",)

    @classmethod
    def load(cls, name: str, **kwargs):
        from transformers import AutoProcessor, SiglipModel

        return SiglipModel.from_pretrained(name, attn_implementation="eager", **kwargs), AutoProcessor.from_pretrained(name)

    def explain(self, method: Method, target: Any, image: Any = None, text: Any = None,
                start_layer_text: int = 0, **unknown) -> list:
        """As CLIP's; ``probability`` is the sigmoid of the pair's logit, each pair on its own, and the logit (with
        its bias) is what every method explains."""
        reject_unknown(self.family, "image=, text= and start_layer_text=", unknown)
        images, texts, pairs = similarity_inputs(self, method, target, image, text)
        text_method, options = text_side_method(method, start_layer_text)
        processor = self.processor
        pixels = processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
        pixels = pixels[[i for i, _ in pairs]].to(self.device, next(self.model.parameters()).dtype)
        limit = self.model.config.text_config.max_position_embeddings
        read = read_texts(processor.tokenizer, texts, limit=limit)
        fast = getattr(processor.tokenizer, "is_fast", False)
        enc = processor.tokenizer([texts[t] for _, t in pairs], padding="max_length", truncation=True,
                                  max_length=limit, return_tensors="pt", return_offsets_mapping=fast)
        offsets = enc.get("offset_mapping")
        enc = enc.to(self.device)
        pooling = self.model.vision_model.head.attention
        pooled: list[torch.Tensor] = []
        handle = pooling.register_forward_hook(lambda module, args, output: pooled.append(output[1].detach()))

        def pair_logit(out) -> torch.Tensor:
            """scale * cosine + bias; under LRP rules with the embeddings' norms held constant."""
            similarity = (held_norm_similarity(self.model, out) if method.rules is not None
                          else (out.image_embeds * out.text_embeds).sum(-1) * self.model.logit_scale.exp())
            return similarity + self.model.logit_bias

        def run():
            out = self.model(input_ids=enc["input_ids"], pixel_values=pixels)
            return out, pair_logit(out)

        def rerun(times: int) -> torch.Tensor:
            out = self.model(input_ids=enc["input_ids"].repeat(times, 1), pixel_values=pixels.repeat(times, 1, 1, 1))
            return pair_logit(out)[:, None]

        try:
            with attention_weights_returned([pooling]):
                captured = self.run(method, run, rerun=rerun)
        finally:
            handle.remove()
        batch, length = len(pairs), enc["input_ids"].shape[1]
        captured.targets = torch.zeros(batch, dtype=torch.long, device=self.device)
        last = torch.full((batch,), length - 1, dtype=torch.long, device=self.device)
        pool_rows = pooled[-1][:, :, 0].mean(1).float()  # (B, N): the probe's attention to each patch, heads averaged
        image_tokens = pool_rows.shape[-1]
        every = torch.ones(batch, image_tokens, dtype=torch.bool, device=self.device)
        image_rel = self.relevance(method, captured, "image", "image", pool_rows, every, every)
        text_mask = torch.ones(batch, length, dtype=torch.bool, device=self.device)
        special = special_or_readout(special_tokens(processor.tokenizer, enc["input_ids"]), last)
        text_rel = self.relevance(text_method, captured, "text", "text", last, text_mask, text_mask & ~special)
        tokens = [processor.tokenizer.convert_ids_to_tokens(ids) for ids in enc["input_ids"].cpu()]
        enc["offset_mapping"] = offsets
        words = [encoded_words(enc, b, length, special[b].tolist(), (texts[t], None),
                               unknown_token_mask(processor.tokenizer, enc["input_ids"][b].tolist()))
                 for b, (_, t) in enumerate(pairs)]
        side = int(round(image_tokens ** 0.5))
        shown = shown_images(pixels, pairs, processor.image_processor.image_mean, processor.image_processor.image_std)
        logit = (captured.outputs.image_embeds * captured.outputs.text_embeds).sum(-1)
        explanations = similarity_explanations(self, method, images, read, pairs, image_rel, text_rel, tokens,
                                               text_mask, special, captured.objective, logit, (side, side), 0, shown,
                                               processor.image_processor, options, words, probability=torch.sigmoid)
        return explanations[0] if one_pair(image, text) else explanations
