"""A stock Hugging Face VisionEncoderDecoderModel (ViT encoder, BERT-layout decoder with cross-attention)
trained to caption scenes: "a red circle left of a blue square".

The accuracy is the share of the objects named by the held-out scenes' greedy captions ("red circle" and
"blue square" above) that the scene holds, colour and shape both right (chance, naming random pairs: about
0.14; a caption not of the scenes' form names nothing right). It is what the benchmark explains: the colour
and shape words. The encoder starts from the scene ViT, as captioners start from a pretrained ViT; the decoder
writes words of the scene vocabulary. Recipe: ``python -m toolkit.zoo.scene_captioner``.
"""
from __future__ import annotations

import random
from pathlib import Path

import torch
import torch.nn.functional as F

from ..multimodal.captioning import ImageTextProcessor
from ..scenes import Scene
from . import scene_vit
from .common import (IMAGE_SIZE, MEAN, PATCH_SIZE, STD, TRAIN_SEED, VALIDATION_SCENES, VALIDATION_SEED, WEIGHTS_DIR,
                     batched, fit, named_in_caption, load_weights, random_batch, recipe_main, save_weights,
                     scene_pixels, scenes, scene_tokenizer, stored_metadata)

WEIGHTS = WEIGHTS_DIR / "scene_captioner.safetensors"
MAX_NEW_TOKENS = 12  # the longest caption, "a purple triangle right of a yellow triangle", is 8 words
LAYER = dict(hidden_size=64, num_attention_heads=4, intermediate_size=128)


# Where the encoder keeps what the scene ViT holds (see :func:`.scene_vit.start_from_scene_vit`).
_LAYER = "encoder.layers.{i}."
BACKBONE_LAYOUT = {
    "patch_embed.proj": "encoder.embeddings.patch_embeddings.projection", "cls_token": "encoder.embeddings.cls_token",
    "pos_embed": "encoder.embeddings.position_embeddings", "blocks.{i}.norm1": _LAYER + "layernorm_before",
    "blocks.{i}.attn.qkv": tuple(_LAYER + f"attention.{name}_proj" for name in "qkv"),
    "blocks.{i}.attn.proj": _LAYER + "attention.o_proj", "blocks.{i}.norm2": _LAYER + "layernorm_after",
    "blocks.{i}.mlp.fc1": _LAYER + "mlp.fc1", "blocks.{i}.mlp.fc2": _LAYER + "mlp.fc2", "norm": "encoder.layernorm",
}


def build_scene_captioner(tokenizer):
    """The encoder has the scene ViT's shape (and layer-norm epsilon) so that it can start from its weights."""
    from transformers import BertConfig, ViTConfig, VisionEncoderDecoderConfig, VisionEncoderDecoderModel

    special = dict(decoder_start_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
                   pad_token_id=tokenizer.pad_token_id)
    encoder = ViTConfig(**LAYER, num_hidden_layers=4, image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, layer_norm_eps=1e-6)
    decoder = BertConfig(**LAYER, num_hidden_layers=2, vocab_size=tokenizer.vocab_size, max_position_embeddings=16,
                         is_decoder=True, add_cross_attention=True, bos_token_id=tokenizer.cls_token_id,
                         eos_token_id=tokenizer.sep_token_id, pad_token_id=tokenizer.pad_token_id)
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder, **special)
    return VisionEncoderDecoderModel(config=config)


def scene_captioner_processor(tokenizer) -> ImageTextProcessor:
    from transformers import ViTImageProcessor

    return ImageTextProcessor(ViTImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
                                                image_mean=list(MEAN), image_std=list(STD)), tokenizer)


def caption_loss(model, tokenizer, pixels: torch.Tensor, captions: list[str]) -> torch.Tensor:
    """Teacher forcing: [CLS] caption -> caption [SEP], padding ignored."""
    enc = tokenizer(captions, padding=True, return_tensors="pt")  # [CLS] caption [SEP] [PAD]...
    inputs, mask = enc["input_ids"][:, :-1], enc["attention_mask"][:, :-1]
    targets = enc["input_ids"][:, 1:].masked_fill(enc["attention_mask"][:, 1:] == 0, -100)
    logits = model(pixel_values=pixels, decoder_input_ids=inputs, decoder_attention_mask=mask).logits
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


@torch.no_grad()
def greedy_captions(model, tokenizer, pixels: torch.Tensor) -> list[str]:
    ids = model.generate(pixel_values=pixels, max_new_tokens=MAX_NEW_TOKENS, do_sample=False, num_beams=1)
    return tokenizer.batch_decode(ids, skip_special_tokens=True)


def named_objects_held(scene: Scene, caption: str) -> list[bool]:
    """Whether the scene holds the caption's subject and its reference; both False for a caption of another form."""
    named = named_in_caption(caption)
    held = {(obj.colour, obj.shape) for obj in scene.objects}
    return [False, False] if named is None else [name in held for name in named]


def accuracy(model, tokenizer, batch: list[Scene]) -> float:
    """Share of the objects named by the scenes' greedy captions that the scenes hold."""
    held = [named for chunk in batched(batch, 256)
            for scene, caption in zip(chunk, greedy_captions(model, tokenizer, scene_pixels(chunk)))
            for named in named_objects_held(scene, caption)]
    return sum(held) / len(held)


def train_scene_captioner(steps: int = 4000, train_scenes: int = 16000, batch_size: int = 64, lr: float = 1e-3,
                          seed: int = 0, out: Path = WEIGHTS, validation_scenes: int = VALIDATION_SCENES,
                          backbone: Path = scene_vit.WEIGHTS) -> float:
    """Train (seeded) on one random caption per scene of each batch, the encoder starting from the scene ViT's
    ``backbone`` weights; save; return the held-out accuracy."""
    tokenizer = scene_tokenizer()
    train = scenes(train_scenes, TRAIN_SEED)
    pixels = scene_pixels(train)
    torch.manual_seed(seed)
    model = build_scene_captioner(tokenizer)
    scene_vit.start_from_scene_vit(model, BACKBONE_LAYOUT, backbone)
    rng = random.Random(seed)

    def loss_of_step(generator: torch.Generator) -> torch.Tensor:
        index = random_batch(len(train), batch_size, generator).tolist()
        return caption_loss(model, tokenizer, pixels[index], [rng.choice(train[i].captions) for i in index])

    fit(model, loss_of_step, steps, lr, seed, desc="scene captioner")
    validation = scenes(validation_scenes, VALIDATION_SEED)
    recipe = dict(steps=steps, train_scenes=train_scenes, batch_size=batch_size, lr=lr, seed=seed,
                  backbone=stored_metadata(backbone))
    return save_weights(model, out, recipe, lambda shipped: accuracy(shipped, tokenizer, validation))


def load_scene_captioner(path: Path = WEIGHTS):
    """The trained VisionEncoderDecoderModel (eval mode) and its processor (``.image_processor``, ``.tokenizer``)."""
    tokenizer = scene_tokenizer()
    return load_weights(build_scene_captioner(tokenizer), path, __name__), scene_captioner_processor(tokenizer)


if __name__ == "__main__":
    recipe_main(train_scene_captioner, "Reproduce the scene captioner's weights.")
