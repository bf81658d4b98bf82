"""The scene generator: deterministic, and every mask, caption, question and label true to the pixels."""
import re

import numpy as np
import pytest

from toolkit.errors import ConfigError
from toolkit.scenes import (
    ANSWERS,
    BACKGROUNDS,
    COLOURS,
    LABEL_VALUES,
    QUESTION_KINDS,
    SHAPES,
    SceneConfig,
    SceneGenerator,
    generate_scene,
    generate_scenes,
)

CAPTION = re.compile(r"a (\w+) (\w+) (left of|right of|above|below) a (\w+) (\w+)")


def mask_centroid(mask):
    ys, xs = np.nonzero(mask)
    return xs.mean() + 0.5, ys.mean() + 0.5


def holds(relation, subject, reference):
    """Whether ``relation`` holds between two masks' centroids (image y grows downwards)."""
    (sx, sy), (rx, ry) = mask_centroid(subject.mask), mask_centroid(reference.mask)
    return {"left of": sx < rx, "right of": sx > rx, "above": sy < ry, "below": sy > ry}[relation]


def touches(a, b):
    """Whether a pixel of mask ``a`` is, or is 4-adjacent to, a pixel of mask ``b``."""
    grown = a.copy()
    grown[1:] |= a[:-1]
    grown[:-1] |= a[1:]
    grown[:, 1:] |= a[:, :-1]
    grown[:, :-1] |= a[:, 1:]
    return bool((grown & b).any())


def find(scene, colour, shape):
    (obj,) = [o for o in scene.objects if o.colour == colour and o.shape == shape]
    return obj


@pytest.fixture(scope="module")
def plain_scenes():
    return list(generate_scenes(40, seed=1, size=96, max_objects=5, max_distractors=3))


def test_same_seed_gives_identical_scene():
    first, again, other = generate_scene(7), generate_scene(7), generate_scene(8)
    assert np.array_equal(np.asarray(first.image), np.asarray(again.image))
    assert all(np.array_equal(a.mask, b.mask) for a, b in zip(first.objects, again.objects))
    assert first.captions == again.captions
    assert [(q.text, q.answer) for q in first.questions] == [(q.text, q.answer) for q in again.questions]
    assert not np.array_equal(np.asarray(first.image), np.asarray(other.image))


def test_generate_scenes_is_keyed_by_seed_and_index():
    scenes = list(generate_scenes(3, seed=5, size=64))
    assert [s.seed for s in scenes] == [(5, 0), (5, 1), (5, 2)]
    direct = SceneGenerator(SceneConfig(size=64)).generate((5, 2))
    assert np.array_equal(np.asarray(scenes[2].image), np.asarray(direct.image))
    other_dataset = next(generate_scenes(1, seed=6, size=64))
    assert not np.array_equal(np.asarray(scenes[0].image), np.asarray(other_dataset.image))


def test_masks_are_exactly_the_painted_pixels(plain_scenes):
    for scene in plain_scenes:
        pixels = np.asarray(scene.image)
        assert pixels.shape == (96, 96, 3) and scene.image.mode == "RGB"
        painted = np.zeros((96, 96), dtype=int)
        for obj in scene.objects + scene.distractors:
            assert obj.mask.shape == (96, 96) and obj.mask.dtype == bool and obj.mask.any()
            assert (pixels[obj.mask] == obj.rgb).all()
            painted += obj.mask
        assert painted.max() == 1, "masks overlap"
        assert (pixels[painted == 0] == BACKGROUNDS[scene.background]).all()


def test_objects_sit_inside_the_border_and_apart(plain_scenes):
    border = round(0.03 * 96)
    for scene in plain_scenes:
        for obj in scene.objects:
            left, top, right, bottom = obj.bbox
            assert border <= left < right <= 96 - border and border <= top < bottom <= 96 - border
            ys, xs = np.nonzero(obj.mask)
            assert (left, top, right, bottom) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            assert obj.centre == pytest.approx(mask_centroid(obj.mask))
        # Without occlusion, no two objects touch, and distractors keep clear of them too.
        for a in scene.objects:
            assert not any(touches(a.mask, b.mask) for b in scene.objects + scene.distractors if b is not a)


def test_occlusion_keeps_masks_to_visible_pixels():
    occluded_squares = 0
    for scene in generate_scenes(60, seed=2, size=96, max_objects=5, max_occlusion=0.3):
        pixels = np.asarray(scene.image)
        assert sum(o.mask.astype(int) for o in scene.objects).max() == 1
        for obj in scene.objects:
            assert (pixels[obj.mask] == obj.rgb).all()
            if obj.shape == "square":  # a square's unoccluded area is known exactly
                assert 0.7 * obj.extent**2 <= obj.area <= obj.extent**2
                occluded_squares += obj.area < obj.extent**2
    assert occluded_squares > 0, "max_occlusion > 0 never produced an occlusion"


def test_same_colour_objects_never_touch_even_with_occlusion():
    """Overlapping objects of one colour would merge into one blob with meaningless masks."""
    overlaps = 0
    for scene in generate_scenes(60, seed=3, size=96, max_objects=6, max_occlusion=0.4, colours=("red", "blue")):
        for a in scene.objects:
            for b in scene.objects:
                if a is not b and touches(a.mask, b.mask):
                    assert a.colour != b.colour
                    overlaps += 1
    assert overlaps > 0


def test_captions_are_true_of_the_mask_centroids(plain_scenes):
    for scene in plain_scenes:
        assert scene.captions
        for caption in scene.captions:
            colour_a, shape_a, relation, colour_b, shape_b = CAPTION.fullmatch(caption).groups()
            assert holds(relation, find(scene, colour_a, shape_a), find(scene, colour_b, shape_b)), caption


def test_questions_agree_with_the_objects(plain_scenes):
    for scene in plain_scenes:
        objects = scene.objects
        for q in scene.questions:
            assert q.kind in QUESTION_KINDS and q.answer in ANSWERS
            assert all(word in q.text.rstrip("?").split() for word in q.grounding_words)
            grounded = [objects[i] for i in q.object_ids]
            assert np.array_equal(q.mask, np.logical_or.reduce([o.mask for o in grounded]))
            if q.kind == "colour":  # "what colour is the triangle?": the only triangle
                (obj,) = grounded
                assert [o for o in objects if o.shape in q.text.split()[-1]] == [obj]
                assert q.answer == obj.colour
            elif q.kind == "shape":  # "what shape is the red object?": the only red object
                (obj,) = grounded
                assert [o for o in objects if o.colour == q.text.split()[-2]] == [obj]
                assert q.answer == obj.shape
            elif q.kind == "size":
                (obj,) = grounded
                assert q.answer == obj.size and obj.shape in q.text
            elif q.kind == "count":
                word = q.text.split()[2]
                expected = [o for o in objects if word == "objects" or o.shape + ("es" if o.shape == "cross" else "s") == word]
                assert grounded == expected and q.answer == str(len(expected))
            else:
                subject, reference = grounded
                relation = re.search(r"(left of|right of|above|below)", q.text).group(1)
                assert q.answer == ("yes" if holds(relation, subject, reference) else "no"), q.text


def test_every_object_question_kind_occurs(plain_scenes):
    kinds = {q.kind for s in plain_scenes for q in s.questions}
    answers = {q.answer for s in plain_scenes for q in s.questions}
    assert kinds == set(QUESTION_KINDS)
    assert {"yes", "no", "small", "large"} <= answers


def test_labels_name_the_largest_object_and_the_count(plain_scenes):
    for scene in plain_scenes:
        areas = [o.mask.sum() for o in scene.objects]
        largest = scene.objects[int(np.argmax(areas))]
        assert sorted(areas)[-1] >= 1.3 * sorted(areas)[-2]
        assert scene.labels["largest_shape"].value == largest.shape
        assert scene.labels["largest_colour"].value == largest.colour
        assert scene.labels["largest_shape"].object_ids == (largest.id,)
        assert scene.labels["count"].value == str(len(scene.objects))
        assert scene.labels["count"].object_ids == tuple(range(len(scene.objects)))
        for name, label in scene.labels.items():
            assert label.value in LABEL_VALUES[name]


def test_size_words_order_areas(plain_scenes):
    for scene in plain_scenes:
        small = [o.area for o in scene.objects if o.size == "small"]
        large = [o.area for o in scene.objects if o.size == "large"]
        if small and large:
            assert max(small) < min(large)


def test_distractors_are_never_mentioned(plain_scenes):
    scenes_with_clutter = [s for s in plain_scenes if s.distractors]
    assert scenes_with_clutter
    for scene in scenes_with_clutter:
        clutter_ids = {d.id for d in scene.distractors}
        assert all(not clutter_ids & set(q.object_ids) for q in scene.questions)
        assert all(not clutter_ids & set(label.object_ids) for label in scene.labels.values())
        for d in scene.distractors:
            assert d.shape not in SHAPES and d.colour not in COLOURS
        words = {w for text in scene.captions + tuple(q.text for q in scene.questions) for w in text.rstrip("?").split()}
        assert not words & {"dot", "dash", "white", "black", "tiny"}


@pytest.mark.parametrize("seed", range(4, 8))
def test_texture_clutter_and_noise_keep_the_layout_and_text(seed):
    plain = generate_scene(seed, size=96)
    textured = generate_scene(seed, size=96, texture_probability=1.0)
    cluttered = generate_scene(seed, size=96, max_distractors=6, min_distractors=1)
    noisy = generate_scene(seed, size=96, noise_std=12.0)
    assert all(o.texture != "plain" for o in textured.objects) and cluttered.distractors
    for variant in (textured, cluttered, noisy):
        assert variant.captions == plain.captions
        assert [(q.text, q.answer) for q in variant.questions] == [(q.text, q.answer) for q in plain.questions]
        assert all(np.array_equal(a.mask, b.mask) for a, b in zip(plain.objects, variant.objects))
    for obj in textured.objects:
        colours = np.unique(np.asarray(textured.image)[obj.mask], axis=0)
        assert len(colours) == 2 and tuple(colours.max(axis=0)) == obj.rgb  # the colour and its shade
    difference = np.asarray(noisy.image).astype(int) - np.asarray(plain.image)
    assert 6 < difference.std() < 18


def test_vocabularies_are_small_and_answers_unique():
    assert len(SHAPES) <= 5 and len(COLOURS) <= 6
    assert len(ANSWERS) == len(set(ANSWERS))


@pytest.mark.parametrize("options", [
    dict(size=16),
    dict(max_objects=7),
    dict(min_objects=1),
    dict(min_objects=4, max_objects=3),
    dict(shapes=("hexagon",)),
    dict(colours=()),
    dict(max_occlusion=0.6),
    dict(texture_probability=2.0),
    dict(min_distractors=3, max_distractors=2),
])
def test_bad_configs_are_refused(options):
    with pytest.raises(ConfigError):
        SceneConfig(**options)
