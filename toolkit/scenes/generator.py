"""A seeded generator of scenes with known ground truth, in the spirit of CLEVR-XAI.

Everything random is drawn from one ``numpy.random.Generator`` seeded with the scene's seed, in a
fixed order, so a seed always gives the same pixels, masks and text. A layout that breaks a rule
(an object that finds no room, no clearly largest object, no pair far enough apart to relate) is
thrown away and drawn again from the same generator, which keeps that guarantee.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import cv2
import numpy as np
from PIL import Image

from toolkit.errors import ConfigError
from toolkit.scenes.drawing import FILL_SHARES, paint, shape_mask
from toolkit.scenes.language import clear_relations, image_labels, largest_object, write_captions, write_questions
from toolkit.scenes.scene import Scene, SceneObject
from toolkit.scenes.vocabulary import (
    BACKGROUNDS,
    COLOURS,
    DISTRACTOR_EXTENT,
    DISTRACTOR_SHAPES,
    MAX_OBJECTS,
    NEUTRALS,
    SHAPES,
    SIZE_AREAS,
    SIZES,
    TEXTURES,
)

MIN_IMAGE_SIZE = 64  # below this, small shapes are a handful of pixels and stop being recognisable
LARGEST_MARGIN = 1.3  # the largest object has this many times the runner-up's pixels: visibly larger
LAYOUT_ATTEMPTS = 200
POSITION_ATTEMPTS = 60

Seed = int | tuple[int, ...]


@dataclass(frozen=True)
class SceneConfig:
    """How scenes are drawn. Lengths given as ``*_share`` are shares of the image side.

    ``max_occlusion`` is the share of an object's pixels that objects drawn after it may cover; at 0
    objects never touch and are at least ``gap_share`` apart, so each one reads as a separate shape.
    Each object is textured (one of ``textures``) with ``texture_probability``; ``noise_std`` is
    the standard deviation of Gaussian pixel noise in 0-255 units; between ``min_distractors`` and
    ``max_distractors`` specks of clutter are scattered where they touch no object. A pair of
    objects is related in text only when their centroids are ``relation_margin_share`` apart.
    """

    size: int = 224
    min_objects: int = 2
    max_objects: int = 4
    shapes: tuple[str, ...] = SHAPES
    colours: tuple[str, ...] = tuple(COLOURS)
    backgrounds: tuple[str, ...] = tuple(BACKGROUNDS)
    texture_probability: float = 0.0
    noise_std: float = 0.0
    min_distractors: int = 0
    max_distractors: int = 0
    max_occlusion: float = 0.0
    border_share: float = 0.03
    gap_share: float = 0.03
    relation_margin_share: float = 0.1
    textures: tuple[str, ...] = ("stripes", "checks")

    def __post_init__(self) -> None:
        def require(condition: bool, message: str) -> None:
            if not condition:
                raise ConfigError(message)

        require(isinstance(self.size, int) and self.size >= MIN_IMAGE_SIZE,
                f"size must be an int >= {MIN_IMAGE_SIZE}, got {self.size!r}")
        require(2 <= self.min_objects <= self.max_objects <= MAX_OBJECTS,
                f"need 2 <= min_objects <= max_objects <= {MAX_OBJECTS} (captions relate a pair), "
                f"got {self.min_objects} and {self.max_objects}")
        for name, chosen, known in (("shapes", self.shapes, SHAPES), ("colours", self.colours, tuple(COLOURS)),
                                    ("backgrounds", self.backgrounds, tuple(BACKGROUNDS)), ("textures", self.textures, TEXTURES)):
            unknown = sorted(set(chosen) - set(known))
            require(bool(chosen) and not unknown, f"{name} must be a non-empty subset of {known}, unknown: {unknown}")
        require(len(self.shapes) * len(self.colours) >= self.max_objects,
                "too few shapes and colours for max_objects distinct (colour, shape) pairs")
        require(0 <= self.texture_probability <= 1, "texture_probability must lie in [0, 1]")
        require(self.noise_std >= 0, "noise_std must be >= 0")
        require(0 <= self.min_distractors <= self.max_distractors, "need 0 <= min_distractors <= max_distractors")
        require(0 <= self.max_occlusion < 0.5, "max_occlusion must lie in [0, 0.5): more hides what an object is")
        for name in ("border_share", "gap_share", "relation_margin_share"):
            require(0 <= getattr(self, name) < 0.5, f"{name} must lie in [0, 0.5)")


@dataclass
class _Placement:
    """An object's drawing instructions while the layout is being built."""

    shape: str
    colour: str
    rgb: tuple[int, int, int]
    size: str
    extent: int
    texture: str
    full_mask: np.ndarray | None = None


class SceneGenerator:
    """Draws scenes for one :class:`SceneConfig`; ``generate(seed)`` always returns the same scene."""

    def __init__(self, config: SceneConfig | None = None) -> None:
        self.config = config or SceneConfig()
        side = self.config.size
        self._border = max(1, round(self.config.border_share * side))
        self._gap = round(self.config.gap_share * side)
        self._gap_kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * self._gap + 1, 2 * self._gap + 1))
        self._relation_margin = self.config.relation_margin_share * side

    def generate(self, seed: Seed) -> Scene:
        """The scene for ``seed`` (an int, or a tuple of ints such as ``(dataset_seed, index)``)."""
        rng = np.random.default_rng(seed)
        for _ in range(LAYOUT_ATTEMPTS):
            scene = self._try_generate(seed, rng)
            if scene is not None:
                return scene
        raise ConfigError(f"no valid layout in {LAYOUT_ATTEMPTS} attempts: allow fewer or smaller objects, or a larger image")

    def generate_scenes(self, n: int, seed: int) -> Iterator[Scene]:
        """``n`` scenes, lazily; scene i is ``generate((seed, i))``, so datasets with different seeds never share a scene."""
        if n < 0:
            raise ConfigError(f"n must be >= 0, got {n}")
        return (self.generate((seed, index)) for index in range(n))

    def _try_generate(self, seed: Seed, rng: np.random.Generator) -> Scene | None:
        config, side = self.config, self.config.size
        background = str(rng.choice(config.backgrounds))
        placements = self._draw_objects(rng)
        visible: list[np.ndarray] = []
        for index, placement in enumerate(placements):
            if not self._place(placement, list(zip(placements[:index], visible)), rng, self.config.max_occlusion):
                return None
            visible = [mask & ~placement.full_mask for mask in visible] + [placement.full_mask]
        objects = tuple(self._scene_object(i, p, mask) for i, (p, mask) in enumerate(zip(placements, visible)))
        if not self._has_clear_largest(objects) or not clear_relations(objects, self._relation_margin):
            return None

        # Text first, then clutter, then noise: turning texture, distractors or noise on keeps a
        # seed's layout and text, so the same scenes can be compared with and without them.
        captions = write_captions(objects, self._relation_margin, rng)
        questions = write_questions(objects, self._relation_margin, rng)
        neutral = max(NEUTRALS, key=lambda name: np.abs(np.subtract(NEUTRALS[name], BACKGROUNDS[background])).sum())
        distractors = self._draw_distractors(rng, NEUTRALS[neutral], neutral, placements)
        canvas = np.empty((side, side, 3), dtype=np.uint8)
        canvas[:] = BACKGROUNDS[background]
        for placement in distractors + placements:
            paint(canvas, placement.full_mask, placement.rgb, placement.texture, period=max(2, placement.extent // 6))
        if config.noise_std > 0:
            noisy = canvas + rng.normal(0.0, config.noise_std, canvas.shape)
            canvas = np.clip(np.round(noisy), 0, 255).astype(np.uint8)

        first_distractor_id = len(objects)
        return Scene(
            seed=seed,
            image=Image.fromarray(canvas),
            background=background,
            objects=objects,
            distractors=tuple(self._scene_object(first_distractor_id + i, p, p.full_mask) for i, p in enumerate(distractors)),
            captions=captions,
            questions=questions,
            labels=image_labels(objects),
        )

    def _draw_objects(self, rng: np.random.Generator) -> list[_Placement]:
        """Attributes of the scene's objects; (colour, shape) pairs never repeat, so a colour and a shape name any object."""
        config, side = self.config, self.config.size
        count = int(rng.integers(config.min_objects, config.max_objects + 1))
        kinds = [(shape, colour) for shape in config.shapes for colour in config.colours]
        placements = []
        for kind in rng.choice(len(kinds), size=count, replace=False):
            shape, colour = kinds[kind]
            size = str(rng.choice(SIZES))
            area = rng.uniform(*SIZE_AREAS[size]) * side**2
            extent = round(np.sqrt(area / FILL_SHARES[shape]))
            textured = rng.random() < config.texture_probability
            texture = str(rng.choice(config.textures))  # drawn either way, so the stream does not depend on it
            texture = texture if textured else "plain"
            placements.append(_Placement(shape, colour, COLOURS[colour], size, extent, texture))
        return placements

    def _draw_distractors(self, rng: np.random.Generator, rgb: tuple[int, int, int], neutral: str,
                          objects: list[_Placement]) -> list[_Placement]:
        """Specks placed in free space; one that finds no room is left out rather than crowding an object."""
        side = self.config.size
        distractors: list[_Placement] = []
        for _ in range(int(rng.integers(self.config.min_distractors, self.config.max_distractors + 1))):
            low, high = DISTRACTOR_EXTENT
            extent = max(3, round(rng.uniform(low, high) * side))
            speck = _Placement(str(rng.choice(DISTRACTOR_SHAPES)), neutral, rgb, "tiny", extent, "plain")
            if self._place(speck, [(p, p.full_mask) for p in objects + distractors], rng, max_occlusion=0.0):
                distractors.append(speck)
        return distractors

    def _place(self, placement: _Placement, earlier: list[tuple[_Placement, np.ndarray]],
               rng: np.random.Generator, max_occlusion: float) -> bool:
        """Find a spot inside the border where ``placement``, dilated by the gap, leaves every earlier
        object (with its visible pixels) at least ``1 - max_occlusion`` of its pixels; set its position
        and mask. Objects of one colour never overlap, as they would merge into one blob. Measuring
        with the dilated shape keeps the gap between objects that do not overlap and slightly
        overstates the occlusion of those that do."""
        side, extent = self.config.size, placement.extent
        highest = side - self._border - extent
        if highest < self._border:
            return False
        for _ in range(POSITION_ATTEMPTS):
            left, top = (int(v) for v in rng.integers(self._border, highest + 1, size=2))
            mask = shape_mask(placement.shape, left, top, extent, side)
            grown = cv2.dilate(mask.view(np.uint8), self._gap_kernel).view(bool)
            if all(self._keeps_visible(other, visible, grown, placement.colour, max_occlusion) for other, visible in earlier):
                placement.full_mask = mask
                return True
        return False

    @staticmethod
    def _keeps_visible(other: _Placement, visible: np.ndarray, cover: np.ndarray, colour: str, max_occlusion: float) -> bool:
        """Whether ``other`` keeps enough of its pixels once ``cover`` is drawn over it."""
        allowed = 0.0 if other.colour == colour else max_occlusion
        return visible.sum() - (visible & cover).sum() >= (1 - allowed) * other.full_mask.sum()

    @staticmethod
    def _scene_object(object_id: int, placement: _Placement, mask: np.ndarray) -> SceneObject:
        mask = mask.copy()
        mask.flags.writeable = False
        ys, xs = np.nonzero(mask)
        return SceneObject(
            id=object_id,
            shape=placement.shape,
            colour=placement.colour,
            rgb=placement.rgb,
            size=placement.size,
            extent=placement.extent,
            texture=placement.texture,
            centre=(float(xs.mean() + 0.5), float(ys.mean() + 0.5)),
            bbox=(int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1),
            mask=mask,
        )

    @staticmethod
    def _has_clear_largest(objects: tuple[SceneObject, ...]) -> bool:
        largest = largest_object(objects)
        runner_up = max(obj.area for obj in objects if obj is not largest)
        return largest.area >= LARGEST_MARGIN * runner_up


def generate_scene(seed: Seed, size: int = 224, **options) -> Scene:
    """The scene for ``seed``; ``options`` are further :class:`SceneConfig` fields."""
    return SceneGenerator(SceneConfig(size=size, **options)).generate(seed)


def generate_scenes(n: int, seed: int, size: int = 224, **options) -> Iterator[Scene]:
    """``n`` scenes drawn lazily (see :meth:`SceneGenerator.generate_scenes`)."""
    return SceneGenerator(SceneConfig(size=size, **options)).generate_scenes(n, seed)
