"""A stock Hugging Face CLIPModel trained to match scenes with their captions.

Contrastive training as CLIP's, with one hard negative per image: a foil of its caption in which one
object's colour or shape is swapped for one the scene does not hold. The accuracy is the share of held-out
scenes whose true caption scores above such a foil (chance: 0.5). The vision tower starts from the scene ViT
(trained from scratch, it learned colours but not shapes: 0.74 against foils); the text tower reads the scene
vocabulary and starts from scratch. Recipe: ``python -m toolkit.zoo.scene_clip``.
"""
from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from ..scenes import COLOURS, SHAPES, Scene
from . import scene_vit
from .common import (IMAGE_SIZE, MEAN, PATCH_SIZE, STD, TRAIN_SEED, VALIDATION_SCENES, VALIDATION_SEED, WEIGHTS_DIR,
                     batched, fit, load_weights, random_batch, recipe_main, save_weights, scene_pixels,
                     scenes, scene_tokenizer, stored_metadata)

WEIGHTS = WEIGHTS_DIR / "scene_clip.safetensors"
TOWER = dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, intermediate_size=128)
# The vision tower has the scene ViT's shape, activation and layer-norm epsilon, to start from its weights.
VISION_TOWER = dict(TOWER, num_hidden_layers=4, hidden_act="gelu", layer_norm_eps=1e-6)
_LAYER = "vision_model.encoder.layers.{i}."
BACKBONE_LAYOUT = {
    "patch_embed.proj": "vision_model.embeddings.patch_embedding",
    "cls_token": "vision_model.embeddings.class_embedding",
    "pos_embed": "vision_model.embeddings.position_embedding.weight", "blocks.{i}.norm1": _LAYER + "layer_norm1",
    "blocks.{i}.attn.qkv": tuple(_LAYER + f"self_attn.{name}_proj" for name in "qkv"),
    "blocks.{i}.attn.proj": _LAYER + "self_attn.out_proj", "blocks.{i}.norm2": _LAYER + "layer_norm2",
    "blocks.{i}.mlp.fc1": _LAYER + "mlp.fc1", "blocks.{i}.mlp.fc2": _LAYER + "mlp.fc2",
    "norm": "vision_model.post_layernorm",
}
PATCH_BIAS_INTO = "vision_model.embeddings.position_embedding.weight"


def build_scene_clip(tokenizer):
    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig(
        text_config=dict(TOWER, vocab_size=tokenizer.vocab_size, max_position_embeddings=16,
                         bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
                         pad_token_id=tokenizer.pad_token_id),
        vision_config=dict(VISION_TOWER, image_size=IMAGE_SIZE, patch_size=PATCH_SIZE),
        projection_dim=64)
    return CLIPModel(config)


def scene_clip_processor(tokenizer) -> SimpleNamespace:
    from transformers import CLIPImageProcessor

    return SimpleNamespace(tokenizer=tokenizer, image_processor=CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=list(MEAN), image_std=list(STD)))


def foil(scene: Scene, caption: str, rng: random.Random) -> str:
    """The caption with one object's colour or shape replaced so that it names no object of the scene."""
    words = caption.split()
    present = {(obj.colour, obj.shape) for obj in scene.objects}
    options = []
    for colour_at in (1, len(words) - 2):  # the colour of the subject, then of the reference
        colour, shape = words[colour_at], words[colour_at + 1]
        options += [(colour_at, c) for c in COLOURS if (c, shape) not in present]
        options += [(colour_at + 1, s) for s in SHAPES if (colour, s) not in present]
    position, word = rng.choice(options)
    return " ".join(words[:position] + [word] + words[position + 1:])


def similarities(model, tokenizer, pixels: torch.Tensor, texts: list[str]) -> torch.Tensor:
    """Scaled cosine similarities (images x texts), as CLIP's logits_per_image."""
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    return model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], pixel_values=pixels).logits_per_image


@torch.no_grad()
def accuracy(model, tokenizer, batch: list[Scene], seed: int = 0) -> float:
    """Share of scenes whose first caption scores above a foil of it."""
    rng, wins = random.Random(seed), []
    for chunk in batched(batch, 128):
        captions = [scene.captions[0] for scene in chunk]
        logits = similarities(model, tokenizer, scene_pixels(chunk),
                              captions + [foil(scene, c, rng) for scene, c in zip(chunk, captions)])
        index = torch.arange(len(chunk))
        wins.append(logits[index, index] > logits[index, index + len(chunk)])
    return float(torch.cat(wins).float().mean())


def train_scene_clip(steps: int = 4000, train_scenes: int = 16000, batch_size: int = 64, lr: float = 1e-3,
                     seed: int = 0, out: Path = WEIGHTS, validation_scenes: int = VALIDATION_SCENES,
                     backbone: Path = scene_vit.WEIGHTS) -> float:
    """Train (seeded), the vision tower starting from the scene ViT's ``backbone`` weights and the text tower
    from scratch; save the weights and return the held-out accuracy."""
    tokenizer = scene_tokenizer()
    train = scenes(train_scenes, TRAIN_SEED)
    pixels = scene_pixels(train)
    torch.manual_seed(seed)
    model = build_scene_clip(tokenizer)
    scene_vit.start_from_scene_vit(model, BACKBONE_LAYOUT, backbone, PATCH_BIAS_INTO)
    rng = random.Random(seed)

    def loss_of_step(generator: torch.Generator) -> torch.Tensor:
        index = random_batch(len(train), batch_size, generator).tolist()
        chosen = [train[i] for i in index]
        captions = [rng.choice(scene.captions) for scene in chosen]
        logits = similarities(model, tokenizer, pixels[index],
                              captions + [foil(scene, c, rng) for scene, c in zip(chosen, captions)])
        targets = torch.arange(len(index))
        return (F.cross_entropy(logits, targets) + F.cross_entropy(logits[:, :len(index)].T, targets)) / 2

    fit(model, loss_of_step, steps, lr, seed, desc="scene CLIP")
    validation = scenes(validation_scenes, VALIDATION_SEED)
    recipe = dict(steps=steps, train_scenes=train_scenes, batch_size=batch_size, lr=lr, seed=seed,
                  backbone=stored_metadata(backbone))
    return save_weights(model, out, recipe, lambda shipped: accuracy(shipped, tokenizer, validation))


def load_scene_clip(path: Path = WEIGHTS):
    """The trained CLIPModel (eval mode) and its processor (``.tokenizer``, ``.image_processor``)."""
    tokenizer = scene_tokenizer()
    return load_weights(build_scene_clip(tokenizer), path, __name__), scene_clip_processor(tokenizer)


if __name__ == "__main__":
    recipe_main(train_scene_clip, "Reproduce the scene CLIP's weights.")
