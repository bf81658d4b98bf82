"""Ground truth for the built-in models: the scenes the demo drew, recognised by their pixels.

A scene drawn by "New scene" or shown as an example is remembered by a hash of its pixels, so whenever the
image a request explains is exactly that scene (also downloaded and uploaded again as PNG), the demo knows its
objects' masks: the mask of what the answer, caption or label depends on is drawn as an outline and scored.
"""
from __future__ import annotations

import hashlib
import random
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..evaluation.metrics import pointing_game, relevance_mass_accuracy
from ..scenes import Scene
from ..zoo.common import caption_objects, caption_word_objects, scene_generator

EXAMPLE_SEEDS = (7, 11, 23, 42, 101)


def pixel_key(image: Image.Image | np.ndarray) -> str:
    pixels = np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
    return hashlib.sha256(str(pixels.shape).encode() + pixels.tobytes()).hexdigest()


@dataclass(frozen=True)
class GroundTruth:
    """A mask of what a decision depends on, and how an explanation's map scores against it."""

    mask: np.ndarray  # H x W bool, at the scene's resolution
    what: str  # e.g. "the largest object (a red triangle)"

    def scores(self, heatmap: np.ndarray) -> tuple[float, float]:
        """(share of the positive relevance inside the mask, pointing game: 1 hit, 0 miss, between for ties)."""
        return relevance_mass_accuracy(heatmap, self.mask), pointing_game(heatmap, self.mask)

    @property
    def chance(self) -> float:
        """The mass a uniform map puts inside the mask."""
        return float(self.mask.mean())


def _named(obj) -> str:
    return f"a {obj.colour} {obj.shape}"


class SceneBook:
    """The scenes drawn so far (bounded), by pixel hash; thread-safe."""

    def __init__(self, capacity: int = 2048):
        self._generator = scene_generator()
        self._scenes: OrderedDict[str, int] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def draw(self, seed: int | None = None) -> Scene:
        """The scene of ``seed`` (a fresh random one if None), remembered."""
        seed = secrets.randbelow(2**31) if seed is None else seed
        scene = self._generator.generate(seed)
        with self._lock:
            self._scenes[pixel_key(scene.image)] = seed
            while len(self._scenes) > self._capacity:
                self._scenes.popitem(last=False)
        return scene

    def find(self, image: Image.Image) -> Scene | None:
        """The remembered scene whose pixels ``image`` has exactly, if any."""
        with self._lock:
            seed = self._scenes.get(pixel_key(image))
        return None if seed is None else self._generator.generate(seed)


def largest_object_truth(scene: Scene) -> GroundTruth:
    label = scene.labels["largest_shape"]
    largest = scene.objects[label.object_ids[0]]
    return GroundTruth(label.mask, f"the largest object ({_named(largest)})")


def caption_truth(scene: Scene, caption: str) -> GroundTruth | None:
    """The two objects a caption of the scenes' form names, when the scene holds both."""
    objects = caption_objects(scene, caption.strip().lower())
    if objects is None:
        return None
    subject, reference = objects
    return GroundTruth(subject.mask | reference.mask, f"the objects the caption names ({_named(subject)}, "
                                                      f"{_named(reference)})")


def question_truth(scene: Scene, question: str) -> GroundTruth | None:
    """The objects the answer to one of the scene's own questions depends on."""
    wanted = " ".join(question.lower().split())
    for item in scene.questions:
        if item.text == wanted:
            names = ", ".join(_named(scene.objects[i]) for i in item.object_ids)
            return GroundTruth(item.mask, f"the objects the answer depends on ({names}; true answer: {item.answer})")
    return None


def caption_step_truths(scene: Scene, caption: str, tokens: list[str]) -> dict[int, GroundTruth]:
    """Per caption step, the object its colour or shape word names, when each token is one word."""
    if tokens != caption.split():
        return {}
    return {position: GroundTruth(obj.mask, f"the object “{tokens[position]}” belongs to ({_named(obj)})")
            for position, obj in caption_word_objects(scene, caption).items()}


def foil_caption(scene: Scene, rng: random.Random) -> str:
    """A caption of the scene with one object's colour or shape swapped for one the scene lacks."""
    from ..zoo.scene_clip import foil

    return foil(scene, scene.captions[0], rng)
