"""Captions, questions and labels written from a scene's objects, true by construction.

Spatial relations compare the centroids of visible pixels along the axis where the two objects are
furthest apart, and a pair is only described when that distance is at least ``margin`` pixels, so
no relation is a judgement call. A question's false relation is the opposite one, which then fails
by the same margin.
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from toolkit.scenes.scene import Label, Question, SceneObject, union_mask
from toolkit.scenes.vocabulary import OPPOSITE_RELATION, SHAPE_PLURALS


def spatial_relation(subject: SceneObject, reference: SceneObject, margin: float) -> str | None:
    """How ``subject`` lies relative to ``reference`` ("left of", ...), or None when too close to say."""
    dx = subject.centre[0] - reference.centre[0]
    dy = subject.centre[1] - reference.centre[1]
    if max(abs(dx), abs(dy)) < margin:
        return None
    if abs(dx) >= abs(dy):
        return "left of" if dx < 0 else "right of"
    return "above" if dy < 0 else "below"


def clear_relations(objects: tuple[SceneObject, ...], margin: float) -> list[tuple[SceneObject, str, SceneObject]]:
    """Every pair (a, b) with a < b whose relation is clear, as (a, relation of a to b, b)."""
    relations = []
    for i, subject in enumerate(objects):
        for reference in objects[i + 1:]:
            relation = spatial_relation(subject, reference, margin)
            if relation is not None:
                relations.append((subject, relation, reference))
    return relations


def referring_words(obj: SceneObject, objects: tuple[SceneObject, ...]) -> tuple[str, ...]:
    """The fewest words that pick ``obj`` out: its shape when no other object shares it, else colour and shape.

    The generator never repeats a (colour, shape) pair, so colour and shape always suffice.
    """
    if sum(other.shape == obj.shape for other in objects) == 1:
        return (obj.shape,)
    return (obj.colour, obj.shape)


def write_captions(objects: tuple[SceneObject, ...], margin: float, rng: np.random.Generator) -> tuple[str, ...]:
    """One caption per clearly related pair, e.g. "a red circle left of a blue square"; which of the
    two objects comes first is drawn at random so that every relation word occurs."""
    captions = []
    for subject, relation, reference in clear_relations(objects, margin):
        if rng.random() < 0.5:
            subject, relation, reference = reference, OPPOSITE_RELATION[relation], subject
        captions.append(f"a {subject.colour} {subject.shape} {relation} a {reference.colour} {reference.shape}")
    return tuple(captions)


def write_questions(objects: tuple[SceneObject, ...], margin: float, rng: np.random.Generator) -> tuple[Question, ...]:
    """Questions about attributes, counts and relations, each grounded in the objects it needs.

    Attribute questions never give their answer away: colour is asked of an object named by shape
    alone, and shape of an object named by colour alone, so each is asked only when that name is unique.
    """
    questions = []

    def ask(text: str, answer: str, kind: str, grounded: tuple[SceneObject, ...], words: tuple[str, ...]) -> None:
        ids = tuple(obj.id for obj in grounded)
        questions.append(Question(text, answer, kind, ids, words, union_mask(objects, ids)))

    colour_counts = Counter(obj.colour for obj in objects)
    shape_counts = Counter(obj.shape for obj in objects)
    for obj in objects:
        words = referring_words(obj, objects)
        name = " ".join(words)
        if shape_counts[obj.shape] == 1:
            ask(f"what colour is the {obj.shape}?", obj.colour, "colour", (obj,), (obj.shape,))
        if colour_counts[obj.colour] == 1:
            ask(f"what shape is the {obj.colour} object?", obj.shape, "shape", (obj,), (obj.colour,))
        ask(f"what size is the {name}?", obj.size, "size", (obj,), words)

    for shape in sorted(shape_counts, key=list(SHAPE_PLURALS).index):
        plural = SHAPE_PLURALS[shape]
        counted = tuple(obj for obj in objects if obj.shape == shape)
        ask(f"how many {plural} are there?", str(len(counted)), "count", counted, (plural,))
    ask("how many objects are there?", str(len(objects)), "count", objects, ("objects",))

    for subject, relation, reference in clear_relations(objects, margin):
        is_true = rng.random() < 0.5
        stated = relation if is_true else OPPOSITE_RELATION[relation]
        subject_words, reference_words = referring_words(subject, objects), referring_words(reference, objects)
        ask(
            f"is the {' '.join(subject_words)} {stated} the {' '.join(reference_words)}?",
            "yes" if is_true else "no",
            "relation",
            (subject, reference),
            subject_words + reference_words,
        )
    return tuple(questions)


def largest_object(objects: tuple[SceneObject, ...]) -> SceneObject:
    """The object with the most visible pixels."""
    return max(objects, key=lambda obj: obj.area)


def image_labels(objects: tuple[SceneObject, ...]) -> dict[str, Label]:
    """The image-level labels of :data:`~toolkit.scenes.vocabulary.LABEL_VALUES`, each with its objects."""
    largest = largest_object(objects)
    all_ids = tuple(obj.id for obj in objects)
    largest_label = dict(object_ids=(largest.id,), mask=largest.mask)
    return {
        "largest_shape": Label(largest.shape, **largest_label),
        "largest_colour": Label(largest.colour, **largest_label),
        "count": Label(str(len(objects)), all_ids, union_mask(objects, all_ids)),
    }
