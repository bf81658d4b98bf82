"""Hugging Face VisionEncoderDecoderModel (ViT-GPT2, ViT-BERT): a ViT or DeiT image encoder and a GPT-2 or
BERT-layout causal text decoder whose layers cross-attend to the encoder's output."""
from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import UnsupportedModelError
from .base import Site, second_output
from .captioning import CaptioningAdapter, ImageTextProcessor, id_set

ENCODER_TYPES = ("vit", "deit")  # layers[i].attention over one sequence: prefix tokens, then the patch grid


def decoder_layers(decoder: nn.Module) -> list[nn.Module]:
    """The decoder's layers that cross-attend (GPT-2's h, BERT / RoBERTa's encoder.layer): each has ``attn`` (GPT-2)
    or ``attention`` (BERT) and ``crossattention``, modules that return (output, probabilities)."""
    for module in decoder.modules():
        if isinstance(module, nn.ModuleList) and len(module) and all(
                hasattr(layer, "crossattention") and (hasattr(layer, "attn") or hasattr(layer, "attention"))
                for layer in module):
            return list(module)
    raise UnsupportedModelError(f"{type(decoder).__name__} is not a decoder the toolkit reads: it expects GPT-2 or "
                                "BERT-layout layers with cross-attention (add_cross_attention=True).")


class VisionEncoderDecoderAdapter(CaptioningAdapter):
    """The processor: anything with ``.image_processor`` and ``.tokenizer`` (e.g. ImageTextProcessor)."""

    family = "vision-encoder-decoder"
    examples = "Hugging Face VisionEncoderDecoderModel with a ViT/DeiT encoder (nlpconnect/vit-gpt2-image-captioning)"
    model_types = ("vision-encoder-decoder",)

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return type(model).__name__ == "VisionEncoderDecoderModel"

    @classmethod
    def load(cls, name: str, **kwargs):
        from transformers import AutoImageProcessor, AutoTokenizer, VisionEncoderDecoderModel

        model = VisionEncoderDecoderModel.from_pretrained(name, attn_implementation="eager", **kwargs)
        return model, ImageTextProcessor(AutoImageProcessor.from_pretrained(name), AutoTokenizer.from_pretrained(name))

    def sites(self) -> list[Site]:
        encoder_type = self.model.config.encoder.model_type
        if encoder_type not in ENCODER_TYPES:
            raise UnsupportedModelError(
                f"VisionEncoderDecoder with a {encoder_type!r} encoder is not supported: the toolkit reads "
                f"encoders with one token sequence ({', '.join(ENCODER_TYPES)}).")
        encoder = [Site(layer.attention, second_output, "image", "image")
                   for layer in self.model.encoder.layers]
        decoder = []
        for layer in decoder_layers(self.model.decoder):
            self_attention = layer.attn if hasattr(layer, "attn") else layer.attention
            decoder += [Site(self_attention, second_output, "text", "text"),
                        Site(layer.crossattention, second_output, "text", "image")]
        return encoder + decoder

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
