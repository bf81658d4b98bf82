"""A stock timm VisionTransformer trained to name the colour of a scene's largest object.

The decision has a known cause, the largest object, whose mask is the ground truth of its explanations.
The colour rather than the shape: at 8x8-pixel patches a tiny ViT from scratch learns "largest_shape" slowly
and unreliably on two CPU cores (held-out accuracy 0.35-0.60 after 1,500-4,000 steps, long plateaus at
chance), while "largest_colour" is learnt in under a thousand steps; both point at the same object.
Recipe: ``python -m toolkit.zoo.scene_vit`` rewrites ``weights/scene_vit.safetensors``.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ..scenes import LABEL_VALUES
from .common import (IMAGE_SIZE, MEAN, PATCH_SIZE, STD, TRAIN_SEED, VALIDATION_SCENES, VALIDATION_SEED,
                     WEIGHTS_DIR, batched, fit, load_weights, random_batch, recipe_main, save_weights, scene_pixels,
                     scenes)

TASK = "largest_colour"
CLASSES = LABEL_VALUES[TASK]
WEIGHTS = WEIGHTS_DIR / "scene_vit.safetensors"


def build_scene_vit():
    """timm's own VisionTransformer class, small, with the data config its transforms are resolved from."""
    from timm.models.vision_transformer import VisionTransformer

    model = VisionTransformer(img_size=IMAGE_SIZE, patch_size=PATCH_SIZE, embed_dim=64, depth=4, num_heads=4,
                              mlp_ratio=2.0, num_classes=len(CLASSES), global_pool="token")
    model.pretrained_cfg = {"input_size": (3, IMAGE_SIZE, IMAGE_SIZE), "mean": MEAN, "std": STD, "crop_pct": 1.0,
                            "interpolation": "bilinear", "num_classes": len(CLASSES), "label_names": list(CLASSES)}
    return model


def labels_of(batch) -> torch.Tensor:
    return torch.tensor([CLASSES.index(scene.labels[TASK].value) for scene in batch])


@torch.no_grad()
def accuracy(model, batch) -> float:
    """Share of scenes whose largest object's colour the model names."""
    predictions = torch.cat([model(scene_pixels(chunk)).argmax(-1) for chunk in batched(batch, 256)])
    return float((predictions == labels_of(batch)).float().mean())


def train_scene_vit(steps: int = 1200, train_scenes: int = 6000, batch_size: int = 64, lr: float = 1e-3,
                    seed: int = 0, out: Path = WEIGHTS, validation_scenes: int = VALIDATION_SCENES) -> float:
    """Train from scratch (seeded), save the weights and return the held-out accuracy.

    Half the scenes of a batch are mirrored left to right: the largest object keeps its size and colour."""
    train = scenes(train_scenes, TRAIN_SEED)
    pixels, labels = scene_pixels(train), labels_of(train)
    torch.manual_seed(seed)
    model = build_scene_vit()

    def loss_of_step(generator: torch.Generator) -> torch.Tensor:
        index = random_batch(len(train), batch_size, generator)
        images = pixels[index]
        mirrored = torch.rand(len(index), generator=generator) < 0.5
        images = torch.where(mirrored[:, None, None, None], images.flip(-1), images)
        return F.cross_entropy(model(images), labels[index])

    fit(model, loss_of_step, steps, lr, seed, desc="scene ViT")
    validation = scenes(validation_scenes, VALIDATION_SEED)
    recipe = dict(steps=steps, train_scenes=train_scenes, batch_size=batch_size, lr=lr, seed=seed)
    return save_weights(model, out, recipe, lambda shipped: accuracy(shipped, validation))


def load_scene_vit(path: Path = WEIGHTS):
    """The trained model (eval mode) and its timm preprocessing transform."""
    from timm.data import create_transform, resolve_data_config

    model = load_weights(build_scene_vit(), path, __name__)
    return model, create_transform(**resolve_data_config({}, model=model))


if __name__ == "__main__":
    recipe_main(train_scene_vit, "Reproduce the scene ViT's weights.")
