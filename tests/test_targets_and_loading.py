"""Targets by name (case, synonyms, close names) and loading from local folders and the Hub (issue 9, item 6)."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from toolkit import Explainer
from toolkit.errors import InputError
from toolkit.labels import find_label


@pytest.fixture(scope="module")
def imagenet_names() -> dict[int, str]:
    from timm.data import ImageNetInfo

    info = ImageNetInfo("imagenet-1k")
    return {index: info.index_to_description(index) for index in range(1000)}


@pytest.fixture(scope="module")
def imagenet_vit():
    """A tiny random timm ViT with 1000 classes, which the toolkit names with ImageNet's descriptions."""
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(img_size=32, patch_size=16, embed_dim=32, depth=1, num_heads=2).eval()
    model.pretrained_cfg = {"input_size": (3, 32, 32), "mean": (0.5,) * 3, "std": (0.5,) * 3, "crop_pct": 1.0}
    return Explainer(model)


def test_imagenet_labels_match_any_synonym_in_any_case(imagenet_vit, imagenet_names):
    tabby = next(index for index, name in imagenet_names.items() if name == "tabby, tabby cat")
    for name in ("tabby", "Tabby Cat", "TABBY, tabby cat", "  tabby  cat "):
        assert find_label(name, imagenet_names) == tabby
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    explanation = imagenet_vit.explain(image, method="rollout", target="tabby")
    assert explanation.target == tabby and explanation.label == "tabby, tabby cat"


def test_a_whole_label_wins_over_another_labels_synonym():
    labels = {0: "cat", 1: "tiger, cat", 2: "dog"}
    assert find_label("CAT", labels) == 0  # "cat" is label 0 itself, and only a synonym of label 1
    assert find_label("tiger", labels) == 1


def test_ambiguous_names_list_every_index(imagenet_names):
    cranes = sorted(index for index, name in imagenet_names.items() if name == "crane")
    assert len(cranes) == 2  # the bird and the machine
    with pytest.raises(InputError, match="names 2 labels") as info:
        find_label("Crane", imagenet_names)
    assert all(f"{index}: 'crane'" in str(info.value) for index in cranes)


def test_unknown_label_lists_only_close_names_and_how_to_see_all(imagenet_vit, imagenet_names):
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    with pytest.raises(InputError) as info:
        imagenet_vit.explain(image, method="rollout", target="tabbby")
    message = str(info.value)
    listed = re.findall(r"\d+: '[^']*'", message)
    assert 0 < len(listed) <= 20
    assert "'tabby, tabby cat'" in message and "1000 labels" in message and "Explainer.labels" in message
    with pytest.raises(InputError) as info:  # a word inside labels finds them
        find_label("cat", imagenet_names)
    assert "'tiger cat'" in str(info.value) and len(re.findall(r"\d+: '[^']*'", str(info.value))) <= 20
    with pytest.raises(InputError, match="none is close to 'qwxz'"):
        find_label("qwxz", imagenet_names)


def test_few_labels_are_all_listed():
    with pytest.raises(InputError) as info:
        find_label("happy", {0: "negative", 1: "neutral", 2: "positive"})
    assert "3 labels" in str(info.value)
    assert all(name in str(info.value) for name in ("'negative'", "'neutral'", "'positive'"))


def test_unnamed_classes_ask_for_an_index():
    with pytest.raises(InputError, match="have no names; pass an index"):
        find_label("cat", {})


def test_vqa_answers_match_in_any_case_and_unknown_ones_list_close_answers():
    from toolkit import zoo

    explainer = Explainer(*zoo.load("vilt"))
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    question = "is there a red circle"
    yes = next(index for index, name in explainer.labels.items() if name == "yes")
    assert explainer.explain(image=image, question=question, target="YES").target == yes
    with pytest.raises(InputError) as info:
        explainer.explain(image=image, question=question, target="yess")
    message = str(info.value)
    assert f"{len(explainer.labels)} answers" in message and f"{yes}: 'yes'" in message
