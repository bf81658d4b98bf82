"""A procedurally generated world of scenes with known ground truth: the toolkit's offline default.

Each scene places a few coloured shapes on a plain background and comes with a pixel mask per
object, relational captions, VQA questions that name the objects their answer depends on, and
image-level labels. Nothing is downloaded: a seed is all a scene needs.
"""
from toolkit.scenes.generator import SceneConfig, SceneGenerator, generate_scene, generate_scenes
from toolkit.scenes.scene import Label, Question, Scene, SceneObject
from toolkit.scenes.vocabulary import (
    ANSWERS,
    BACKGROUNDS,
    COLOURS,
    COUNTS,
    LABEL_VALUES,
    MAX_OBJECTS,
    QUESTION_KINDS,
    RELATIONS,
    SHAPES,
    SIZES,
    TEXTURES,
    WORDS,
    YES_NO,
)

__all__ = [
    "ANSWERS", "BACKGROUNDS", "COLOURS", "COUNTS", "LABEL_VALUES", "MAX_OBJECTS", "QUESTION_KINDS",
    "RELATIONS", "SHAPES", "SIZES", "TEXTURES", "WORDS", "YES_NO",
    "Label", "Question", "Scene", "SceneConfig", "SceneGenerator", "SceneObject",
    "generate_scene", "generate_scenes",
]
