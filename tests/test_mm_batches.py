"""One API for every family: ``batch_size`` and ``progress`` cut image-text inputs into passes of whole pairs, and
the explanations are those of one pass, in the same order."""
from __future__ import annotations

import numpy as np
import pytest

from toolkit import Explainer, InputError
from toolkit.scenes import SceneGenerator
from toolkit.zoo import load


@pytest.fixture(scope="module")
def scenes():
    return [scene.image for scene in SceneGenerator().generate_scenes(3, seed=11)]


def same(batched, whole) -> None:
    assert len(batched) == len(whole)
    for a, b in zip(batched, whole):
        assert (a.label, a.text, a.target) == (b.label, b.text, b.target)
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(a.heatmap, b.heatmap, rtol=1e-4, atol=1e-6)
        assert a.probability == pytest.approx(b.probability, rel=1e-4)


def test_clip_grid_runs_whole_images_with_all_their_texts(scenes, capsys):
    ex = Explainer(*load("clip"))
    texts = ["a red circle", "a blue square"]
    whole = ex.explain(image=scenes, text=texts, method="generic")
    batched = ex.explain(image=scenes, text=texts, method="generic", batch_size=3, progress=True)
    same(batched, whole)  # the probability is a softmax over one image's texts: whole images per pass keep it
    assert "generic" in capsys.readouterr().err  # the progress bar, labelled with the method
    assert [e.text for e in batched] == texts * 3


def test_vilt_pairs_and_their_targets_travel_together(scenes):
    ex = Explainer(*load("vilt"))
    questions = ["what colour is the circle?", "how many shapes are there?", "is there a square?"]
    targets = [None, 1, None]
    whole = ex.explain(image=scenes, question=questions, target=targets, method="rollout")
    same(ex.explain(image=scenes, question=questions, target=targets, method="rollout", batch_size=1), whole)
    one_image = ex.explain(image=scenes[0], question=questions, method="rollout")
    same(ex.explain(image=scenes[0], question=questions, method="rollout", batch_size=2, progress=False), one_image)


def test_captions_per_image_stay_with_their_images(scenes):
    ex = Explainer(*load("captioner"))
    captions = ["a red circle", "a blue square", "a green cross"]
    whole = ex.explain(image=scenes, caption=captions, method="generic")
    batched = ex.explain(image=scenes, caption=captions, method="generic", batch_size=2)
    same(batched, whole)
    assert [e.caption for e in batched] == [e.caption for e in whole]


def test_batch_size_is_checked_for_every_family(scenes):
    with pytest.raises(InputError, match="batch_size must be a positive integer"):
        Explainer(*load("clip")).explain(image=scenes[0], text="x", batch_size=0)
