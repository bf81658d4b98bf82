"""What every recipe of the zoo shares: the scene world they are trained on, its tensors, the scene
vocabulary's tokenizer, one training loop, and how weights are stored.

All models see 64x64 scenes cut into 8x8 patches (an 8x8 grid: fine enough to tell objects apart,
few enough tokens to train on two CPU cores in minutes). Scenes come from three disjoint seeds:
training, validation (the accuracy stored with the weights) and benchmark.
"""
from __future__ import annotations

import json
import math
import time
import weakref
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn as nn

from ..errors import ModelLoadError
from ..scenes import RELATIONS, WORDS, Scene, SceneConfig, SceneGenerator, SceneObject

IMAGE_SIZE = 64
PATCH_SIZE = 8
MEAN = STD = (0.5, 0.5, 0.5)
TRAIN_SEED, VALIDATION_SEED, BENCHMARK_SEED = 1, 2, 3
VALIDATION_SCENES = 500
WEIGHTS_DIR = Path(__file__).with_name("weights")
_SCENE_MODELS: "weakref.WeakSet[nn.Module]" = weakref.WeakSet()  # models loaded from the zoo's weights


def scene_generator() -> SceneGenerator:
    return SceneGenerator(SceneConfig(size=IMAGE_SIZE))


def scenes(n: int, seed: int) -> list[Scene]:
    return list(scene_generator().generate_scenes(n, seed))


def scene_pixels(batch: list[Scene]) -> torch.Tensor:
    """Normalised pixels (N, 3, 64, 64), equal to what every zoo model's processor gives for these scenes."""
    pixels = np.stack([np.asarray(scene.image, dtype=np.float32) / 255.0 for scene in batch]).transpose(0, 3, 1, 2)
    mean, std = (np.asarray(v, dtype=np.float32)[:, None, None] for v in (MEAN, STD))
    return torch.from_numpy((pixels - mean) / std)


SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def scene_tokenizer():
    """A BERT WordPiece tokenizer whose vocabulary is the scene world's words (:data:`toolkit.scenes.WORDS`).

    The zoo's text models embed and predict those 47 tokens rather than a general 30,522-token vocabulary,
    which makes them several times faster to train and smaller to ship. A word outside it reads as [UNK]."""
    import tempfile

    from transformers import BertTokenizerFast

    with tempfile.TemporaryDirectory() as folder:
        vocab = Path(folder) / "vocab.txt"
        vocab.write_text("\n".join(SPECIAL_TOKENS + WORDS) + "\n", encoding="utf-8")
        return BertTokenizerFast(str(vocab))


def fit(model: nn.Module, loss_of_step: Callable[[torch.Generator], torch.Tensor], steps: int, lr: float,
        seed: int, desc: str, warmup_share: float = 0.1, weight_decay: float = 0.05) -> None:
    """AdamW with linear warm-up then cosine decay; ``loss_of_step(generator)`` draws its own batch from a
    generator seeded with ``seed``; the progress bar shows the smoothed loss. Recipes also seed torch's
    global generator before building the model. Training runs on one thread: these small models train
    chaotically and another thread count sums in another order (two scene ViT runs that differed in thread
    count, and in 5,000 against 6,000 steps, ended at 0.60 and 0.91 held-out accuracy); on one thread a
    recipe gives the same weights each time on a given machine and torch version."""
    from tqdm.auto import tqdm

    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    warmup = max(1, int(warmup_share * steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, factor)
    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    smoothed = math.nan
    try:
        with tqdm(range(steps), desc=desc) as progress:
            for _ in progress:
                loss = loss_of_step(generator)
                optimiser.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimiser.step()
                schedule.step()
                smoothed = loss.item() if math.isnan(smoothed) else 0.95 * smoothed + 0.05 * loss.item()
                progress.set_postfix(loss=f"{smoothed:.3f}")
    finally:
        torch.set_num_threads(threads)
    model.eval()


def random_batch(size: int, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randint(size, (min(batch_size, size),), generator=generator)


def save_weights(model: nn.Module, path: Path, recipe: dict[str, Any],
                 accuracy_of: Callable[[nn.Module], float]) -> float:
    """Store half-precision safetensors (half the size; tied weights once) with the recipe's arguments and
    the held-out accuracy, measured on the model as it will be loaded (half precision, back in float32)."""
    import copy

    from safetensors.torch import save_model

    shipped = copy.deepcopy(model).half()
    accuracy = accuracy_of(copy.deepcopy(shipped).float().eval())
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"accuracy": f"{accuracy:.4f}", "recipe": json.dumps(recipe, sort_keys=True)}
    save_model(shipped, str(path), metadata=metadata)
    return accuracy


def load_weights(model: nn.Module, path: Path, recipe_module: str) -> nn.Module:
    """Fill ``model`` (float32) from the shipped weights; eval mode."""
    from safetensors.torch import load_model

    if not path.is_file():
        raise ModelLoadError(f"The zoo weights {path} are missing; rebuild them with `python -m {recipe_module}`.")
    load_model(model, str(path))
    _SCENE_MODELS.add(model)
    return model.eval()


def is_scene_model(model: nn.Module) -> bool:
    """Whether ``model`` (or a model it wraps) was loaded from the zoo, i.e. trained on 64x64 scenes only."""
    return any(module in _SCENE_MODELS for module in model.modules())


def stored_metadata(path: Path) -> dict[str, Any]:
    """The accuracy and recipe stored with a model's weights."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        metadata = handle.metadata() or {}
    return {"accuracy": float(metadata.get("accuracy", "nan")), "recipe": json.loads(metadata.get("recipe", "{}"))}


def recipe_main(train: Callable[..., float], description: str) -> None:
    """The body of every ``python -m toolkit.zoo.<model>`` entry point: one option per argument of ``train``."""
    import argparse
    import inspect

    parser = argparse.ArgumentParser(description=description)
    for name, parameter in inspect.signature(train).parameters.items():
        parser.add_argument("--" + name.replace("_", "-"), type=type(parameter.default), default=parameter.default)
    options = vars(parser.parse_args())
    start = time.time()
    accuracy = train(**options)
    out = Path(options["out"])
    print(f"held-out accuracy {accuracy:.3f} after {time.time() - start:.0f}s; "
          f"weights ({out.stat().st_size / 1e6:.2f} MB) in {out}")


def batched(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def named_in_caption(caption: str) -> tuple[tuple[str, str], tuple[str, str]] | None:
    """The (colour, shape) of the subject and of the reference of a caption of the scenes' form ("a red circle
    left of a blue square"), or None for a caption of another form."""
    words = caption.split()
    if len(words) < 7 or words[0] != "a" or words[-3] != "a" or " ".join(words[3:-3]) not in RELATIONS:
        return None
    return (words[1], words[2]), (words[-2], words[-1])


def caption_objects(scene: Scene, caption: str) -> tuple[SceneObject, SceneObject] | None:
    """The scene's objects a caption names (subject, reference), or None when it names one the scene lacks."""
    named = named_in_caption(caption)
    by_name = {(obj.colour, obj.shape): obj for obj in scene.objects}
    if named is None or any(name not in by_name for name in named):
        return None
    return by_name[named[0]], by_name[named[1]]


def caption_word_objects(scene: Scene, caption: str) -> dict[int, SceneObject]:
    """The object each colour or shape word of a caption of the scenes' form names, by the word's position in
    ``caption.split()`` ("a red circle left of a blue square": 1 and 2 the circle, the last two the square);
    empty when the caption names an object the scene lacks or has another form."""
    objects = caption_objects(scene, caption)
    if objects is None:
        return {}
    subject, reference = objects
    last = len(caption.split()) - 1
    return {1: subject, 2: subject, last - 1: reference, last: reference}
