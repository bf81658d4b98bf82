"""What a generated scene holds: the picture, its objects with their masks, and grounded text.

Masks are read-only boolean HxW arrays of the pixels where an object is visible; a question or
label that depends on a single object shares that object's mask instead of copying it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True, eq=False)
class SceneObject:
    """One drawn object. ``centre`` is the centroid (x, y) of its visible pixels, in pixel units,
    and ``bbox`` is (left, top, right, bottom) of those pixels, right and bottom exclusive."""

    id: int
    shape: str
    colour: str
    rgb: tuple[int, int, int]
    size: str
    extent: int
    texture: str
    centre: tuple[float, float]
    bbox: tuple[int, int, int, int]
    mask: np.ndarray

    @property
    def area(self) -> int:
        """Visible pixels."""
        return int(self.mask.sum())


@dataclass(frozen=True, eq=False)
class Question:
    """A VQA question with its answer and the objects the answer depends on.

    ``grounding_words`` are the words of the question that pick those objects out ("triangle" in
    "what colour is the triangle?"): the ground truth for relevance over the question's tokens.
    """

    text: str
    answer: str
    kind: str
    object_ids: tuple[int, ...]
    grounding_words: tuple[str, ...]
    mask: np.ndarray


@dataclass(frozen=True, eq=False)
class Label:
    """An image-level label with the objects that decide it."""

    value: str
    object_ids: tuple[int, ...]
    mask: np.ndarray


@dataclass(frozen=True, eq=False)
class Scene:
    """A generated scene. Captions, questions and labels mention ``objects`` only, never ``distractors``."""

    seed: int | tuple[int, ...]
    image: Image.Image
    background: str
    objects: tuple[SceneObject, ...]
    distractors: tuple[SceneObject, ...]
    captions: tuple[str, ...]
    questions: tuple[Question, ...]
    labels: dict[str, Label]

    @property
    def size(self) -> int:
        """Side of the square image in pixels."""
        return self.image.width


def union_mask(objects: tuple[SceneObject, ...], object_ids: tuple[int, ...]) -> np.ndarray:
    """The visible pixels of the given objects together (the object's own mask when there is one)."""
    if len(object_ids) == 1:
        return objects[object_ids[0]].mask
    mask = np.logical_or.reduce([objects[i].mask for i in object_ids])
    mask.flags.writeable = False
    return mask
