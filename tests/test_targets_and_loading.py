"""Targets by name (case, synonyms, close names) and loading from local folders and the Hub (issue 9, item 6)."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from toolkit import Explainer
from toolkit.errors import InputError, ToolkitWarning
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


# --- loading ------------------------------------------------------------------------------------------
@pytest.fixture
def no_network(monkeypatch):
    """Fails the test on any attempt to resolve a host or open a connection; the Hub probe is forgotten
    before and after, so that each test probes afresh."""
    import socket

    from toolkit import loading

    attempts: list = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access attempted in a test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    probe = loading._probe_hub  # the cached function, which a test may replace
    probe.cache_clear()
    yield attempts
    probe.cache_clear()


@pytest.mark.parametrize("name", ["./no/such/model", "../no-such-model", "/no/such/model", "~/no-such-model",
                                  "a/b/c"])
def test_a_path_without_a_folder_says_so(name, no_network):
    from toolkit import ModelLoadError

    with pytest.raises(ModelLoadError, match=f"No folder at {re.escape(repr(name))}.*does not exist") as info:
        Explainer.from_pretrained(name)
    assert "Repo id" not in str(info.value) and "save_pretrained(folder)" in str(info.value)
    assert not no_network


def test_a_file_is_not_a_folder(tmp_path, no_network):
    from toolkit import ModelLoadError

    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"")
    with pytest.raises(ModelLoadError, match="is a file, not a folder"):
        Explainer.from_pretrained(str(weights))


def test_image_folder_without_processor_uses_vits_default_with_a_warning(tmp_path, no_network):
    from conftest import make_hf_vit
    from transformers import ViTImageProcessor

    model = make_hf_vit()
    model.save_pretrained(tmp_path)
    with pytest.warns(ToolkitWarning, match="no image processor.*ViTImageProcessor, resizing to 32x32") as caught:
        loaded = Explainer.from_pretrained(str(tmp_path))
    assert not [w for w in caught if "RANDOM CLASSIFIER" in str(w.message)]
    processor = loaded.adapter.processor
    assert isinstance(processor, ViTImageProcessor) and processor.size == {"height": 32, "width": 32}
    image = np.random.default_rng(0).integers(0, 256, (48, 40, 3), dtype=np.uint8)
    expected = Explainer(model, ViTImageProcessor(size={"height": 32, "width": 32})).explain(image)
    np.testing.assert_allclose(loaded.explain(image).scores, expected.scores, rtol=1e-5, atol=1e-7)
    assert not no_network


def test_text_folder_without_tokenizer_is_refused(tmp_path, no_network):
    from conftest import make_bert

    from toolkit import ModelLoadError

    make_bert(100).save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="no tokenizer.*tokenizer.save_pretrained"):
        Explainer.from_pretrained(str(tmp_path))


def test_image_text_folder_without_its_vocabulary_is_refused(tmp_path, no_network):
    from toolkit import ModelLoadError, zoo

    model, processor = zoo.load("vilt")
    model.save_pretrained(tmp_path)
    processor.image_processor.save_pretrained(tmp_path)  # the tokenizer is left behind
    with pytest.raises(ModelLoadError, match="no tokenizer"):
        Explainer.from_pretrained(str(tmp_path))


def test_bare_encoders_warn_that_the_head_is_random(tmp_path, wordpiece, no_network):
    from transformers import BertConfig, BertModel, ViTConfig, ViTImageProcessor, ViTModel

    vit = tmp_path / "vit"
    ViTModel(ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                       intermediate_size=48)).save_pretrained(vit)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(vit)
    bert = tmp_path / "bert"
    BertModel(BertConfig(vocab_size=wordpiece.vocab_size, hidden_size=32, num_hidden_layers=1,
                         num_attention_heads=4, intermediate_size=48)).save_pretrained(bert)
    wordpiece.save_pretrained(bert)
    for folder, bare in ((vit, "ViTModel"), (bert, "BertModel")):
        with pytest.warns(ToolkitWarning, match=f"RANDOM CLASSIFIER.*\\({bare}\\).*classifier.bias, classifier.weight"
                                             ".*meaningless"):
            Explainer.from_pretrained(str(folder))


def test_a_trained_classifier_loads_without_the_random_head_warning(tmp_path, wordpiece, recwarn, no_network):
    from conftest import make_bert

    make_bert(wordpiece.vocab_size).save_pretrained(tmp_path)
    wordpiece.save_pretrained(tmp_path)
    Explainer.from_pretrained(str(tmp_path))
    assert not [w for w in recwarn if "RANDOM" in str(w.message) or "processor" in str(w.message)]


@pytest.mark.parametrize("variable", ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"])
def test_offline_switch_fails_at_once_without_touching_the_network(variable, monkeypatch, no_network):
    from huggingface_hub import constants

    from toolkit import ModelLoadError, loading

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv(variable, "1")
    monkeypatch.setattr(loading, "_probe_hub", lambda: pytest.fail("probed the Hub despite the offline switch"))
    with pytest.raises(ModelLoadError) as info:
        Explainer.from_pretrained("some-org/not-cached-model")
    message = str(info.value)
    assert f"can't be reached ({variable}=1 is set)" in message and "not in the local cache" in message
    assert "Explainer.from_pretrained('/path/to/folder')" in message
    assert not no_network and constants.HF_HUB_OFFLINE is False  # offline mode only while loading


def test_an_unreachable_hub_is_probed_once_with_a_short_timeout(monkeypatch, no_network):
    import urllib.error
    import urllib.request

    from toolkit import ModelLoadError, loading

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    probes = []

    def unreachable(request, timeout):
        probes.append(timeout)
        raise urllib.error.URLError("timed out")

    monkeypatch.setattr(urllib.request, "urlopen", unreachable)
    for name in ("some-org/not-cached-model", "some-org/another-one"):
        with pytest.raises(ModelLoadError, match="Hugging Face Hub can't be reached .*did not answer within 2 s"):
            Explainer.from_pretrained(name)
    with pytest.raises(ModelLoadError, match="can't be reached"):
        Explainer.from_pretrained("vit_tiny_patch16_224", source="timm")
    assert probes == [loading.HUB_PROBE_TIMEOUT_S] and loading.HUB_PROBE_TIMEOUT_S <= 3
    assert not no_network


def test_cached_hub_models_load_while_the_hub_is_unreachable(tmp_path, monkeypatch, no_network):
    """A model in the Hub cache loads offline (no retries, no network), with the files the Hub would give."""
    from conftest import _image_processor, make_hf_vit
    from huggingface_hub import constants

    from toolkit import loading

    monkeypatch.setattr(loading, "_probe_hub", lambda: "https://huggingface.co did not answer within 2 s")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--toolkit-tests--tiny-vit"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    model = make_hf_vit()
    model.save_pretrained(repo / "snapshots" / commit)
    _image_processor().save_pretrained(repo / "snapshots" / commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    loaded = Explainer.from_pretrained("toolkit-tests/tiny-vit")
    torch.testing.assert_close(loaded.model.state_dict(), model.state_dict())
    assert not no_network
