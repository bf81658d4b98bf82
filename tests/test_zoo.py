"""The built-in models: they load offline, beat chance on held-out scenes, see the pixels they were trained on,
and their recipes are seeded."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from toolkit import Explainer, zoo
from toolkit.scenes import LABEL_VALUES, WORDS
from toolkit.zoo import scene_captioner, scene_clip, scene_lm, scene_vilt, scene_vit
from toolkit.zoo.common import VALIDATION_SEED, caption_objects, scene_pixels, scenes

# Chance: the ViT picks one of 4 shapes (0.25); CLIP tells a caption from a foil (0.5); ViLT answering each
# question kind's most frequent answer is right on 0.45 of the questions (guessing uniformly: 0.33); a
# captioner naming random (colour, shape) pairs names an object of the scene about 0.14 of the time; the scene LM
# guessing a colour (1/5) or a shape (1/4) is right on about 0.22 of its statements.
ABOVE_CHANCE = {"vit": 0.6, "clip": 0.75, "vilt": 0.5, "captioner": 0.5, "lm": 0.5}


@pytest.fixture(scope="module")
def held_out():
    return scenes(30, VALIDATION_SEED)


def accuracy_of(name: str, model, processor, batch) -> float:
    if name == "vit":
        return scene_vit.accuracy(model, batch)
    if name == "lm":
        return scene_lm.accuracy(model, processor, scene_lm.held_out_texts(len(batch), VALIDATION_SEED))
    module = {"clip": scene_clip, "vilt": scene_vilt, "captioner": scene_captioner}[name]
    return module.accuracy(model, processor.tokenizer, batch)


@pytest.mark.parametrize("name", list(zoo.MODULES))
def test_loaders_give_models_above_chance(name, held_out):
    model, processor = zoo.load(name)
    assert not model.training
    assert accuracy_of(name, model, processor, held_out) > ABOVE_CHANCE[name]
    stored = zoo.metadata(name)
    assert stored["accuracy"] > ABOVE_CHANCE[name] and stored["recipe"]["seed"] == 0


@pytest.mark.parametrize("name", ["clip", "vilt", "captioner"])
def test_processors_give_the_training_pixels(name, held_out):
    """Training reads scene_pixels directly; the shipped processors must give the very same input."""
    _, processor = zoo.load(name)
    images = [scene.image for scene in held_out[:3]]
    pixels = processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(pixels, scene_pixels(held_out[:3]))


def test_vit_transform_gives_the_training_pixels(held_out):
    _, transform = zoo.load("vit")
    torch.testing.assert_close(torch.stack([transform(s.image) for s in held_out[:3]]), scene_pixels(held_out[:3]))


def test_text_models_read_the_scene_vocabulary(held_out):
    for name in ("clip", "vilt", "captioner"):
        model, processor = zoo.load(name)
        assert model.config.get_text_config().vocab_size == processor.tokenizer.vocab_size == len(WORDS) + 5
    tokenizer = processor.tokenizer
    texts = [text for scene in held_out for text in scene.captions + tuple(q.text for q in scene.questions)]
    ids = tokenizer(texts)["input_ids"]
    assert all(tokenizer.unk_token_id not in row for row in ids)
    assert tokenizer.batch_decode(ids, skip_special_tokens=True) == texts
    assert tokenizer.convert_ids_to_tokens(tokenizer("what color")["input_ids"])[2] == "[UNK]"


@pytest.mark.parametrize("train", [scene_vit.train_scene_vit, scene_clip.train_scene_clip,
                                   scene_vilt.train_scene_vilt, scene_captioner.train_scene_captioner,
                                   scene_lm.train_scene_lm])
def test_recipes_are_seeded(train, tmp_path):
    tiny = dict(steps=2, train_scenes=8, batch_size=4, validation_scenes=2)
    first, second, other = (tmp_path / f"{n}.safetensors" for n in ("first", "second", "other"))
    train(out=first, **tiny)
    train(out=second, **tiny)
    train(out=other, seed=1, **tiny)
    a, b, c = (load_file(str(path)) for path in (first, second, other))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_vision_sides_start_as_the_scene_vit(held_out):
    """The recipes' starting point: the captioner's encoder computes exactly the scene ViT's features, and CLIP's
    vision tower too but for the layer norm CLIP applies before its first layer (the patch bias, which CLIP's
    projection lacks, is folded into the position embeddings); ViLT's joint transformer holds the ViT's weights."""
    vit, _ = zoo.load("vit")
    pixels = scene_pixels(held_out[:4])
    captioner = scene_captioner.build_scene_captioner(scene_captioner.scene_tokenizer()).eval()
    scene_vit.start_from_scene_vit(captioner, scene_captioner.BACKBONE_LAYOUT)
    clip = scene_clip.build_scene_clip(scene_clip.scene_tokenizer()).eval()
    scene_vit.start_from_scene_vit(clip, scene_clip.BACKBONE_LAYOUT, patch_bias_into=scene_clip.PATCH_BIAS_INTO)
    clip.vision_model.pre_layrnorm = torch.nn.Identity()
    with torch.no_grad():
        features = vit.forward_features(pixels)
        torch.testing.assert_close(captioner.encoder(pixel_values=pixels).last_hidden_state, features)
        torch.testing.assert_close(clip.vision_model(pixel_values=pixels).pooler_output, features[:, 0])
    vilt = scene_vilt.build_scene_vilt(scene_vilt.scene_tokenizer())
    scene_vit.start_from_scene_vit(vilt, scene_vilt.BACKBONE_LAYOUT)
    torch.testing.assert_close(vilt.vilt.encoder.layer[3].attention.attention.key.weight,
                               vit.blocks[3].attn.qkv.weight[64:128])
    torch.testing.assert_close(vilt.vilt.embeddings.position_embeddings, vit.pos_embed)
    with pytest.raises(KeyError, match="does not place"):
        scene_vit.start_from_scene_vit(captioner, {"blocks.{i}.norm1": "encoder.layers.{i}.layernorm_before"})
    with pytest.raises(KeyError, match="the model lacks"):
        scene_vit.start_from_scene_vit(clip, scene_captioner.BACKBONE_LAYOUT)


def test_vilt_accuracy_by_kind_adds_up(held_out):
    model, processor = zoo.load("vilt")
    shares = scene_vilt.accuracy_by_kind(model, processor.tokenizer, held_out)
    kinds = [q.kind for scene in held_out for q in scene.questions]
    assert set(shares) == set(kinds) | {"all"}
    weighted = sum(shares[kind] * kinds.count(kind) for kind in set(kinds)) / len(kinds)
    assert shares["all"] == pytest.approx(weighted) == scene_vilt.accuracy(model, processor.tokenizer, held_out)


def test_foils_name_an_object_the_scene_lacks(held_out):
    for scene in held_out[:10]:
        for caption in scene.captions:
            subject, reference = caption_objects(scene, caption)
            assert caption.startswith(f"a {subject.colour} {subject.shape} ")
            assert caption.endswith(f" a {reference.colour} {reference.shape}")
            assert caption_objects(scene, scene_clip.foil(scene, caption, random.Random(0))) is None


def test_vit_classes_are_the_labels_values(held_out):
    model, transform = zoo.load("vit")
    assert model.pretrained_cfg["label_names"] == list(LABEL_VALUES[scene_vit.TASK])
    truth = held_out[0].labels[scene_vit.TASK].value
    assert Explainer(model, transform).explain(held_out[0].image, target=truth).label == truth


@pytest.mark.parametrize("method", ["generic", "rollout", "raw_attention", "attention_gradcam"])
def test_sentence_similarity_explains_both_sentences(method):
    from toolkit.zoo.sentence_similarity import explain_similarity, load_minilm

    encoder, tokenizer = load_minilm()
    first, second = explain_similarity("a red circle on the left", "a crimson disc at the left side", method,
                                       encoder, tokenizer)
    assert first.tokens[1:-1] == ["a", "red", "circle", "on", "the", "left"] and first.scores.shape == (8,)
    assert first.text == second.compared_with == "a red circle on the left"
    assert first.compared_with == second.text == "a crimson disc at the left side"
    assert first.similarity == pytest.approx(second.similarity)
    # The page names both sentences and the cosine, not the one logit's probability or target.
    assert first.heading() == {"Sentence": "a red circle on the left",
                               "Compared with": "a crimson disc at the left side", "Model": "minilm-similarity",
                               "Method": method, "Similarity (cosine)": f"{first.similarity:.4f}"}
    assert "a crimson disc at the left side" in first.to_html() and "Probability" not in first.to_html()
    with torch.no_grad():
        embeddings = [encoder(**tokenizer(t, return_tensors="pt")).last_hidden_state.mean(1)
                      for t in (first.text, second.text)]
    assert first.similarity == pytest.approx(float(torch.cosine_similarity(*embeddings)), abs=1e-5)
    assert np.isfinite(first.scores).all() and first.scores.max() > 0
    unrelated, _ = explain_similarity("a red circle on the left", "stock prices fell sharply", method,
                                      encoder, tokenizer)
    assert unrelated.similarity < first.similarity
