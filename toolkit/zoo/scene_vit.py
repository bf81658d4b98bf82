"""A stock timm VisionTransformer trained to name the shape of a scene's largest object.

The decision has a known cause, the largest object, whose mask is the ground truth of its explanations. It
needs both what the objects are and which one is largest, which a tiny ViT from scratch learns slowly: the
recipe draws 6,000 batches from 16,000 scenes, half of them mirrored. The other zoo models that see images
start their vision side from this ViT (:func:`start_from_scene_vit`).
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

TASK = "largest_shape"
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
    """Share of scenes whose largest object's shape the model names."""
    predictions = torch.cat([model(scene_pixels(chunk)).argmax(-1) for chunk in batched(batch, 256)])
    return float((predictions == labels_of(batch)).float().mean())


def train_scene_vit(steps: int = 6000, train_scenes: int = 16000, batch_size: int = 64, lr: float = 1e-3,
                    seed: int = 0, out: Path = WEIGHTS, validation_scenes: int = VALIDATION_SCENES) -> float:
    """Train from scratch (seeded), save the weights and return the held-out accuracy.

    Half the scenes of a batch are mirrored left to right: the largest object keeps its size and shape."""
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


def start_from_scene_vit(model: torch.nn.Module, layout: dict[str, str | tuple[str, str, str]],
                         path: Path = WEIGHTS, patch_bias_into: str | None = None) -> None:
    """Copy the trained scene ViT's weights into another ViT-style model's vision side, as ViLT, image captioners
    and LiT-style CLIP variants start from a pretrained ViT; what the ViT does not hold (text, heads) keeps its
    initialisation.

    ``layout`` maps a timm name prefix (``{i}`` standing for a block's index) to the receiving model's; timm's
    fused ``attn.qkv`` maps to three names (query, key, value); tensors take the receiving shapes. Every weight
    of the ViT but its head is copied. A model whose patch projection has no bias (CLIP) names its position
    embedding in ``patch_bias_into``: the bias is added to every patch position, which sums to the same tokens."""
    import re

    patterns = [(re.compile(re.escape(source).replace(r"\{i\}", r"(\d+)") + r"(\.weight|\.bias|)$"), target)
                for source, target in layout.items()]
    weights = {}
    for name, tensor in load_weights(build_scene_vit(), path, __name__).state_dict().items():
        if name.startswith("head."):
            continue
        match, target = next(((m, t) for pattern, t in patterns if (m := pattern.match(name))), (None, None))
        if match is None:
            raise KeyError(f"the layout does not place the scene ViT's {name}")
        index, suffix = match.groups() if match.re.groups == 2 else (None, match.group(1))
        targets = target if isinstance(target, tuple) else (target,)
        for part, receiver in zip(tensor.chunk(len(targets)), targets):
            weights[receiver.format(i=index) + suffix] = part
    receiving = model.state_dict()
    if patch_bias_into is not None:
        bias = weights.pop(layout["patch_embed.proj"] + ".bias")
        weights[patch_bias_into] = weights[patch_bias_into].clone()
        weights[patch_bias_into][..., 1:, :] += bias  # every token but the [CLS]
    weights = {name: tensor.reshape(receiving[name].shape) if name in receiving else tensor
               for name, tensor in weights.items()}
    unexpected = model.load_state_dict(weights, strict=False).unexpected_keys
    if unexpected:
        raise KeyError(f"the layout names weights the model lacks: {unexpected}")


if __name__ == "__main__":
    recipe_main(train_scene_vit, "Reproduce the scene ViT's weights.")
