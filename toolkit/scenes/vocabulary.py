"""The fixed vocabularies of the scene world.

Models trained on generated scenes need label sets that do not depend on which scenes were drawn,
so every word a caption, question, answer or label can contain is fixed here. The sets are small
(four shapes, five colours, two sizes) so that tiny models can learn them on a CPU in minutes.
"""
from __future__ import annotations

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
SHAPE_PLURALS: dict[str, str] = {"circle": "circles", "square": "squares", "triangle": "triangles", "cross": "crosses"}

# Saturated hues far apart from each other and from both backgrounds (checked by eye on rendered scenes).
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 45, 45),
    "green": (40, 170, 70),
    "blue": (45, 100, 235),
    "yellow": (240, 205, 30),
    "purple": (160, 70, 210),
}

# Size words name a range of areas, as shares of the image's area; a shape's extent (the side of
# the square it is drawn in) follows from its area, so a large triangle and a large square cover
# about as many pixels. Every large shape covers at least twice the pixels of every small one.
SIZES: tuple[str, ...] = ("small", "large")
SIZE_AREAS: dict[str, tuple[float, float]] = {"small": (0.11**2, 0.14**2), "large": (0.20**2, 0.25**2)}

BACKGROUNDS: dict[str, tuple[int, int, int]] = {"dark": (40, 40, 46), "light": (205, 205, 200)}

TEXTURES: tuple[str, ...] = ("plain", "stripes", "checks")

# Distractors are clutter: tiny specks in a neutral colour that no caption, question or label mentions.
DISTRACTOR_SHAPES: tuple[str, ...] = ("dot", "dash")
DISTRACTOR_EXTENT: tuple[float, float] = (0.025, 0.045)
NEUTRALS: dict[str, tuple[int, int, int]] = {"white": (240, 240, 240), "black": (15, 15, 15)}

RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
OPPOSITE_RELATION: dict[str, str] = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}

MAX_OBJECTS = 6
COUNTS: tuple[str, ...] = tuple(str(n) for n in range(1, MAX_OBJECTS + 1))
YES_NO: tuple[str, ...] = ("yes", "no")

QUESTION_KINDS: tuple[str, ...] = ("colour", "shape", "size", "count", "relation")
# Every answer any question can have, in a fixed order: the output classes of a VQA head.
ANSWERS: tuple[str, ...] = SHAPES + tuple(COLOURS) + SIZES + COUNTS + YES_NO

# Every word a caption or question can contain, "?" included: the whole vocabulary of the zoo's text models.
TEMPLATE_WORDS: tuple[str, ...] = ("a", "the", "what", "is", "are", "there", "how", "many", "colour", "shape", "size",
                                   "object", "objects", "?")
WORDS: tuple[str, ...] = tuple(dict.fromkeys(
    TEMPLATE_WORDS + tuple(word for relation in RELATIONS for word in relation.split()) + SHAPES
    + tuple(SHAPE_PLURALS.values()) + tuple(COLOURS) + SIZES + COUNTS + YES_NO))

# Image-level labels and the values each can take: the output classes of an image classifier.
LABEL_VALUES: dict[str, tuple[str, ...]] = {
    "largest_shape": SHAPES,
    "largest_colour": tuple(COLOURS),
    "count": COUNTS,
}
