"""A stock Hugging Face ViltForQuestionAnswering trained to answer the scenes' questions.

The answer classes are :data:`toolkit.scenes.ANSWERS`; every question names the objects its answer depends
on (the ground truth of the image side) and the words that pick them out (of the question side). The
accuracy is over every question of the held-out scenes. Recipe: ``python -m toolkit.zoo.scene_vilt``.
"""
from __future__ import annotations

import random
from pathlib import Path

import torch
import torch.nn.functional as F

from ..scenes import ANSWERS, QUESTION_KINDS, Scene
from . import scene_vit
from .common import (IMAGE_SIZE, MEAN, PATCH_SIZE, STD, TRAIN_SEED, VALIDATION_SCENES, VALIDATION_SEED, WEIGHTS_DIR,
                     batched, fit, load_weights, random_batch, recipe_main, save_weights, scene_pixels, scenes,
                     scene_tokenizer, stored_metadata)

WEIGHTS = WEIGHTS_DIR / "scene_vilt.safetensors"


# Where ViLT keeps what the scene ViT holds (see :func:`.scene_vit.start_from_scene_vit`).
_LAYER = "vilt.encoder.layer.{i}."
BACKBONE_LAYOUT = {
    "patch_embed.proj": "vilt.embeddings.patch_embeddings.projection", "cls_token": "vilt.embeddings.cls_token",
    "pos_embed": "vilt.embeddings.position_embeddings", "blocks.{i}.norm1": _LAYER + "layernorm_before",
    "blocks.{i}.attn.qkv": tuple(_LAYER + f"attention.attention.{name}" for name in ("query", "key", "value")),
    "blocks.{i}.attn.proj": _LAYER + "attention.output.dense", "blocks.{i}.norm2": _LAYER + "layernorm_after",
    "blocks.{i}.mlp.fc1": _LAYER + "intermediate.dense", "blocks.{i}.mlp.fc2": _LAYER + "output.dense",
    "norm": "vilt.layernorm",
}


def build_scene_vilt(tokenizer):
    """The transformer has the scene ViT's shape (and layer-norm epsilon) so that it can start from its weights."""
    from transformers import ViltConfig, ViltForQuestionAnswering

    config = ViltConfig(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=128,
                        image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, vocab_size=tokenizer.vocab_size,
                        max_position_embeddings=24, num_labels=len(ANSWERS), layer_norm_eps=1e-6,
                        id2label=dict(enumerate(ANSWERS)), label2id={a: i for i, a in enumerate(ANSWERS)})
    return ViltForQuestionAnswering(config)


def scene_vilt_processor(tokenizer):
    from transformers import ViltImageProcessor, ViltProcessor

    return ViltProcessor(image_processor=ViltImageProcessor(size={"shortest_edge": IMAGE_SIZE}, size_divisor=32,
                                                            image_mean=list(MEAN), image_std=list(STD)),
                         tokenizer=tokenizer)


@torch.no_grad()
def accuracy_by_kind(model, tokenizer, batch: list[Scene]) -> dict[str, float]:
    """Share of the scenes' questions answered right, per question kind (colour, shape, size, count,
    relation) and over all of them (``"all"``)."""
    pairs = [(scene, question) for scene in batch for question in scene.questions]
    right = []
    for chunk in batched(pairs, 256):
        enc = tokenizer([q.text for _, q in chunk], padding=True, return_tensors="pt")
        logits = model(**enc, pixel_values=scene_pixels([s for s, _ in chunk])).logits
        right.append(logits.argmax(-1) == torch.tensor([ANSWERS.index(q.answer) for _, q in chunk]))
    right = torch.cat(right).float()
    kinds = [q.kind for _, q in pairs]
    shares = {kind: float(right[[k == kind for k in kinds]].mean()) for kind in QUESTION_KINDS if kind in kinds}
    return {**shares, "all": float(right.mean())}


def accuracy(model, tokenizer, batch: list[Scene]) -> float:
    """Share of all the scenes' questions answered right."""
    return accuracy_by_kind(model, tokenizer, batch)["all"]


def train_scene_vilt(steps: int = 6000, train_scenes: int = 16000, batch_size: int = 64, lr: float = 1e-3,
                     seed: int = 0, out: Path = WEIGHTS, validation_scenes: int = VALIDATION_SCENES,
                     backbone: Path = scene_vit.WEIGHTS) -> float:
    """Train (seeded) on one random question per scene of each batch with the stock VQA loss (binary
    cross-entropy per answer, so the adapter's sigmoid score is the answer's probability), the transformer and
    patch embedding starting from the scene ViT's ``backbone`` weights as ViLT starts from a pretrained ViT;
    save; return the held-out accuracy."""
    tokenizer = scene_tokenizer()
    train = scenes(train_scenes, TRAIN_SEED)
    pixels = scene_pixels(train)
    torch.manual_seed(seed)
    model = build_scene_vilt(tokenizer)
    scene_vit.start_from_scene_vit(model, BACKBONE_LAYOUT, backbone)
    rng = random.Random(seed)

    def loss_of_step(generator: torch.Generator) -> torch.Tensor:
        index = random_batch(len(train), batch_size, generator).tolist()
        questions = [rng.choice(train[i].questions) for i in index]
        enc = tokenizer([q.text for q in questions], padding=True, return_tensors="pt")
        answers = F.one_hot(torch.tensor([ANSWERS.index(q.answer) for q in questions]), len(ANSWERS)).float()
        return model(**enc, pixel_values=pixels[index], labels=answers).loss

    fit(model, loss_of_step, steps, lr, seed, desc="scene ViLT")
    validation = scenes(validation_scenes, VALIDATION_SEED)
    recipe = dict(steps=steps, train_scenes=train_scenes, batch_size=batch_size, lr=lr, seed=seed,
                  backbone=stored_metadata(backbone))
    return save_weights(model, out, recipe, lambda shipped: accuracy(shipped, tokenizer, validation))


def load_scene_vilt(path: Path = WEIGHTS):
    """The trained ViltForQuestionAnswering (eval mode) and its ViltProcessor."""
    tokenizer = scene_tokenizer()
    return load_weights(build_scene_vilt(tokenizer), path, __name__), scene_vilt_processor(tokenizer)


if __name__ == "__main__":
    recipe_main(train_scene_vilt, "Reproduce the scene ViLT's weights.")
