"""Hugging Face VisionEncoderDecoderModel (ViT-GPT2, ViT-BERT): a ViT or DeiT image encoder and a GPT-2 or
BERT-layout causal text decoder whose layers cross-attend to the encoder's output. Its streams are declared in
families.yaml (one entry per decoder layout, matched by the sub-configs' model types); this is the task."""
from __future__ import annotations

import torch

from .captioning import CaptioningAdapter, ImageTextProcessor, id_set


class VisionEncoderDecoderAdapter(CaptioningAdapter):
    """The processor: anything with ``.image_processor`` and ``.tokenizer`` (e.g. ImageTextProcessor)."""

    family = "vision-encoder-decoder"
    examples = "Hugging Face VisionEncoderDecoderModel with a ViT/DeiT encoder (nlpconnect/vit-gpt2-image-captioning)"
    model_types = ("vision-encoder-decoder",)

    @classmethod
    def load(cls, name: str, **kwargs):
        from transformers import AutoImageProcessor, AutoTokenizer, VisionEncoderDecoderModel

        model = VisionEncoderDecoderModel.from_pretrained(name, attn_implementation="eager", **kwargs)
        return model, ImageTextProcessor(AutoImageProcessor.from_pretrained(name), AutoTokenizer.from_pretrained(name))

    def patch_size(self) -> int:
        return self.model.config.encoder.patch_size

    def prompt_ids(self) -> list[int]:
        start = self.model.generation_config.decoder_start_token_id
        return [self.model.config.decoder_start_token_id if start is None else start]

    def end_ids(self) -> set[int]:
        return id_set(self.model.generation_config.eos_token_id) or id_set(self.model.config.decoder.eos_token_id)

    def generate(self, pixels: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        return self.model.generate(pixel_values=pixels, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1)

    def text_logits(self, pixels, input_ids, attention_mask):
        return self.model(pixel_values=pixels, decoder_input_ids=input_ids,
                          decoder_attention_mask=attention_mask).logits
