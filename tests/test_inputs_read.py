"""Inputs the models cannot read as given: clear errors (unreadable image files, image tensors of another size,
views of models that return no attention) and warnings that name what was changed (texts cut to the model's
positions, words outside its vocabulary), each checked against the explanation of what the model did read."""
from __future__ import annotations

import copy
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image
from transformers import AutoModel, AutoTokenizer, BertConfig, BertForSequenceClassification, ViTConfig, \
    ViTForImageClassification, ViTImageProcessor

from toolkit import Explainer, InputError, ToolkitWarning, UnsupportedModelError, zoo
from toolkit.text import read_texts
from toolkit.views import head_view, model_view, neuron_view
from toolkit.zero_shot import ZeroShotTextClassifier, bundled_minilm_path
from toolkit.zoo.common import scene_tokenizer, scenes

SEVENTEEN_WORDS = "a red circle left of a blue square above a green triangle right of a yellow cross"
FOURTEEN_WORDS = "a red circle left of a blue square above a green triangle right of"


@pytest.fixture(scope="module")
def scene():
    return scenes(1, 3)[0].image


@pytest.fixture(scope="module")
def scene_clip():
    return Explainer(*zoo.load("clip"), name="clip")


@pytest.fixture(scope="module")
def scene_vit():
    return Explainer(*zoo.load("vit"), name="vit")


@pytest.fixture(scope="module")
def scene_vilt():
    return Explainer(*zoo.load("vilt"), name="vilt")


@pytest.fixture(scope="module")
def scene_captioner():
    return Explainer(*zoo.load("captioner"), name="captioner")


@pytest.fixture(scope="module")
def scene_words_classifier():
    """A tiny BERT classifier on the zoo's 42-word vocabulary, 16 positions."""
    tokenizer = scene_tokenizer()
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=48, initializer_range=0.3, num_labels=3, max_position_embeddings=16)
    return Explainer(BertForSequenceClassification(config).eval(), tokenizer)


def no_warning(call):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ToolkitWarning)
        return call()


# --- unreadable image files -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def broken_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("broken")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("these are my holiday notes, not a photo\n")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(folder / "full.jpg")
    data = (folder / "full.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[:len(data) // 2])
    return folder


@pytest.mark.parametrize("name", ["empty.jpg", "notes.jpg", "truncated.jpg"])
def test_unreadable_image_files_are_named(broken_files, scene_vit, scene_clip, name):
    path = broken_files / name
    message = rf"Image #1: {path} is not a readable image"
    with pytest.raises(InputError, match=message):
        scene_vit.explain([str(broken_files / "full.jpg"), str(path)], method="rollout")
    with pytest.raises(InputError, match=message):
        scene_clip.explain(image=[broken_files / "full.jpg", path], text="a red circle")
    if name == "truncated.jpg":  # opened lazily by the caller: decoded (and refused) before any model runs
        with pytest.raises(InputError, match=rf"Image #0: {path} is not a readable image"):
            scene_vit.explain(Image.open(path), method="rollout")


# --- image tensors of another size ------------------------------------------------------------------
def test_unprocessed_photo_tensor_is_resized_like_the_same_array(scene_vit):
    photo = torch.rand(3, 375, 500, generator=torch.Generator().manual_seed(0))
    as_array = (photo.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    with pytest.warns(ToolkitWarning, match="float tensor is 375x500, not the 64x64 this model reads"):
        from_tensor = scene_vit.explain(photo, method="generic")
    from_array = scene_vit.explain(as_array, method="generic")
    assert from_tensor.heatmap.shape == (8, 8)
    np.testing.assert_allclose(from_tensor.heatmap, from_array.heatmap, rtol=1e-5, atol=1e-7)
    assert from_tensor.target == from_array.target


def test_224_like_model_reads_a_photo_tensor_and_refuses_normalised_ones_of_another_size():
    torch.manual_seed(0)
    model = ViTForImageClassification(ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                                num_attention_heads=4, intermediate_size=48, num_labels=4)).eval()
    explainer = Explainer(model, ViTImageProcessor(size={"height": 32, "width": 32}))
    photo = torch.randint(0, 256, (2, 3, 375, 500), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    exps = no_warning(lambda: explainer.explain(photo, method="rollout"))  # 8-bit: an image, never pixel_values
    arrays = [image.permute(1, 2, 0).numpy() for image in photo]
    for exp, alone in zip(exps, explainer.explain(arrays, method="rollout")):
        np.testing.assert_allclose(exp.heatmap, alone.heatmap, rtol=1e-5, atol=1e-7)
    with pytest.warns(ToolkitWarning, match="375x500, not the 32x32"):
        from_floats = explainer.explain(photo.float() / 255, method="rollout")
    np.testing.assert_allclose(from_floats[1].heatmap, exps[1].heatmap, rtol=1e-5, atol=1e-7)
    small = photo[0, :, :32, :32]
    np.testing.assert_allclose(explainer.explain(small, method="rollout").heatmap,
                               explainer.explain(small.permute(1, 2, 0).numpy(), method="rollout").heatmap,
                               rtol=1e-5, atol=1e-7)
    normalised = torch.randn(1, 3, 375, 500)
    with pytest.raises(InputError, match="pixel_values are 375x500 but this model reads 32x32"):
        explainer.explain(normalised, method="rollout")
    explainer.explain(torch.randn(1, 3, 32, 32), method="rollout")  # pixel_values of the model's size as before
    wrong_processor = Explainer(model, ViTImageProcessor(size={"height": 48, "width": 48}))
    with pytest.raises(InputError, match="processor gives 48x48 images but this model reads 32x32"):
        wrong_processor.explain(np.zeros((40, 40, 3), np.uint8), method="rollout")


def test_image_text_models_read_image_tensors_like_arrays(scene_clip):
    photo = torch.rand(3, 375, 500, generator=torch.Generator().manual_seed(2))
    as_array = (photo.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    from_tensor = no_warning(lambda: scene_clip.explain(image=photo, text="a red circle"))
    from_array = scene_clip.explain(image=as_array, text="a red circle")
    np.testing.assert_allclose(from_tensor.heatmap, from_array.heatmap, rtol=1e-5, atol=1e-7)


# --- texts longer than the model's positions ----------------------------------------------------------
def test_clip_text_longer_than_the_text_tower_is_cut_with_the_words_named(scene_clip, scene):
    with pytest.warns(ToolkitWarning, match=r"Text #1 is 19 tokens long but the model reads at most 16: it is cut "
                                            r"to 16 and 'a yellow cross' is left out"):
        exps = scene_clip.explain(image=scene, text=["a red circle", SEVENTEEN_WORDS])
    kept = exps[1]
    assert kept.text == kept.label == FOURTEEN_WORDS and len(kept.tokens) == 16
    alone = no_warning(lambda: scene_clip.explain(image=scene, text=FOURTEEN_WORDS))
    assert alone.tokens == kept.tokens and alone.similarity == pytest.approx(kept.similarity, rel=1e-5)
    np.testing.assert_allclose(kept.scores, alone.scores, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(kept.heatmap, alone.heatmap, rtol=1e-5, atol=1e-7)
    assert exps[0].text == "a red circle"


def test_classifier_text_cut_names_its_position_in_the_whole_input(scene_words_classifier):
    texts = ["a red circle", "a blue square", "a green cross", SEVENTEEN_WORDS]
    with pytest.warns(ToolkitWarning, match=r"Text #3 is 19 tokens long.*at most 16.*'a yellow cross'"):
        exps = scene_words_classifier.explain(texts, method="generic", batch_size=2)
    alone = no_warning(lambda: scene_words_classifier.explain(FOURTEEN_WORDS, method="generic"))
    assert exps[3].tokens == alone.tokens and exps[3].words == FOURTEEN_WORDS.split()
    np.testing.assert_allclose(exps[3].scores, alone.scores, rtol=1e-5, atol=1e-6)


def test_vilt_question_cut_and_unknown_words_are_named(scene_vilt, scene):
    kept = "is there a red circle left of the blue square ? what colour is the small triangle below the large yellow cross"
    question = kept + " above the square ?"
    with pytest.warns(ToolkitWarning, match=r"Question #0 is 28 tokens long but the model reads at most 24.*"
                                            r"'above the square \?' is left out"):
        exp = scene_vilt.explain(image=scene, question=question)
    assert exp.text == kept and len(exp.tokens) == 24
    alone = scene_vilt.explain(image=scene, question=kept, target=exp.target)
    np.testing.assert_allclose(exp.scores, alone.scores, rtol=1e-4, atol=1e-6)
    with pytest.warns(ToolkitWarning, match=r"Question #0: 'elephant', 'zebra' are not in the model's vocabulary "
                                            r"and read as \[UNK\]"):
        unknown = scene_vilt.explain(image=scene, question="is there a elephant left of the zebra ?")
    assert unknown.tokens.count("[UNK]") == 2 and unknown.text == "is there a elephant left of the zebra ?"


def test_captioner_given_caption_cut_to_its_positions(scene_captioner, scene):
    caption = SEVENTEEN_WORDS + " below the square"
    ids = scene_captioner.adapter.tokenizer(caption, add_special_tokens=False)["input_ids"]
    assert len(ids) == 20
    with pytest.warns(ToolkitWarning, match=r"Caption #0 is 20 tokens long but the model reads at most 15.*"
                                            r"'yellow cross below the square' is left out"):
        exp = scene_captioner.explain(image=scene, caption=caption)
    assert len(exp.steps) == 15 and [s.token_id for s in exp.steps] == ids[:15]
    assert exp.caption == FOURTEEN_WORDS + " a"
    alone = no_warning(lambda: scene_captioner.explain(image=scene, caption=exp.caption))
    for a, b in zip(exp.steps, alone.steps):
        np.testing.assert_allclose(a.heatmap, b.heatmap, rtol=1e-5, atol=1e-7)
    with pytest.warns(ToolkitWarning, match=r"Caption #0 is 22 tokens long.*at most 15.*"
                                            r"'yellow cross below the square red circle' is left out"):
        from_ids = scene_captioner.explain(image=scene, caption=ids + ids[1:3])
    assert [s.token_id for s in from_ids.steps] == ids[:15]


def test_captioner_caption_reports_the_tokens_explained(scene_captioner, scene):
    with pytest.warns(ToolkitWarning, match=r"Caption #0: 'elephant' is not in the model's vocabulary"):
        exp = scene_captioner.explain(image=scene, caption="a purple elephant")
    assert [s.token for s in exp.steps] == ["a", "purple", "[UNK]"] and exp.caption == "a purple [UNK]"


def test_generated_caption_stops_at_the_decoders_last_position(scene_captioner, scene):
    model = copy.deepcopy(scene_captioner.model)
    with torch.no_grad():  # the caption never ends: it would run past the decoder's 16 positions
        model.decoder.cls.predictions.bias[list(scene_captioner.adapter.end_ids())] = -1e4
    endless = Explainer(model, scene_captioner.adapter.processor)
    with pytest.warns(ToolkitWarning, match="fills the decoder's 15 caption positions without ending"):
        exp = endless.explain(image=scene, max_new_tokens=40)
    assert len(exp.steps) == 15


# --- words outside the vocabulary -------------------------------------------------------------------
def test_unknown_words_are_named_for_classifiers_and_clip(scene_words_classifier, scene_clip, scene):
    with pytest.warns(ToolkitWarning, match=r"Text #1: 'elephant' is not in the model's vocabulary"):
        exps = scene_words_classifier.explain(["a red circle", "a purple elephant"], method="generic")
    assert exps[1].tokens == ["[CLS]", "a", "purple", "[UNK]", "[SEP]"]
    assert exps[1].words == ["a", "purple", "elephant"]
    with pytest.warns(ToolkitWarning, match=r"Text #0: 'Zebra', 'giraffes' are not in the model's vocabulary"):
        scene_clip.explain(image=scene, text="a Zebra left of 2 giraffes")
    no_warning(lambda: scene_clip.explain(image=scene, text="A Red Circle left of the square ?"))


def test_read_texts_names_what_pairs_lose():
    tokenizer = scene_tokenizer()
    pair = ("a red circle", "a blue square left of the green square")
    with pytest.warns(ToolkitWarning, match=r"Text #5 is 14 tokens long.*at most 8: it is cut to 8 and 'circle' / "
                                            r"'left of the green square' is left out"):
        read = read_texts(tokenizer, [pair[0]], [pair[1]], limit=8, first_index=5)
    assert read == [("a red", "a blue square")]
    assert tokenizer(*read[0])["input_ids"] == tokenizer(*pair, truncation=True, max_length=8)["input_ids"]


# --- attention views of a wrapper -------------------------------------------------------------------
def test_views_of_the_zero_shot_classifier_show_its_encoder():
    path = bundled_minilm_path()
    encoder = AutoModel.from_pretrained(path, attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    classifier = ZeroShotTextClassifier(encoder, tokenizer, {"positive": "great", "negative": "awful"})
    for view in (head_view, model_view, neuron_view):
        assert view(classifier, tokenizer, "a gripping film").html == view(encoder, tokenizer, "a gripping film").html

    class Opaque(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(10, 4)

        def forward(self, input_ids, attention_mask=None):
            return SimpleNamespace(logits=self.embed(input_ids).mean(1))

    with pytest.raises(UnsupportedModelError, match="takes no output_attentions.*pass the transformer inside it"):
        head_view(Opaque(), tokenizer, "a film")
